"""Benchmark-loop throughput (images/s) with the real Qwen2.5-VL-7B architecture and random weights:
(a) a faithful re-implementation of the published loop (one image at a time, generate),
(b) this project's loop in `generate` mode, (c) in `expected` mode — both end to end (JPEG decode,
processor, batched generation, parsing, JSONL records, metrics, plots). `--variants` adds runs of
the loop, each on a freshly built model at the largest batch size, with options joined by "+":
`liger` (Liger's fused kernels), `compile` (compiled vision blocks, as `--compile`), `compileall`
(also the language blocks' MLPs and norms, as `--compile all`), `pipeN` (N batches in flight, as
`--pipeline N`; 1 otherwise), `cudnn` (cuDNN's fused attention allowed, `Scorer(cudnn_attention=True)`),
`warmN` (the untimed warm-up run answers N batches, default as many as `pipeN`), `workersN` (N loader
workers; 8 otherwise, as `python -m cogip.evaluate.loop` on a GPU), `prefetchN` (each worker keeps N
prepared batches ready; 2 otherwise), `nopin` (prepared batches not pinned).
`base` is the loop with none of them. A variant listed again runs again, its rows as `<variant>_run2`.
A variant that fails is recorded as its error, and the next runs. `--mixed-sizes`: every image a size of
its own (sides 5/7 to 9/7 of 896), read within `cog_test.sh`'s Qwen pixel bounds, as real benches are:
nearly every batch then has tensor shapes of its own, which same-size images never showed.

    python benchmarks/eval_bench.py --out DIR            # GPU: 896x896 images = 1024 visual tokens
    python benchmarks/eval_bench.py --out DIR --mixed-sizes --batch-sizes 32 --variants pipe2 compileall+pipe3
    python benchmarks/eval_bench.py --cpu-smoke --out DIR
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cogip.data.layout import write_json
from cogip.data.images import open_image
from cogip.dims import DIMENSIONS
from cogip.accel.scoring import FastEngine, ScoringOptions, speed_up, visual_tokens
from cogip.evaluate.loop import LoopOptions, run_benchmark as loop_run
from cogip.evaluate.scorer import Scorer
from cogip.models.families import FAMILIES
from cogip.models.tiny import build_tiny

MAX_NEW = 10   # a describe-then-predict answer is ~8 tokens; random weights never stop by themselves


def mixed_sides(side: int) -> tuple[int, int]:
    """The range each side of a --mixed-sizes image is drawn from: 5/7 to 9/7 of `side` (640-1152 at 896 px)."""
    return side * 5 // 7, side * 9 // 7


def mixed_pixel_bounds(cuda: bool) -> tuple[int, int]:
    """The pixel bounds --mixed-sizes images are read within: cog_test.sh's Qwen defaults (256-1280 visual
    tokens); on the CPU scaled down, as its images are."""
    return (256 * 28 * 28, 1280 * 28 * 28) if cuda else (56 * 56, 112 * 112)


def make_bench(root: Path, n: int, side: int, mixed: bool = False) -> Path:
    """n random JPEGs of side x side, or with `mixed` of sides drawn from `mixed_sides(side)` each."""
    low, high = mixed_sides(side)
    dim = DIMENSIONS["Aesthetics"]
    rng = np.random.default_rng(0)
    (root / "img" / dim.name).mkdir(parents=True, exist_ok=True)
    msgs, answers = [], []
    for i in range(n):
        name = f"{dim.name}/{i:06d}.jpg"
        shape = tuple(int(x) for x in rng.integers(low, high + 1, 2)) if mixed else (side, side)
        Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(root / "img" / name, quality=90)
        msgs.append([{"role": "user", "content": [{"type": "image", "image": name}, {"type": "text", "text": dim.prompt}]}])
        answers.append(dim.format_answer(round(float(rng.uniform(1, 9)), 3)))
    write_json(root / "test" / dim.name / f"{dim.name}_messages.json", msgs)
    write_json(root / "test" / dim.name / f"{dim.name}_scores.json", answers)
    return root


def published_loop(model, processor, fam, bench: Path, n: int) -> float:
    """Images a second of the published loop (`published_eval.answer_one`, one image at a time) on the bench."""
    from published_eval import answer_one
    msgs = json.loads((bench / "test/Aesthetics/Aesthetics_messages.json").read_text())[:n]
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t = time.perf_counter()
    for m in msgs:
        answer_one(model, processor, fam, open_image(bench / "img" / m[0]["content"][0]["image"]),
                   m[0]["content"][1]["text"], MAX_NEW)
    sync()
    return len(msgs) / (time.perf_counter() - t)


def run_benchmark(scorer, test_dir, image_root, out, batch_size, mode, sample_n=None, **speed):
    """The loop as `cog_test.sh` runs it (cogip.accel's engine with these speed options)."""
    options = LoopOptions(str(test_dir), str(image_root), str(out), None, sample_n, 19, "published", None, batch_size, mode)
    return loop_run(scorer, options, FastEngine(ScoringOptions(**speed)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cpu-smoke", action="store_true")
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=480, help="images (published protocol: 4 dimensions x 120)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32])
    p.add_argument("--variants", nargs="+", default=["base"], help="base, or options joined by +: liger compile "
                                                                    "compileall pipeN")
    p.add_argument("--mixed-sizes", action="store_true", help="images of varied sizes, cog_test.sh's pixel bounds")
    a = p.parse_args()
    # No use_fast_pinning() here, unlike cog_test.sh: this process runs many loops, and each forks its loader's
    # workers after the pinned pool has grown (see cogip.evaluate.loop.use_fast_pinning)
    out = Path(a.out)
    cuda = torch.cuda.is_available() and not a.cpu_smoke
    fam = FAMILIES["qwen"]
    tiny = build_tiny("qwen", out / "tiny_qwen")
    processor = fam.load_processor(tiny)
    side = 896 if cuda else 84
    if a.mixed_sizes:
        fam.set_pixel_bounds(processor, *mixed_pixel_bounds(cuda))
    else:
        fam.set_pixel_bounds(processor, side * side, side * side)
    def build():
        if not cuda:
            return fam.load_model(tiny)
        from real_configs import qwen2_5_vl_7b
        torch.manual_seed(0)
        with torch.device("cuda"):
            return fam.model_cls()._from_config(qwen2_5_vl_7b(processor.tokenizer), dtype=torch.bfloat16).eval()

    n, n_pub = (a.n, 24) if cuda else (8, 4)
    bench = make_bench(out / "bench", n, side, a.mixed_sizes)
    results = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
               "max_new_tokens": MAX_NEW, "n": n, "mixed_sizes": a.mixed_sizes}
    if a.mixed_sizes:   # what the images come to, in visual tokens (the one placeholder token they replace, back)
        tokens = []
        for path in sorted((bench / "img/Aesthetics").glob("*.jpg"))[:64]:
            with Image.open(path) as image:   # the header only
                tokens.append(visual_tokens(processor, *image.size) + 1)
        results["visual_tokens_first64"] = {"mean": float(np.mean(tokens)), "min": min(tokens), "max": max(tokens)}
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    workers = 8 if cuda else 0   # what `python -m cogip.evaluate.loop` uses on a GPU
    for k, variant in enumerate(a.variants):
        # a variant listed again gets its own rows: "<variant>_run2", ...
        label = variant + (f"_run{a.variants[:k].count(variant) + 1}" if variant in a.variants[:k] else "")
        model = build()
        model.generation_config.eos_token_id = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
        options = set(variant.split("+"))
        if "liger" in options:
            from cogip.accel.blocks import apply_liger
            apply_liger(model)
        compile_parts = "all" if "compileall" in options else "vision" if "compile" in options else "none"
        pipeline = next((int(o[4:]) for o in options if o.startswith("pipe")), 1)
        warm = next((int(o[4:]) for o in options if o.startswith("warm")), pipeline)
        n_workers = next((int(o[7:]) for o in options if o.startswith("workers")), workers)
        loader = {"prefetch": next((int(o[8:]) for o in options if o.startswith("prefetch")), 2),
                  **({"pin_memory": False} if "nopin" in options else {})}
        if label == "base":   # the published loop (on the model as transformers builds it) and the shapes, once
            sample = processor(text=[fam.chat_prompt(processor, DIMENSIONS["Aesthetics"].prompt)],
                               images=[open_image(bench / "img/Aesthetics/000000.jpg")], return_tensors="pt")
            results["visual_tokens"] = int((sample["input_ids"] == model.config.image_token_id).sum())
            results["prompt_tokens"] = int(sample["input_ids"].shape[1])
            published_loop(model, processor, fam, bench, 2)                       # warm-up
            results["published_img_s"] = published_loop(model, processor, fam, bench, n_pub)
        scorer = Scorer(model, processor, fam, max_new_tokens=MAX_NEW)
        speed_up(scorer, compile_parts)
        scorer.pipeline.cudnn_attention = "cudnn" in options
        sizes = a.batch_sizes if cuda else [4]
        for mode in ("generate", "expected"):
            for bs in (sizes if variant == "base" else sizes[-1:]):
                tag = f"{mode}_bs{bs}" if label == "base" else f"{label}_{mode}_bs{bs}"
                for folder in (out / f"warm_{tag}", out / f"run_{tag}"):   # else a rerun into --out resumes: 0 items
                    shutil.rmtree(folder, ignore_errors=True)
                try:
                    run_benchmark(scorer, bench / "test", bench / "img", out / f"warm_{tag}", batch_size=bs,
                                  mode=mode, num_workers=n_workers, sample_n=bs * warm, pipeline=pipeline, **loader)

                    sync()
                    t = time.perf_counter()
                    run_benchmark(scorer, bench / "test", bench / "img", out / f"run_{tag}", batch_size=bs,
                                  mode=mode, num_workers=n_workers, pipeline=pipeline, **loader)
                    sync()
                except Exception as e:   # recorded; the other variants still run
                    results[f"{tag}_error"] = f"{type(e).__name__}: {e}"[:500]
                    print(tag, "failed:", results[f"{tag}_error"], flush=True)
                    continue
                results[f"{tag}_img_s"] = n / (time.perf_counter() - t)
                results[f"{tag}_loop"] = json.loads((out / f"run_{tag}" / "timing.json").read_text())
                print(tag, round(results[f"{tag}_img_s"], 3), "images/s", flush=True)
                (out / "eval_bench.json").write_text(json.dumps(results, indent=2))   # kept if a later run is cut
        model = scorer = None
        if cuda:
            torch.cuda.empty_cache()
    if cuda:
        results["peak_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    print(json.dumps(results, indent=2))
    (out / "eval_bench.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
