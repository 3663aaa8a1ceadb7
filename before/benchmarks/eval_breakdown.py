"""Where one batch of the benchmark loop spends its time (real Qwen2.5-VL-7B config, random weights):
CPU preparation, vision tower, full prefill, generation; then the profiler's top operators. With
--stream K, also K batches answered as the loop answers them (`answer_stream`, --pipeline batches in
flight), profiled once warm: whether the running loop keeps the GPU busy, and which kernels fill it.

    python benchmarks/eval_breakdown.py [--batch 32] [--compile none|vision|all] [--stream 6 --pipeline 3]
                                        [--size-range 640 1152]

Images are 896 px squares (1024 visual tokens each) unless --size-range draws their sides, as real benches'
images differ: then the batch is padded and Qwen's vision windows come in many lengths, which same-size images
never show (docs/benchmarks.md, twenty-third round).
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
from cogip.profiling import report  # noqa: E402


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
    p.add_argument("--compile", nargs="?", const="vision", default="none", choices=["none", "vision", "all"],
                   help="compiled parts, as cog_test.sh --compile (bare --compile: vision)")
    p.add_argument("--stream", type=int, default=0, help="batches to profile through answer_stream (0: skip)")
    p.add_argument("--pipeline", type=int, default=3, help="batches in flight for --stream")
    p.add_argument("--mode", default="generate", choices=["generate", "expected"], help="scoring mode for --stream")
    p.add_argument("--size-range", type=int, nargs=2, metavar=("LOW", "HIGH"),
                   help="image sides drawn from [LOW, HIGH] px, read within cog_test.sh's pixel bounds, the batch's "
                        "items of like length as the loop runs them (default: all 896 px)")
    a = p.parse_args()
    fam = FAMILIES["qwen"]
    proc = fam.load_processor(build_tiny("qwen", "/tmp/bd_tiny"))
    rng = np.random.default_rng(0)
    if a.size_range:
        fam.set_pixel_bounds(proc, 256 * 28 * 28, 1280 * 28 * 28)   # cog_test.sh's defaults for Qwen
        sizes = like_lengths(fam, proc, rng.integers(a.size_range[0], a.size_range[1] + 1, (8 * a.batch, 2)), a.batch)
    else:
        fam.set_pixel_bounds(proc, 896 * 896, 896 * 896)
        sizes = [(896, 896)] * a.batch
    with torch.device("cuda"):
        model = fam.model_cls()._from_config(qwen2_5_vl_7b(proc.tokenizer), dtype=torch.bfloat16).eval()
    scorer = Scorer(model, proc, fam, max_new_tokens=10, compile=a.compile)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]
    print("visual tokens per image:", [fam.visual_tokens_added(proc, w, h) for w, h in sizes])
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
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
            scorer._generate(batch, with_scores=False)
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=60))
        print("operators by their own device time, per input shape:")
        print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cuda_time_total", row_limit=25,
                                                                  max_name_column_width=40, max_shapes_column_width=80))
        vision_ops(model, gpu)
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=12, max_name_column_width=60))
    if a.stream:
        stream_profile(scorer, batch, a)


def like_lengths(fam, proc, drawn, batch: int) -> list[tuple[int, int]]:
    """A batch of the loop's kind from sizes drawn: the loop runs items longest first, so a batch holds items of
    like length; this takes the middle batch of the drawn sizes so ordered."""
    ordered = sorted(map(tuple, drawn.tolist()), key=lambda wh: -fam.visual_tokens_added(proc, *wh))
    middle = (len(ordered) - batch) // 2
    return ordered[middle:middle + batch]


def vision_ops(model, gpu):
    """The vision tower's ATen operators (not kernels) by their own device time, with their shapes: which
    operator a kernel of the tables above belongs to, where its name does not say."""
    from torch.profiler import ProfilerActivity, profile
    pixels = gpu["pixel_values"].to(torch.bfloat16)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
        model.model.visual(pixels, grid_thw=gpu["image_grid_thw"])
        torch.cuda.synchronize()
    rows = [e for e in prof.key_averages(group_by_input_shape=True)
            if e.key.startswith("aten::") and e.self_device_time_total > 0]
    rows.sort(key=lambda e: -e.self_device_time_total)
    print("vision tower, ATen operators by own device time:")
    for e in rows[:14]:
        print(f"{e.self_device_time_total / 1e3:9.2f} ms  {e.count:4d}x  {e.key}  {str(e.input_shapes)[:110]}")


def stream_profile(scorer, batch, a):
    """The running loop's view: answer_stream over --stream batches, once to warm every thread, then
    profiled. GPU busy time (union over the streams) against wall time says whether the loop is
    GPU-bound; the kernel table says what fills the GPU."""
    from torch.profiler import ProfilerActivity, profile

    dim = DIMENSIONS["Aesthetics"]
    batch = {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in batch.items()}   # as the loader gives it
    jobs = lambda: ((i, batch, dim, a.mode) for i in range(a.stream))  # noqa: E731
    for _ in scorer.answer_stream(jobs(), depth=a.pipeline):
        pass
    torch.cuda.synchronize()
    t = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in scorer.answer_stream(jobs(), depth=a.pipeline):
            pass
        torch.cuda.synchronize()
    wall = time.perf_counter() - t
    print(f"stream of {a.stream} batches x {a.batch}, {a.pipeline} in flight, {a.mode}: {wall:.3f} s profiled "
          f"-> {a.stream * a.batch / wall:.1f} images/s under the profiler")
    print(report(prof, rows=25))


if __name__ == "__main__":
    main()
