"""LoRA adapter folders: this project's (vision tower and merger as PEFT `modules_to_save`) and the published
code's (the LoRA weights, plus the trained vision/merger weights in `non_lora_state_dict.bin`, saved under
the parameter names of the transformers it ran on, 4.51).

`load_adapted` gives the base model with every trained weight applied, or one error line naming what
cannot be applied. Names saved by an older transformers (Qwen's `visual.*`, `model.layers.*`) are mapped
to this one's with transformers' own checkpoint-conversion rules for the model.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from safetensors import safe_open

from ..errors import CogipError
from .families import Family, resolve_family

PUBLISHED_EXTRA = "non_lora_state_dict.bin"
PEFT_PREFIX = "base_model.model."


def adapter_base(adapter: str | os.PathLike) -> str:
    cfg = Path(adapter) / "adapter_config.json"
    if not cfg.is_file():
        raise CogipError("not a LoRA adapter folder (no adapter_config.json)", file=str(adapter))
    return json.loads(cfg.read_text())["base_model_name_or_path"]


def processor_source(adapter: str | os.PathLike, base: str | None = None) -> str:
    """An adapter folder holds its processor when training saved one there; otherwise its base does."""
    if (Path(adapter) / "tokenizer_config.json").is_file():
        return str(adapter)
    return base or adapter_base(adapter)


def _renamer(model):
    """name, known names -> the known name it is under this transformers, or None. Tries the name as it is,
    then each of transformers' renaming rules for this model (e.g. Qwen2.5-VL's `^visual` -> `model.visual`)."""
    rules = []
    try:   # the library's own table; a transformers without it loads only current names
        from transformers.conversion_mapping import get_model_conversion_mapping
        for conversion in get_model_conversion_mapping(model):
            if type(conversion).__name__ == "WeightRenaming":
                rules += [(re.compile(s), t) for s, t in zip(conversion.source_patterns, conversion.target_patterns)]
    except (ImportError, AttributeError, TypeError):
        pass

    def rename(name: str, known) -> str | None:
        if name in known:
            return name
        for pattern, target in rules:
            new = pattern.sub(target, name, count=1)
            if new != name and new in known:
                return new
        return None
    return rename


def _read_extra(path: Path) -> dict:
    import pickle

    import torch
    try:   # a pickle: weights_only, so a crafted file cannot run code
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        raise CogipError(f"not a plain file of tensors ({str(e).splitlines()[0][:200]})", file=str(path)) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CogipError("expected a dict of tensors", file=str(path))
    return state


def _apply_extra(model, state: dict, path: Path) -> int:
    """The published code's trained non-LoRA weights (vision tower, merger) into the base model."""
    rename = _renamer(model)
    params = dict(model.named_parameters())
    mapped = {}
    for key, value in state.items():
        name = rename(key.removeprefix(PEFT_PREFIX), params)
        if name is None:
            raise CogipError(f"weight {key!r} cannot be applied: the base model has no such parameter", file=str(path))
        if params[name].shape != value.shape:
            raise CogipError(f"weight {key!r} has shape {tuple(value.shape)}, the base model's {name} "
                             f"{tuple(params[name].shape)}", file=str(path))
        mapped[name] = value
    model.load_state_dict(mapped, strict=False)
    return len(mapped)


def load_adapted(adapter: str | os.PathLike, base: str | None = None, family: Family | None = None, dtype="auto",
                 device: str | None = None):
    """Base model + adapter as a PeftModel, on `device` if given (else where transformers loads it), with
    every trained weight applied; fails loudly when the adapter's weights do not fit the base."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file
    adapter = Path(adapter)
    base = base or adapter_base(adapter)
    family = family or resolve_family(base)
    extra = adapter / PUBLISHED_EXTRA
    extra_state = _read_extra(extra) if extra.is_file() else None   # a bad file stops before the weights load
    model = family.load_model(base, dtype=dtype, device=device)
    weights = adapter / "adapter_model.safetensors"
    if extra_state is None:   # this project's layout: PEFT loads it as saved
        try:
            model = PeftModel.from_pretrained(model, str(adapter))
        except (RuntimeError, ValueError, KeyError) as e:
            raise CogipError(f"adapter does not fit base model {base}: {str(e).splitlines()[0][:300]}",
                             file=str(adapter)) from None
        with safe_open(str(weights), "pt") as f:
            saved = {k.replace(".default", "") for k in f.keys()}
    else:   # the published layout: names from an older transformers, vision and merger beside the adapter
        _apply_extra(model, extra_state, extra)
        rename = _renamer(model)
        config = LoraConfig.from_pretrained(str(adapter))
        modules = {n for n, _ in model.named_modules()}
        if isinstance(config.target_modules, (list, set)):
            config.target_modules = [rename(t, modules) or t for t in config.target_modules]
        config.inference_mode = True
        try:
            model = get_peft_model(model, config)
        except (RuntimeError, ValueError, KeyError) as e:
            raise CogipError(f"adapter does not fit base model {base}: {str(e).splitlines()[0][:300]}",
                             file=str(adapter)) from None
        expected = {k.removeprefix(PEFT_PREFIX) for k in get_peft_model_state_dict(model)}
        renamed = {}
        for key, value in load_file(str(weights)).items():
            name = rename(key.removeprefix(PEFT_PREFIX).replace(".default", ""), expected)
            renamed[PEFT_PREFIX + name if name else key] = value
        set_peft_model_state_dict(model, renamed)
        saved = set(renamed)
    loaded = {k.replace(".default", "") for k in get_peft_model_state_dict(model).keys()}
    missing, unexpected = loaded - saved, saved - loaded
    if missing or unexpected:
        example = sorted(missing or unexpected)[0]
        raise CogipError(f"adapter does not fit base model {base}: {len(missing)} weights missing, "
                         f"{len(unexpected)} unexpected (e.g. {example})", file=str(adapter))
    return model.eval(), family
