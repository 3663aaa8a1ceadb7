"""`cogip merge` — fold a LoRA adapter (and the non-LoRA weights trained beside it:
vision tower, merger/projector) into a full checkpoint that loads with `from_pretrained`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import exit_code
from ..models.adapters import adapter_base, load_adapted, processor_source
from ..models.families import resolve_family
from ..models.families import FAMILIES


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
    p.add_argument("positional", nargs="*", metavar="ADAPTER OUT", help="the adapter folder and the output folder")
    p.add_argument("--adapter", help="LoRA output folder (or one of its checkpoints)")
    p.add_argument("--out", help="where the merged checkpoint goes")
    p.add_argument("--base", help="base model (default: the one recorded in the adapter)")
    p.add_argument("--family", choices=tuple(FAMILIES))
    from ..published import MERGE, translate
    a = p.parse_args(translate(argv, MERGE, "cogip merge"))   # the published merge_lora_weights.py's flags too
    if len(a.positional) > 2:
        p.error("at most ADAPTER OUT as positional arguments")
    a.adapter = a.adapter or (a.positional[0] if a.positional else None)
    a.out = a.out or (a.positional[1] if len(a.positional) > 1 else None)
    if not a.adapter or not a.out:
        p.error("needs the adapter folder and the output folder (ADAPTER OUT, or --adapter and --out)")
    return exit_code("cogip merge", lambda: print(f"merged checkpoint written to {merge(a.adapter, a.out, a.base, a.family)}"))


if __name__ == "__main__":
    sys.exit(main())
