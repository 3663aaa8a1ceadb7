"""Model FLOPs utilisation of a run against the card's dense bf16 peak. Prints one JSON object.

    python benchmarks/mfu.py OUTPUT_DIR MODEL_DIR [--data DATA_JSON IMAGE_ROOT]     # a finetune_lora.sh run
    python benchmarks/mfu.py --eval RUN_OUT MODEL_DIR IMAGE_ROOT [--new-tokens 10] [--min-pixels N --max-pixels N]
                                                                                     # a cog_test.sh run

Training (needs `--include_num_input_tokens_seen True`): 6 x parameters x tokens a second (a forward and a
backward; the recompute of checkpointed blocks not counted), the tokens being the language model's input tokens
(images as their visual tokens), at the run's median step. With --data, also its matmuls counted as below (each
layer over the tokens it sees; the lm_head over the answer's tokens only), times 3 (a backward computes twice a
forward's), for the mean sample of the data.

The benchmark loop: the matmuls its forward passes compute, 2 x inputs x outputs of every linear layer and patch
embedding times the tokens that layer sees, over the loop's seconds (model loaded to last answer). The tokens:
- language layers: each batch's padded prompt tokens once (prefill), then one a row for each further new token;
- lm_head: one position a row for each new token (generate projects only the last position);
- vision encoder, patch embedding, projector and Llama's cross-attention keys and values: each image's own
  tokens as its family's model sees them (Qwen: its patches, 4 a visual token; Gemma 3: 4,096 patches, 256
  tokens after pooling; Llama 3.2: every one of its 4 tiles, 1,601 patches each, padded to 1,608 in the
  encoder), once, at prefill.
Attention's own products (QK^T, PV) are not counted. The new tokens are --new-tokens for every batch: random
weights never stop early; a model that stops sooner computes less than counted. Data-parallel runs: every
process's batches, against as many cards' peak.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0}   # SXM, dense bf16
STREAMS = ("text", "head", "cross", "patch", "vision", "projector")


def device_peak() -> tuple[str, float | None]:
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return name, next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def flops_per_token(family, model) -> dict[str, float]:
    """2 x inputs x outputs of each matmul layer, summed by the tokens it sees (STREAMS)."""
    per = dict.fromkeys(STREAMS, 0.0)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            size = module.in_features * module.out_features
        elif isinstance(module, (torch.nn.Conv2d, torch.nn.Conv3d)):   # a patch embedding: kernel = stride
            size = module.weight[0].numel() * module.out_channels
        else:
            if family.name == "gemma" and hasattr(module, "mm_input_projection_weight"):   # a matmul, not a Linear
                per["projector"] += 2 * module.mm_input_projection_weight.numel()
            continue
        if name.endswith("lm_head"):
            stream = "head"
        elif ".cross_attn." in name and name.endswith(("k_proj", "v_proj")):
            stream = "cross"
        elif isinstance(module, (torch.nn.Conv2d, torch.nn.Conv3d)):
            stream = "patch"
        else:
            stream = {"language": "text", "vision": "vision", "projector": "projector"}[family.param_group(name + ".weight")]
        per[stream] += 2 * size
    return per


def image_tokens(family, config, processor, width: int, height: int) -> dict[str, int]:
    """The tokens one image adds to each image stream."""
    v = config.vision_config
    if family.name == "qwen":
        from cogip.accel.scoring import visual_tokens
        merged = visual_tokens(processor, width, height) + 1
        return {"patch": 4 * merged, "vision": 4 * merged, "projector": merged}
    side = v.image_size // v.patch_size
    if family.name == "gemma":
        return {"patch": side * side, "vision": side * side, "projector": config.mm_tokens_per_image}
    if family.name == "llama":
        tiles, patches = v.max_num_tiles, side * side
        return {"patch": tiles * patches, "vision": tiles * 8 * math.ceil((patches + 1) / 8),
                "projector": tiles * (patches + 1), "cross": tiles * (patches + 1)}
    raise ValueError(f"no image token count for the {family.name} family")


def forward_flops(per_token: dict, text: int, head: int, images: list[dict]) -> float:
    """The matmul FLOPs of forwards over `text` language tokens, `head` lm_head positions and `images` (each
    image's tokens in each image stream)."""
    total = per_token["text"] * text + per_token["head"] * head
    for stream in ("cross", "patch", "vision", "projector"):
        total += per_token[stream] * sum(i.get(stream, 0) for i in images)
    return total


def loop_flops(per_token: dict, prompt_tokens: int, rows: int, images: list[dict], new_tokens: int) -> float:
    """The loop's matmul FLOPs: batches of `prompt_tokens` padded tokens in all and `rows` items, `images` the
    image streams' tokens of each item, `new_tokens` generated a row."""
    return forward_flops(per_token, prompt_tokens + rows * (new_tokens - 1), rows * new_tokens, images)


def train_flops_per_sample(per_token: dict, family, config, processor, rows: list[dict]) -> tuple[float, float]:
    """3 x the forward's matmul FLOPs of a training sample (a backward computes twice a forward's), the mean over
    `rows` (training rows: image, prompt, answer) as the collator encodes them; the lm_head only where the answer is
    supervised, as the trainer computes it. Also the mean language tokens of a row (unpadded)."""
    from PIL import Image

    from cogip.train.data import SFTCollator
    collate, total, text = SFTCollator(family, processor), 0.0, 0
    for row in rows:
        batch = collate([row])
        tokens = batch["input_ids"].numel()
        with Image.open(row["image"]) as image:
            size = image.size
        total += 3 * forward_flops(per_token, tokens, int((batch["labels"][:, 1:] != -100).sum()),
                                   [image_tokens(family, config, processor, *size)])
        text += tokens
    return total / len(rows), text / len(rows)


def eval_mfu(run_out: Path, model_dir: str, image_root: Path, new_tokens: int, min_pixels: int | None = None,
             max_pixels: int | None = None) -> dict:
    from PIL import Image
    from transformers import AutoConfig

    from cogip.accel.auto import meta_model
    from cogip.models.families import resolve_family
    timing = json.loads((run_out / "timing.json").read_text())
    config = AutoConfig.from_pretrained(model_dir)
    family = resolve_family(model_dir)
    processor = None
    if family.name == "qwen":   # an image's visual tokens follow the run's pixel bounds (not given: the published)
        processor = family.load_processor(model_dir, **family.pixel_bounds(min_pixels, max_pixels, published=True))
    images = []
    for records in sorted(run_out.glob("*/records.jsonl")):
        for line in records.read_text().splitlines():
            with Image.open(image_root / json.loads(line)["image"]) as image:   # the header only
                images.append(image_tokens(family, config, processor, *image.size))
    ranks = [timing, *timing.get("other_ranks", [])]   # data-parallel: every process's batches, on its own GPU
    padded = sum(sum(r["padded_tokens"]) for r in ranks)
    per_token = flops_per_token(family, meta_model(family.model_cls(), config))
    flops = loop_flops(per_token, padded, len(images), images, new_tokens)
    name, peak = device_peak()
    seconds, gpus = timing["seconds"], len(ranks)
    return {"family": family.name, "items": len(images), "gpus": gpus, "flop": int(flops), "pflop": round(flops / 1e15, 2),
            "tflops": round(flops / seconds / 1e12, 1),
            "mfu": round(flops / seconds / (gpus * peak * 1e12), 3) if peak else None, "peak_tflops": peak, "device": name,
            "gflop_per_token": {k: round(v / 1e9, 4) for k, v in per_token.items()}}


def train_mfu(out: Path, model_dir: str, data: tuple[str, str] | None = None, min_pixels: int | None = None,
              max_pixels: int | None = None) -> dict:
    info = json.loads((out / "cogip_train.json").read_text())
    seen = [e["num_input_tokens_seen"] for e in json.loads((out / "log_history.json").read_text())
            if "num_input_tokens_seen" in e]
    t = info["throughput"]
    tokens_per_sample = seen[-1] / (info["global_step"] * t["samples_per_step"])
    from transformers import AutoConfig

    from cogip.accel.auto import meta_model
    from cogip.models.families import FAMILIES
    family, config = FAMILIES[info["family"]], AutoConfig.from_pretrained(model_dir)
    model = meta_model(family.model_cls(), config)
    params = sum(p.numel() for p in model.parameters())
    name, peak = device_peak()
    rate = t["median_step_samples_per_s"]
    flops = 6 * params * tokens_per_sample * rate
    result = {"params": params, "tokens_per_sample": round(tokens_per_sample, 1), "tflops": round(flops / 1e12, 1),
              "mfu": round(flops / (peak * 1e12), 3) if peak else None, "device": name}
    if data:   # the matmul count, from the run's training data
        from cogip.train.data import load_sft_dataset
        processor = family.load_processor(model_dir, **family.pixel_bounds(min_pixels, max_pixels, published=True))
        per_sample, text = train_flops_per_sample(flops_per_token(family, model), family, config, processor,
                                                  list(load_sft_dataset(*data, check=False)))
        result.update(text_tokens_per_row=round(text, 1), matmul_tflop_per_sample=round(per_sample / 1e12, 4),
                      matmul_tflops=round(per_sample * rate / 1e12, 1),
                      matmul_mfu=round(per_sample * rate / (peak * 1e12), 3) if peak else None)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("paths", nargs="+", help="OUTPUT_DIR MODEL_DIR, or with --eval RUN_OUT MODEL_DIR IMAGE_ROOT")
    p.add_argument("--eval", action="store_true", help="a cog_test.sh run's loop")
    p.add_argument("--new-tokens", type=int, default=10, help="--eval: tokens generated a row (10)")
    p.add_argument("--data", nargs=2, metavar=("DATA_JSON", "IMAGE_ROOT"),
                   help="a training run's data: also its matmul count (3 x a forward's matmuls, as --eval counts them)")
    p.add_argument("--min-pixels", type=int, help="the run's MIN_PIXELS, if it gave one (Qwen)")
    p.add_argument("--max-pixels", type=int, help="the run's MAX_PIXELS, if it gave one (Qwen)")
    a = p.parse_args(argv)
    if len(a.paths) != (3 if a.eval else 2):
        p.error("give OUTPUT_DIR MODEL_DIR, or --eval RUN_OUT MODEL_DIR IMAGE_ROOT")
    result = (eval_mfu(Path(a.paths[0]), a.paths[1], Path(a.paths[2]), a.new_tokens, a.min_pixels, a.max_pixels) if a.eval
              else train_mfu(Path(a.paths[0]), a.paths[1], a.data, a.min_pixels, a.max_pixels))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
