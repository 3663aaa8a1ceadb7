"""The benchmark loop's speed settings when they are not given: on a GPU, the batch size from the memory left
beside the weights and the longest item's length, the model's blocks compiled when the run is long enough to
repay compiling them, and the batches in flight; on a CPU, the plain settings. `FastEngine` calls `choose`
once the items are known and prints its `Choice.line()` (docs/performance.md: the measurements behind the
numbers below)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..evaluate.loop import PLAIN_BATCH
from . import private

MAX_BATCH = 32         # the fastest batch measured (16 and 32 tried); larger ones not measured
RESERVE = 2 * 2 ** 30  # left free beside the weights and the batches: CUDA's workspaces, the allocator's slack
# `item_bytes` times this: the memory reserved per item in flight, measured on an H100 (eager, batch 32, 2 in
# flight), came to 1.22x the estimate for Qwen2.5-VL-7B, 1.41x for Llama-3.2-11B-Vision, 0.64x for Gemma-3-12B
HEADROOM = 1.5
# Items from which compiled blocks repay compiling them, by family and by the state of the inductor cache.
# Measured on an H100 (docs/performance.md), whole cog_test.sh processes: Qwen2.5-VL-7B, 1,720 items compiled
# 108.9 s (empty cache) and 95.8 s (filled) against 114.3 s eager; 480 items compiled 42.0 s (filled) against
# 41.2 s eager. Gemma-3-12B compiled ran slower even in the loop (1,720 items: 111.3 s against 90.0 s);
# Llama-3.2-11B-Vision's compiled blocks ran out of memory at batch 32 with 3 batches in flight.
COMPILE_FROM = {"qwen": {"empty": 1200, "filled": 700}}
NOT_COMPILED = {"gemma": "compiled blocks measured slower for Gemma-3", "llama": "compiled blocks not measured faster for Mllama"}


@dataclass
class Choice:
    batch_size: int
    pipeline: int
    compile: str
    why: dict = field(default_factory=dict)   # setting -> why, for the printed line and timing.json

    def line(self) -> str:
        parts = [f"batch {self.batch_size} ({self.why['batch_size']})",
                 f"{self.pipeline} batch{'es' if self.pipeline > 1 else ''} in flight ({self.why['pipeline']})",
                 f"compiled blocks: {self.compile} ({self.why['compile']})"]
        return "cogip evaluate: " + "; ".join(parts)


def cache_filled(path: Path) -> bool:
    """Whether inductor has compiled graphs here already (from any earlier compiled run)."""
    graphs = path / "fxgraph"
    return graphs.is_dir() and any(graphs.iterdir())


def item_bytes(config, tokens: int, visual_tokens: int = 0, dtype_bytes: int = 2) -> int:
    """An estimate of one item's device memory while it is answered: the language model's KV cache and one
    layer's activations over its `tokens`, and the vision encoder's one layer over its image's patches
    (Qwen: `visual_tokens` merged 2x2; fixed-size encoders: their patches per tile, times the tiles), plus
    Mllama's cross-attention cache. `choose` adds HEADROOM for what it leaves out."""
    text = config.get_text_config()
    hidden, inter = text.hidden_size, text.intermediate_size
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    kv = getattr(text, "num_key_value_heads", None) or heads
    per_token = 2 * text.num_hidden_layers * kv * head_dim + 4 * hidden + 3 * inter
    if not visual_tokens:   # an image's fixed run of tokens in the text (Gemma's 256), which the prompt counts as one
        tokens += getattr(config, "mm_tokens_per_image", 0) or 0
    total = tokens * per_token
    vision = getattr(config, "vision_config", None)
    if vision is not None:
        merge = getattr(vision, "spatial_merge_size", None)
        if merge and visual_tokens:
            patches = visual_tokens * merge * merge
        else:
            side = getattr(vision, "image_size", 0) // max(getattr(vision, "patch_size", 0) or 1, 1)
            patches = getattr(vision, "max_num_tiles", 1) * (side * side + 1)
        v_hidden = getattr(vision, "hidden_size", 0) or getattr(vision, "embed_dim", 0)
        v_inter = getattr(vision, "intermediate_size", 0) or 4 * v_hidden
        total += patches * (4 * v_hidden + 3 * v_inter)
        cross = getattr(text, "cross_attention_layers", None) or []
        total += len(cross) * 2 * patches * kv * head_dim
    return int(total * dtype_bytes)


def meta_model(model_cls, config):
    """The model of `config` on the meta device: its modules and shapes, nothing allocated, nothing read."""
    from accelerate import init_empty_weights
    build = getattr(model_cls, "from_config", None) or model_cls._from_config   # an Auto class, or a model's
    with init_empty_weights():
        return build(config)


def weights_bytes(model_cls, config, dtype_bytes: int = 2) -> int:
    """The model's weights, counted on the meta device."""
    return sum(p.numel() for p in meta_model(model_cls, config).parameters()) * dtype_bytes


def choose(n_items: int, longest: tuple[int, int], family: str, config, dtype: torch.dtype, weights: int,
           batch_size: int | None, pipeline: int | None, compile: str, cuda: bool,
           free_bytes: int | None = None) -> Choice:
    """The settings for a run of `n_items`, whose longest item has `longest` = (tokens, visual tokens), of a
    `family` model of `config` answering in `dtype`, whose `weights` (bytes) are still to load (0: loaded).
    Given values stay; `compile` "auto" and None for the others are chosen. `free_bytes`: the device's free
    memory (default: asked)."""
    if not cuda:
        return Choice(batch_size or PLAIN_BATCH, pipeline or 1, "none" if compile == "auto" else compile,
                      {"batch_size": "given" if batch_size else "on a CPU", "pipeline": "given" if pipeline else "on a CPU",
                       "compile": "given" if compile != "auto" else "on a CPU"})
    why = {}
    # compiled blocks first: they decide the batches in flight, which share the memory
    if compile != "auto":
        parts, why["compile"] = compile, "given"
    elif family not in COMPILE_FROM:
        parts, why["compile"] = "none", NOT_COMPILED.get(family, "not measured faster for this model")
    else:
        cache = Path(private.inductor_cache_dir())
        state = "filled" if cache_filled(cache) else "empty"
        enough = n_items >= COMPILE_FROM[family][state]
        parts = "all" if enough else "none"
        why["compile"] = (f"{n_items:,} items {'repay' if enough else 'do not repay'} compiling, from "
                          f"{COMPILE_FROM[family][state]:,} with the inductor cache {state}: {cache}")
    depth = pipeline or (3 if parts != "none" else 2)
    why["pipeline"] = "given" if pipeline else ("compiled" if parts != "none" else "eager")
    if batch_size:
        why["batch_size"] = "given"
        return Choice(batch_size, depth, parts, why)
    if free_bytes is None:
        free_bytes = torch.cuda.mem_get_info()[0]
    per_item = int(HEADROOM * item_bytes(config, *longest, dtype_bytes=dtype.itemsize))
    room = free_bytes - weights - RESERVE
    fits = max(1, room // (depth * per_item))
    batch = min(MAX_BATCH, fits if fits < 8 else fits // 8 * 8)
    why["batch_size"] = (f"{room / 2 ** 30:.1f} GiB free beside the weights, ~{per_item / 2 ** 30:.2f} GiB an item "
                         f"at {longest[0]:,} tokens, {depth} in flight" + (f"; at most {MAX_BATCH}" if fits > MAX_BATCH else ""))
    why["per_item_gib"] = round(per_item / 2 ** 30, 3)
    return Choice(batch, depth, parts, why)
