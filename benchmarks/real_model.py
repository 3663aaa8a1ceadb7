"""Save a real-size model with random weights (published architecture config, bf16) and a processor,
so the users' launchers (`finetune_lora.sh`, `cog_test.sh`) can run on it without the hub.

    python benchmarks/real_model.py --family qwen OUT          # GPU: initialises on the GPU (llama, gemma too,
                                                               # with their published image processing)
    python benchmarks/real_model.py --family qwen --tiny OUT   # CPU smoke: the tiny config instead
    python benchmarks/real_model.py --family qwen --config-only OUT   # the config and processor, no weights
                                                               # (what benchmarks/mfu.py counts from)
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from real_configs import REAL, real_processor
from cogip.models.families import FAMILIES
from cogip.models.tiny import build_tiny


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--family", default="qwen", choices=tuple(FAMILIES))
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--config-only", action="store_true")
    a = p.parse_args()
    out = Path(a.out)
    tiny = build_tiny(a.family, out.parent / f"{out.name}_tiny")
    if a.tiny:
        shutil.copytree(tiny, out, dirs_exist_ok=True)
        return
    fam = FAMILIES[a.family]
    processor = real_processor(a.family, fam.load_processor(tiny))
    config = REAL[a.family](processor.tokenizer)
    if a.config_only:
        config.dtype = torch.bfloat16
        config.save_pretrained(out)
        processor.save_pretrained(out)
        print(f"saved the {a.family} config and processor (no weights) to {out}")
        return
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = fam.model_cls()._from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    print(f"saved {a.family} with {n / 1e9:.2f} B random parameters to {out}")


if __name__ == "__main__":
    main()
