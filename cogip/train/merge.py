"""`python -m cogip.train.merge` — fold a LoRA adapter (and the non-LoRA weights trained beside it:
vision tower, merger/projector) into a full checkpoint that loads with `from_pretrained`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from safetensors import safe_open

from ..errors import CogipError, exit_code
from ..models.families import Family, resolve_family


def adapter_base(adapter: str | Path) -> str:
    cfg = Path(adapter) / "adapter_config.json"
    if not cfg.is_file():
        raise CogipError("not a LoRA adapter folder (no adapter_config.json)", file=str(adapter))
    return json.loads(cfg.read_text())["base_model_name_or_path"]


def processor_source(adapter: str | Path, base: str | None = None) -> str:
    """An adapter folder holds its processor when training saved one there; otherwise its base does."""
    if (Path(adapter) / "tokenizer_config.json").is_file():
        return str(adapter)
    return base or adapter_base(adapter)


def load_adapted(adapter: str | Path, base: str | None = None, family: Family | None = None, dtype="auto",
                 device: str | None = None):
    """Base model + adapter as a PeftModel, on `device` if given (else where transformers loads it); fails
    loudly when the adapter's keys do not fit the base."""
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict
    base = base or adapter_base(adapter)
    family = family or resolve_family(base)
    model = family.load_model(base, dtype=dtype, device=device)
    try:
        model = PeftModel.from_pretrained(model, str(adapter))
    except (RuntimeError, ValueError, KeyError) as e:
        raise CogipError(f"adapter does not fit base model {base}: {str(e).splitlines()[0][:300]}",
                         file=str(adapter)) from None
    weights = Path(adapter) / "adapter_model.safetensors"
    with safe_open(str(weights), "pt") as f:
        saved = {k.replace(".default", "") for k in f.keys()}
    loaded = {k.replace(".default", "") for k in get_peft_model_state_dict(model).keys()}
    missing, unexpected = loaded - saved, saved - loaded
    if missing or unexpected:
        example = sorted(missing or unexpected)[0]
        raise CogipError(f"adapter does not fit base model {base}: {len(missing)} weights missing, "
                         f"{len(unexpected)} unexpected (e.g. {example})", file=str(adapter))
    return model, family


def merge(adapter: str | Path, out: str | Path, base: str | None = None, family: str | None = None) -> Path:
    fam = resolve_family(adapter, family)
    resolve_family(base or adapter_base(adapter), fam.name)   # an adapter, and its base, before anything loads
    model, fam = load_adapted(adapter, base, fam)
    merged = model.merge_and_unload()
    out = Path(out)
    merged.save_pretrained(out)
    fam.load_processor(processor_source(adapter, base)).save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cogip merge", description=__doc__)
    p.add_argument("--adapter", required=True, help="LoRA output folder (or one of its checkpoints)")
    p.add_argument("--out", required=True, help="where the merged checkpoint goes")
    p.add_argument("--base", help="base model (default: the one recorded in the adapter)")
    p.add_argument("--family", choices=("qwen", "llama", "gemma"))
    a = p.parse_args(argv)
    return exit_code("cogip merge", lambda: print(f"merged checkpoint written to {merge(a.adapter, a.out, a.base, a.family)}"))


if __name__ == "__main__":
    sys.exit(main())
