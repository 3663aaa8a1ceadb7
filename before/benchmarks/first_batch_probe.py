"""What a fresh process's first batches pay, and under which allocator settings (issues 4 and 7).

The benchmark loop's first answers come 3.5-4.5 s after it starts, against ~2 s of GPU work at its
running rate (docs/benchmarks.md, rounds 8-15): on two GPUs that start is what keeps data-parallel
evaluation under 1.9x. Here each run is a new process (allocator settings are read when CUDA starts)
that builds the real Qwen2.5-VL-7B architecture with random weights on the GPU, then answers the loop's
ramp of batches (8, 8, 16, 32, 32, 32 images) through `Scorer.answer_stream` twice, as the loop does
(two in flight): the first pass pays the one-off costs, the second is warm. Per pass: when each batch
was answered, and how often the device pool called cudaMalloc.

    python benchmarks/first_batch_probe.py --runs default expandable default expandable --out probe.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cogip.evaluate.bench import FAST_PINNING  # noqa: E402

# run name -> allocator settings; each keeps the loop's own pinning setting (FAST_PINNING)
RUN_ENV = {"default": FAST_PINNING, "expandable": f"expandable_segments:True,{FAST_PINNING}"}


def one_run(a) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    from cogip.dims import DIMENSIONS
    from cogip.evaluate.scorer import Scorer
    from cogip.models.configs import qwen2_5_vl_7b
    from cogip.models.families import FAMILIES
    from cogip.models.tiny import build_tiny

    fam = FAMILIES["qwen"]
    proc = fam.load_processor(build_tiny("qwen", "/tmp/probe_tiny"))
    fam.set_pixel_bounds(proc, a.side * a.side, a.side * a.side)
    cuda = not a.cpu_smoke
    with torch.device("cuda" if cuda else "cpu"):   # --cpu-smoke: the tiny model's config
        config = qwen2_5_vl_7b(proc.tokenizer) if cuda else fam.model_cls().config_class.from_pretrained("/tmp/probe_tiny")
        model = fam.model_cls()._from_config(config, dtype=torch.bfloat16 if cuda else torch.float32).eval()
    stats = torch.cuda.memory_stats if cuda else lambda: {}
    scorer = Scorer(model, proc, fam, max_new_tokens=10)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (a.side, a.side, 3), dtype=np.uint8)) for _ in range(8)]
    dim = DIMENSIONS["Aesthetics"]
    batches = {n: {k: v.pin_memory() if cuda and torch.is_tensor(v) else v    # pinned, as the loader gives them
                   for k, v in scorer.prepare((images * 4)[:n], [dim.prompt] * n).items()} for n in set(a.ramp)}
    passes = []
    for _ in range(2):
        before = stats()
        t0, answered = time.perf_counter(), []
        jobs = ((i, batches[n], dim, "generate") for i, n in enumerate(a.ramp))
        for i, _answers in scorer.answer_stream(jobs, depth=a.depth):
            answered.append(round(time.perf_counter() - t0, 3))
        after = stats()
        passes.append({"answered_s": answered,
                       "device_mallocs": after.get("num_device_alloc", 0) - before.get("num_device_alloc", 0),
                       "reserved_gib": round(after.get("reserved_bytes.all.current", 0) / 2 ** 30, 2)})
    cold, warm = passes
    return {"ramp": a.ramp, "depth": a.depth, "side": a.side, "cold": cold, "warm": warm,
            "one_off_s": round(cold["answered_s"][-1] - warm["answered_s"][-1], 3)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", default=["default", "expandable"], choices=sorted(RUN_ENV),
                   help="one new process each, in this order")
    p.add_argument("--ramp", type=lambda s: [int(x) for x in s.split(",")], default=[8, 8, 16, 32, 32, 32])
    p.add_argument("--depth", type=int, default=2, help="batches in flight (the loop's default: 2)")
    p.add_argument("--side", type=int, default=1008, help="image side (the scaling section's: 1008 px)")
    p.add_argument("--out", type=Path)
    p.add_argument("--cpu-smoke", action="store_true", help="the tiny model on the CPU: that it runs (CI)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(one_run(a)))
        return
    results = []
    for name in a.runs:
        env = dict(os.environ, PYTORCH_CUDA_ALLOC_CONF=RUN_ENV[name])
        env.pop("PYTORCH_ALLOC_CONF", None)
        cmd = [sys.executable, __file__, "--child", "--ramp", ",".join(map(str, a.ramp)), "--depth", str(a.depth),
               "--side", str(a.side)] + ["--cpu-smoke"] * a.cpu_smoke
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"run {name} failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
        result = {"run": name, **json.loads(done.stdout.strip().splitlines()[-1])}
        results.append(result)
        print(f"{name:11s} cold {result['cold']['answered_s']} ({result['cold']['device_mallocs']} cudaMallocs, "
              f"{result['cold']['reserved_gib']} GiB)  warm {result['warm']['answered_s']}  one-off {result['one_off_s']} s",
              flush=True)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"runs": results}, indent=1))


if __name__ == "__main__":
    main()
