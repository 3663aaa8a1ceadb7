"""Compiled parts on images of varied sizes (real Qwen2.5-VL-7B config, random weights, one GPU): per
batch of a shape not run before, the vision tower's and `generate`'s time uncompiled and with
`--compile all` once its graphs have gone dynamic (how many frames each batch traced), and the same
batches through the loop's `answer_stream` with batches in flight. Says whether the compiled parts help
or hurt once every batch is a new shape, and whether that comes from the kernels or the scheduling.

    python benchmarks/compiled_shapes.py --out DIR [--batches 8] [--warm 3] [--pipeline 3] [--dynamic]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cogip.dims import DIMENSIONS
from cogip.evaluate.scorer import Scorer, _eager_on_recompile, _frames_traced
from cogip.models.blocks import compile_blocks
from cogip.models.families import FAMILIES
from cogip.models.tiny import build_tiny
from eval_bench import mixed_pixel_bounds, mixed_sides   # beside this script: the images eval_bench.py draws

BATCH = 32


def mixed_batches(scorer: Scorer, n_batches: int, cuda: bool) -> list[dict]:
    """Batches of BATCH images whose sides are drawn as eval_bench.py --mixed-sizes draws them (640-1152 px;
    60-108 on the CPU), longest first as the loop orders them, prepared as the loop's workers prepare them."""
    rng = np.random.default_rng(0)
    low, high = mixed_sides(896 if cuda else 84)
    sizes = [tuple(int(x) for x in rng.integers(low, high + 1, 2)) for _ in range(n_batches * BATCH)]
    prompt = DIMENSIONS["Aesthetics"].prompt
    sizes.sort(key=lambda s: -scorer.prepare.length(s, prompt))
    out = []
    for b in range(n_batches):
        images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes[b * BATCH:(b + 1) * BATCH]]
        out.append({k: v.pin_memory() if cuda and torch.is_tensor(v) else v
                    for k, v in scorer.prepare(images, [prompt] * BATCH).items()})
    return out


def per_batch(scorer: Scorer, batches: list[dict], sync) -> list[dict]:
    """Each batch once, alone: vision tower seconds, generate seconds, frames traced by each."""
    rows = []
    visual = scorer.model.model.visual
    for batch in batches:
        gpu = {k: v.to(scorer.model.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        row = {"tokens": int(batch["input_ids"].shape[1]), "patches": int(batch["pixel_values"].shape[0])}
        for name, fn in (("vision", lambda: visual(gpu["pixel_values"], grid_thw=gpu["image_grid_thw"])),
                         ("generate", lambda: scorer._generate(batch, with_scores=False))):
            traced = _frames_traced()
            sync()
            t = time.perf_counter()
            with torch.no_grad(), scorer._attention_backends():   # as the loop runs them
                fn()
            sync()
            row[f"{name}_s"], row[f"{name}_traced"] = round(time.perf_counter() - t, 4), _frames_traced() - traced
        rows.append(row)
        print(row, flush=True)
    return rows


def stream(scorer: Scorer, batches: list[dict], depth: int, sync) -> dict:
    dim = DIMENSIONS["Aesthetics"]
    sync()
    t = time.perf_counter()
    done = []
    for i, _ in scorer.answer_stream(((i, b, dim, "generate") for i, b in enumerate(batches)), depth=depth):
        sync()
        done.append(round(time.perf_counter() - t, 3))
    wall = time.perf_counter() - t
    return {"seconds": round(wall, 3), "images_per_s": round(len(batches) * BATCH / wall, 2), "answered": done}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--warm", type=int, default=3, help="batches that let the compiled graphs go dynamic first")
    p.add_argument("--pipeline", type=int, default=3)
    p.add_argument("--dynamic", action="store_true", help="vision blocks compiled with dynamic shapes from the "
                                                          "first batch (one compile instead of static, then dynamic)")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    fam = FAMILIES["qwen"]
    tiny = build_tiny("qwen", out / "tiny_qwen")
    processor = fam.load_processor(tiny)
    fam.set_pixel_bounds(processor, *mixed_pixel_bounds(cuda))
    if cuda:
        from cogip.models.configs import qwen2_5_vl_7b
        torch.manual_seed(0)
        with torch.device("cuda"):
            model = fam.model_cls()._from_config(qwen2_5_vl_7b(processor.tokenizer), dtype=torch.bfloat16).eval()
    else:
        model = fam.load_model(tiny)
    model.generation_config.eos_token_id = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    scorer = Scorer(model, processor, fam, max_new_tokens=10)   # uncompiled first; the same weights compiled after
    batches = mixed_batches(scorer, a.batches, cuda)
    warm, timed = batches[:a.warm], batches[a.warm:]
    res = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
           "batch": BATCH, "pipeline": a.pipeline, "dynamic": a.dynamic}
    print("== uncompiled", flush=True)
    per_batch(scorer, warm[:1], sync)   # CUDA and allocator warm-up
    res["eager_alone"] = per_batch(scorer, timed, sync)
    stream(scorer, timed, a.pipeline, sync)
    res["eager_stream"] = stream(scorer, timed, a.pipeline, sync)
    print("eager stream", res["eager_stream"], flush=True)

    print("== compiled (all), warm-up batches", flush=True)
    compile_blocks(model, fam, "all", dynamic=True if a.dynamic else None)
    scorer.compiled, scorer._compiling = True, True
    res["compiled_warm"] = per_batch(scorer, warm, sync)
    res["compiled_alone"] = per_batch(scorer, timed, sync)   # first time each shape is seen
    with _eager_on_recompile():
        res["compiled_alone_again_stance"] = per_batch(scorer, timed, sync)
    scorer._compiling = False   # as settled: the stream runs every batch in flight under the stance
    res["compiled_stream"] = stream(scorer, timed, a.pipeline, sync)
    print("compiled stream", res["compiled_stream"], flush=True)
    res["frames_traced_total"] = _frames_traced()
    (out / "compiled_shapes.json").write_text(json.dumps(res, indent=2))
    print(json.dumps({k: v for k, v in res.items() if "stream" in k}, indent=1))


if __name__ == "__main__":
    main()
