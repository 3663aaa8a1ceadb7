"""Where one batch of the benchmark loop spends its time (real Qwen2.5-VL-7B config, random weights):
CPU preparation, vision tower, full prefill, generation; then the profiler's top operators.

    python benchmarks/eval_breakdown.py [--batch 32] [--compile]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cogip.dims import DIMENSIONS  # noqa: E402
from cogip.evaluate.scorer import Scorer  # noqa: E402
from cogip.models.configs import qwen2_5_vl_7b  # noqa: E402
from cogip.models.families import FAMILIES  # noqa: E402
from cogip.models.tiny import build_tiny  # noqa: E402


def timed(fn, reps=3):
    fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        out = fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps, out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--compile", action="store_true", help="compile the vision blocks, as cog_test.sh --compile")
    a = p.parse_args()
    fam = FAMILIES["qwen"]
    proc = fam.load_processor(build_tiny("qwen", "/tmp/bd_tiny"))
    fam.set_pixel_bounds(proc, 896 * 896, 896 * 896)
    with torch.device("cuda"):
        model = fam.model_cls()._from_config(qwen2_5_vl_7b(proc.tokenizer), dtype=torch.bfloat16).eval()
    scorer = Scorer(model, proc, fam, max_new_tokens=10, compile="vision" if a.compile else "none")
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (896, 896, 3), dtype=np.uint8)) for _ in range(a.batch)]
    prompts = [DIMENSIONS["Aesthetics"].prompt] * a.batch
    t = time.perf_counter()
    batch = scorer.prepare(images, prompts)
    print(f"prepare (CPU, one process): {time.perf_counter() - t:.3f} s")
    gpu = {k: v.cuda() for k, v in batch.items()}
    with torch.no_grad():
        tv, _ = timed(lambda: model.model.visual(gpu["pixel_values"].to(torch.bfloat16), grid_thw=gpu["image_grid_thw"]))
        print(f"vision tower: {tv:.3f} s")
        tp, _ = timed(lambda: model(**gpu, use_cache=False, logits_to_keep=1))
        print(f"full prefill (vision + LM, last logits only): {tp:.3f} s")
        tg, _ = timed(lambda: scorer._generate(batch, with_scores=False), reps=2)
        print(f"generate 10 tokens: {tg:.3f} s  -> {a.batch / tg:.1f} images/s for the GPU part")
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            scorer._generate(batch, with_scores=False)
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=60))
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12, max_name_column_width=60))


if __name__ == "__main__":
    main()
