"""The published code's command-line flags, mapped in one place onto this project's entry points, so the
published command lines run unchanged (README: "Published commands").

Each entry point translates its argv with `translate(argv, TABLE)` before parsing: a published flag becomes
its equivalent here, a flag that changes nothing here is dropped with a printed note, and a flag (or value)
with no equivalent stops with one line saying what to use instead.
"""

from __future__ import annotations

import ast
import sys

from .errors import CogipError


def _bool(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise CogipError(f"expected True or False, not {value!r}")


def _negate(value: str) -> str:
    return str(not _bool(value))


def _only(flag: str, allowed, why: str):
    def check(value: str) -> None:
        if value not in allowed:
            raise CogipError(f"{flag} {value}: {why}")
    return check


def _namespan(value: str) -> None:
    try:
        names = set(ast.literal_eval(value))
    except (ValueError, SyntaxError):
        raise CogipError(f"--lora_namespan_exclude {value}: expected a Python list of names") from None
    if not names <= {"lm_head", "embed_tokens", "visual", "vision_tower", "vision_model", "multi_modal_projector"}:
        raise CogipError(f"--lora_namespan_exclude {value}: LoRA here always goes on the language model's linear "
                         f"layers, lm_head and embeddings excluded; other exclusions have no equivalent")


# published flag -> ("rename", ours, value transform) | ("note", why) | ("check", fn) | ("check+rename", fn, ours)
SFT = {
    "--lora_rank": ("rename", "--lora_r", None),
    "--image_min_pixels": ("rename", "--min_pixels", None),
    "--image_max_pixels": ("rename", "--max_pixels", None),
    "--freeze_vision_tower": ("rename", "--train_vision", _negate),
    "--freeze_merger": ("rename", "--train_merger", _negate),
    "--soft_label_enable": ("rename", "--soft_labels", None),
    "--soft_label_dist": ("rename", "--soft_kernel", None),   # its "triangular" is the kernel "published"
    "--soft_label_eta": ("rename", "--soft_eta", None),
    "--soft_label_lambda": ("rename", "--soft_lambda", None),
    "--use_liger": ("rename", "--use_liger_kernel", None),
    "--warmup_ratio": ("rename", "--warmup_steps", None),   # transformers 5: a float below 1 is a ratio
    "--lazy_preprocess": ("note", "items are always read lazily here"),
    "--disable_flash_attn2": ("note", "the attention kernel is chosen here (exact either way)"),
    "--remove_unused_columns": ("note", "set by the trainer here"),
    "--max_prompt_length": ("note", "trl 1.x has no prompt cap; at the published pixel bounds no prompt reaches it"),
    "--lora_namespan_exclude": ("check", _namespan),
    "--num_lora_modules": ("check", _only("--num_lora_modules", {"-1"}, "LoRA on a subset of the layers has no "
                                          "equivalent here; -1 (every layer) is what runs")),
    "--lora_bias": ("check", _only("--lora_bias", {"none"}, "LoRA biases have no equivalent here")),
    "--bits": ("check", _only("--bits", {"16"}, "quantized training has no equivalent here; use --bf16")),
    "--vision_lora": ("check", _only("--vision_lora", {"False", "false"}, "LoRA on the vision tower has no "
                                     "equivalent here; --train_vision trains it whole")),
    "--lora_weight_path": ("check", _only("--lora_weight_path", {""}, "starting from another adapter has no "
                                          "equivalent here; merge it first (merge_lora.sh) and train from that")),
}
SFT_COMBINED = ("--lora_enable", "--freeze_llm")   # -> --tune_mode, below

EVALUATE = {
    "--base-dir": ("rename", "--test-dir", None),
    "--img-base": ("rename", "--image-root", None),
    "--out-dir": ("rename", "--out", None),
    "--merge-lora": ("note", "the adapter is applied either way; merged or not, the same answers"),
}

MERGE = {
    "--model-path": ("rename", "--adapter", None),
    "--model-base": ("rename", "--base", None),
    "--save-model-path": ("rename", "--out", None),
    "--safe-serialization": ("note", "checkpoints are always written as safetensors"),
}

GENERATE = {
    "--prompts_json": ("rename", "--prompts", None),
    "--out_dir": ("rename", "--out", None),
    "--num_images": ("rename", "--images-per-prompt", None),
    "--true_cfg_scale": ("rename", "--true-cfg-scale", None),
    "--negative_prompt": ("rename", "--negative-prompt", None),
    "--device_map": ("rename", "--device-map", None),
    "--base_vl": ("rename", "--aligned-base", None),
    "--save_combined": ("note", "side-by-side images are written by default (--no-combined skips them)"),
    "--combined_font_size": ("note", "the side-by-side images' labels are sized here"),
    "--max_prompt_chars": ("note", "the side-by-side images' prompts are wrapped here"),
}
NO_VALUE = {"--merge-lora", "--safe-serialization", "--save_combined"}


def _split(argv: list[str]) -> list[tuple[str, str | None]]:
    """argv as (flag, value) pairs; a flag without a value (another flag follows, or the end) gets None,
    a positional argument is (arg, None) too."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--") and "=" in arg:
            flag, value = arg.split("=", 1)
            out.append((flag, value))
        elif arg.startswith("--") and arg not in NO_VALUE and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            out.append((arg, argv[i + 1]))
            i += 1
        else:
            out.append((arg, None))
        i += 1
    return out


def translate(argv: list[str] | None, table: dict, prog: str) -> list[str] | None:
    if argv is None:
        argv = sys.argv[1:]
    pairs = _split(list(argv))
    out: list[str] = []
    for flag, value in pairs:
        rule = table.get(flag)
        if rule is None:
            out += [flag] if value is None else [flag, value]
        elif rule[0] == "rename":
            _, ours, convert = rule
            out += [ours] + ([] if value is None else [convert(value) if convert else value])
        elif rule[0] == "note":
            print(f"{prog}: published flag {flag} dropped: {rule[1]}", file=sys.stderr)
        elif rule[0] == "check":
            rule[1]("" if value is None else value)
    return out


def _gpu_flags(argv: list[str], prog: str) -> list[str]:
    """The published scripts' GPU settings: its `scripts/zero*.json` are this project's sft/deepspeed/ files; on a
    machine without a GPU, DeepSpeed, TF32 and Liger's kernels have nothing to run on and are dropped, noted."""
    from pathlib import Path

    import torch
    gpu = torch.cuda.is_available()
    ours = Path(__file__).resolve().parents[1] / "sft" / "deepspeed"
    out = []
    for flag, value in _split(argv):
        if flag == "--deepspeed" and value and not Path(value).is_file() and (ours / Path(value).name).is_file():
            value = str(ours / Path(value).name)
        if not gpu and (flag == "--deepspeed" or (flag in ("--tf32", "--use_liger") and value and _bool(value))):
            print(f"{prog}: published flag {flag} {value} dropped: no GPU here", file=sys.stderr)
            continue
        out += [flag] if value is None else [flag, value]
    return out


def translate_sft(argv: list[str] | None, prog: str = "cogip sft") -> list[str]:
    """The published train_sft.py / train_grpo.py flags; --lora_enable and --freeze_llm become --tune_mode
    (lora: the language model through LoRA only, its base frozen, as the published code requires;
    otherwise frozen-llm, or full with --freeze_llm False)."""
    argv = _gpu_flags(list(sys.argv[1:] if argv is None else argv), prog)
    pairs = dict((f, v) for f, v in _split(argv) if f in SFT_COMBINED)
    rest = [a for f, v in _split(argv) if f not in SFT_COMBINED for a in ([f] if v is None else [f, v])]
    out = translate(rest, SFT, prog)
    if pairs:
        lora = _bool(pairs.get("--lora_enable") or "False")
        frozen = _bool(pairs.get("--freeze_llm") or "False")
        if lora and not frozen:
            raise CogipError("--lora_enable True needs --freeze_llm True (as in the published code): LoRA trains the "
                             "language model's adapters, its base stays frozen")
        out += ["--tune_mode", "lora" if lora else "frozen-llm" if frozen else "full"]
    return out
