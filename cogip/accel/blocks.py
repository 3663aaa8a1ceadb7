"""The repeated blocks of a model by part (language, vision), and what is done to them for speed:
gradient checkpointing by part (recompute only where memory needs it), `torch.compile`, Liger's
fused kernels, ZeRO-3 and FSDP2 gathering by block, one autocast copy of each norm's output.

Transformers checkpoints every `GradientCheckpointingLayer` or none. Recomputing costs a forward pass
of the part, so a part whose activations fit is faster left alone; and a block transformers cannot
checkpoint at all (Mllama's vision encoder layers, whose activations dominate Llama-3.2-Vision
training memory) gets wrapped here with `torch.utils.checkpoint`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from functools import partial

import torch
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from ..errors import CogipError
from . import private
from ..models.families import Family

PARTS = ("language", "vision")
UNCHECKPOINTABLE_BLOCKS = ("MllamaVisionEncoderLayer",)   # repeated blocks transformers never checkpoints
STATELESS_CHILDREN = ("MLP", "Norm")                        # parts of a language block that hold no cache


# What a checkpointed block may keep from its forward instead of recomputing it (selective activation
# checkpointing). The attention kernels' outputs: on long sequences the attention forward is a large
# part of a recomputation (Mllama's 6432 vision patches), and its
# output (plus a log-sum-exp per row) is the size of one hidden state. The backward still needs the
# query, key and value, which the recomputation rebuilds from the block's input with cheap matmuls.
# Off by default: the Llama step, host-bound elsewhere, measured no faster (docs/performance.md).
_SDPA_OPS = ("_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention",
             "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention_for_cpu")
KEEPABLE = {"attention": _SDPA_OPS}


def _spec_items(spec: str | Iterable[str]) -> list[str]:
    """A comma-separated option (or its items already split), stripped, empty items dropped."""
    return [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]


def parse_keep(spec: str | Iterable[str]) -> set[str]:
    """'none' | comma-separated subset of KEEPABLE."""
    items = set(_spec_items(spec)) - {"none"}
    unknown = sorted(items - set(KEEPABLE))
    if unknown:
        raise CogipError(f"checkpointed blocks can keep none or {', '.join(KEEPABLE)}; got {unknown[0]!r}")
    return items


def keep_context(keep: str | Iterable[str]):
    """`context_fn` for torch.utils.checkpoint that saves the ops of `keep` and recomputes the rest;
    None when nothing is kept (plain checkpointing)."""
    names = {name for k in parse_keep(keep) for name in KEEPABLE[k]}
    ops = {getattr(torch.ops.aten, n).default for n in names if hasattr(torch.ops.aten, n)}
    if not ops:
        return None

    def policy(ctx, op, *args, **kwargs):
        return CheckpointPolicy.MUST_SAVE if op in ops else CheckpointPolicy.PREFER_RECOMPUTE
    return partial(create_selective_checkpoint_contexts, policy)


def parse_parts(spec: str | Iterable[str], what: str = "checkpointing parts") -> set[str]:
    """'all' | 'none' | comma-separated subset of PARTS."""
    items = _spec_items(spec)
    if items in (["all"], []):
        return set(PARTS) if items else set()
    if items == ["none"]:
        return set()
    unknown = [s for s in items if s not in PARTS]
    if unknown:
        raise CogipError(f"{what} must be all, none or a subset of {', '.join(PARTS)}; got {unknown[0]!r}")
    return set(items)


def parse_part_blocks(spec: str | Iterable[str]) -> dict[str, tuple[int, int] | None]:
    """Checkpointing parts as `parse_parts`, each optionally with how much of its blocks to recompute, in
    forward order: 'vision=24' recomputes the first 24 vision blocks whole and keeps the later ones'
    activations; 'vision=9+31' recomputes the first 9 whole and of the next 31 only their MLP (the rest
    kept). Returns {part: (whole, mlp_only)}, or None for every block whole."""
    named = dict(s.split("=", 1) if "=" in s else (s, None) for s in _spec_items(spec))
    counted = [k for k, n in named.items() if n is not None and k not in PARTS]
    if counted:
        raise CogipError(f"checkpointing parts: a block count goes with a part name ({', '.join(PARTS)}); "
                         f"got {counted[0]}={named[counted[0]]}")
    blocks = {}
    for part in parse_parts(list(named), "checkpointing parts"):
        n = named.get(part)
        counts = None if n is None else [c.strip() for c in (n.split("+", 1) if "+" in n else (n, "0"))]
        if counts is not None and not all(c.isdigit() for c in counts):
            raise CogipError(f"checkpointing parts take block counts as {part}=N or {part}=N+M (whole blocks, then "
                             f"blocks whose MLP alone recomputes); got {part}={n}")
        blocks[part] = None if counts is None else (int(counts[0]), int(counts[1]))
    return blocks


def repeated_blocks(model, family: Family):
    """(name, block, part) for every repeated transformer block, PEFT's unused originals left out."""
    from transformers.modeling_layers import GradientCheckpointingLayer
    for name, module in model.named_modules():
        if ".original_module" in name:
            continue
        if isinstance(module, GradientCheckpointingLayer) or type(module).__name__ in UNCHECKPOINTABLE_BLOCKS:
            part = family.param_group(name + ".")
            yield name, module, "vision" if part == "projector" else part


def compile_blocks(model, family: Family, parts: str | Iterable[str] = "vision", dynamic: bool | None = None) -> int:
    """`torch.compile` the repeated blocks of `parts` (fuses their elementwise work: norms, rotary
    embeddings, activations); returns how many modules. Compilation happens on the first forward.

    A language block carries the KV cache while generating, whose changing length and Python state
    would recompile a compiled block at every decoding step; there only the stateless children (the
    MLP and the norms) are compiled, with dynamic shapes (one graph for prefill and decoding).
    `dynamic` is the vision blocks' `torch.compile(dynamic=...)`: None (static graphs first, dynamic ones
    on the first recompile) or True (dynamic from the first batch: one compile where image sizes vary)."""
    wanted = parse_parts(parts)
    if wanted:
        # The blocks' float attributes (norms' eps, attention scales) are constants. Traced as symbolic floats, a
        # LayerNorm's eps, which its kernel takes as a number, made dynamo restart its analysis of the frame and
        # trace it again (Mllama's vision blocks). Process-wide: dynamo reads it when it traces (the first forward).
        private.specialize_floats()
    n = 0
    for _, block, part in repeated_blocks(model, family):
        if part not in wanted:
            continue
        if part == "vision":
            block.compile(dynamic=dynamic)
            private.wrap_compiled_call(block, _unaliased_input)
            n += 1
            continue
        for child in block.children():
            if any(k in type(child).__name__ for k in STATELESS_CHILDREN):
                child.compile(dynamic=True)
                private.wrap_compiled_call(child, _as_rows)
                n += 1
    return n


def _as_rows(compiled):
    """`compiled` (an MLP or a norm: each row of the last dimension on its own) called, when scoring, on its one
    input flattened to [rows, features], the output shaped back. Prefill ([B, L, H]) and decoding ([B, 1, H])
    then share one graph: dynamo specializes a dimension of size 1, so decoding traced and compiled its own."""
    def call(*args, **kwargs):
        if (len(args) == 1 and not kwargs and torch.is_tensor(args[0]) and args[0].dim() > 2
                and not torch.is_grad_enabled()):
            x = args[0]
            # detached: not a view of x, whose sizes (the 1) dynamo would guard on; no gradients flow here anyway
            out = compiled(x.reshape(-1, x.shape[-1]).detach())
            return out.view(*x.shape[:-1], out.shape[-1])
        return compiled(*args, **kwargs)
    return call


def _unaliased_input(compiled):
    """`compiled` called with its hidden states (the first argument, or `hidden_states=`) made a tensor of
    their own where they are a view (one copy, before the compiled code). Dynamo guards on whether an input
    is a view and on its base: a first vision block gets a view (Qwen: the window-ordered patches), the
    others their predecessor's output, so the first block compiled graphs of its own (a second compile)."""
    is_view = lambda x: torch.is_tensor(x) and x._base is not None

    def call(*args, **kwargs):
        if args and is_view(args[0]):
            args = (args[0].clone(), *args[1:])
        elif is_view(kwargs.get("hidden_states")):
            kwargs["hidden_states"] = kwargs["hidden_states"].clone()
        return compiled(*args, **kwargs)
    return call


def graph_blocks(model, family: Family, parts: str | Iterable[str], mode: str | None = "reduce-overhead",
                 accumulate: bool = False) -> int:
    """For training: compile the repeated blocks of `parts` whole and replay them as CUDA graphs
    (`torch.compile(mode="reduce-overhead")`); returns how many. `mode=None` compiles them whole without
    graphs (measured slower for Llama; a benchmark variant). For parts whose step is host-bound:
    Llama-3.2-Vision's 40 LoRA language layers over ~150 tokens take the host longer to issue than the GPU
    to run (docs/performance.md). A graph replays for one input shape: the SFT collator pads
    sequence lengths to a multiple (`GRAPH_PAD_MULTIPLE`), so a run records a few. Not for blocks that are
    checkpointed, nor under ZeRO-3 or FSDP, whose gathered parameters move between steps (callers check).
    On a CPU the blocks are compiled without graphs. `accumulate`: gradients are accumulated over
    micro-batches, so the graphed blocks' parameter gradients are copied out of the graphs' outputs
    (`_graph_output_copy`); without accumulation each step's optimizer consumes them first."""
    wanted = parse_parts(parts, "graph parts")
    n = 0
    for _, block, part in repeated_blocks(model, family):
        if part in wanted:
            block.compile(mode=mode)
            if mode == "reduce-overhead" and accumulate:
                for p in block.parameters():
                    if p.requires_grad:
                        p.register_hook(_graph_output_copy)
            n += 1
    return n


def _graph_output_copy(grad: torch.Tensor) -> torch.Tensor | None:
    # A graphed block's parameter gradients are outputs of its CUDA graph, which the next replay overwrites.
    # Autograd keeps a first gradient as .grad itself, so with gradient accumulation the next micro-batch's
    # replay would overwrite it before it is added to: accumulate into a copy instead.
    return grad.clone() if grad.is_cuda else None


GRAPH_PAD_MULTIPLE = 64   # sequence lengths padded to this with graph_blocks: few shapes, little padding


def _norm_output_to_autocast_dtype(module, args, output):
    if isinstance(output, torch.Tensor) and output.dtype == torch.float32:
        device = output.device.type
        if torch.is_autocast_enabled(device):
            return output.to(torch.get_autocast_dtype(device))
    return None


def autocast_vision_norms(model, family: Family) -> int:
    """Cast the float32 outputs of the norms inside the vision blocks to autocast's dtype, once;
    returns how many norms. Under autocast with float32 master weights (one GPU, no DeepSpeed) a
    vision block's norms give float32 (CUDA's autocast runs LayerNorm in float32, and a float32 weight
    promotes RMSNorm's output), and every linear layer fed by it casts to bf16 on its own and saves its
    own copy for the backward: three for Mllama's and SigLIP's query, key and value, two for Qwen's gate
    and up projections. In these vision blocks the norms feed only linear layers, which would cast to
    the same values, so the forward is unchanged, and those copies are saved (an MLP-only checkpoint's
    input is halved too). The backward then sums the layers' input gradients in bf16 rather than float32,
    as bf16 training without autocast (DeepSpeed's) always does: a rounding-level change. Not for language
    blocks, where some norms feed residual sums (Gemma 3). Without autocast, or for bf16 outputs, nothing
    changes."""
    n = 0
    for _, block, part in repeated_blocks(model, family):
        if part != "vision":
            continue
        for child in block.children():
            if "Norm" in type(child).__name__ and not getattr(child, "_cogip_autocast_norm", False):
                child.register_forward_hook(_norm_output_to_autocast_dtype)
                child._cogip_autocast_norm = True
                n += 1
    return n


def zero3_leaf_blocks(model, family: Family) -> list[type]:
    """Make each repeated block one ZeRO-3 unit: its parameters are gathered together when it starts,
    instead of one hook and one all-gather per linear layer inside it (a Qwen-7B block with LoRA holds
    ~23 such modules, ~900 in all, met three times a step: forward, recomputation, backward). Returns
    the block classes marked. Call before DeepSpeed wraps the model."""
    classes = sorted({type(block) for _, block, _ in repeated_blocks(model, family)}, key=lambda c: c.__name__)
    from deepspeed.utils import set_z3_leaf_modules
    set_z3_leaf_modules(model, classes)
    return classes


def zero3_prefetch_blocks(ds_config: dict, model, family: Family) -> int | None:
    """Size ZeRO-3's prefetch bucket to the largest repeated block, where the config leaves it "auto":
    with blocks as leaf units (`zero3_leaf_blocks`), the next block's gather then runs whole behind the
    current block's compute. transformers' "auto" (0.9·hidden², 11.6M for Qwen-7B) is ~5% of a 233M-parameter
    decoder layer, so each block's gather waited in front of its compute. Returns the size set, or None."""
    zero = ds_config.get("zero_optimization", {})
    if zero.get("stage3_prefetch_bucket_size") != "auto":
        return None
    size = max(sum(getattr(p, "ds_numel", p.numel()) for p in block.parameters())   # partitioned: ds_numel
               for _, block, _ in repeated_blocks(model, family))
    zero["stage3_prefetch_bucket_size"] = size
    return size


def fsdp_wrap_blocks(plugin_args: dict, model, family: Family) -> list[str]:
    """Make each repeated block one FSDP2 unit (gathered when it starts, as `zero3_leaf_blocks` does for
    ZeRO-3) where the FSDP config names no classes; returns the class names set. `plugin_args` is
    `TrainingArguments.fsdp_plugin_args`, read when the Trainer builds its accelerator."""
    if plugin_args.get("auto_wrap_policy") != "TRANSFORMER_BASED_WRAP" or plugin_args.get("transformer_cls_names_to_wrap"):
        return []
    names = sorted({type(block).__name__ for _, block, _ in repeated_blocks(model, family)})
    plugin_args["transformer_cls_names_to_wrap"] = ",".join(names)
    return names


def apply_liger(model, config: dict | None = None) -> None:
    """Liger's fused Triton kernels (RMSNorm, LayerNorm, SwiGLU/GeGLU, RoPE) on a loaded model, before
    PEFT wraps it (PEFT's trained copies of the vision tower then inherit them). The soft-label loss
    needs logits, so Liger's fused linear cross-entropy stays off."""
    import importlib.util
    if importlib.util.find_spec("liger_kernel") is None:
        raise CogipError("Liger kernels asked for (--use_liger_kernel True) but liger-kernel is not installed: "
                         "pip install -e '.[gpu]', or --use_liger_kernel False")
    from transformers.integrations.liger import apply_liger_kernel
    apply_liger_kernel(model, {"fused_linear_cross_entropy": False, "cross_entropy": False, **(config or {})})


def _wrap(module: torch.nn.Module, kwargs: dict) -> None:
    if getattr(module, "_cogip_forward", None) is not None:
        return
    forward = module.forward
    module._cogip_forward = forward

    def checkpointed(*args, **kw):
        if getattr(module, "_cogip_checkpoint", False) and module.training and torch.is_grad_enabled():
            context_fn = getattr(module, "_cogip_context_fn", None)
            return checkpoint(forward, *args, use_reentrant=False, **kwargs,
                              **({"context_fn": context_fn} if context_fn else {}), **kw)
        return forward(*args, **kw)

    module.forward = checkpointed


def _block_mlp(block: torch.nn.Module) -> torch.nn.Module:
    mlp = getattr(block, "mlp", None)
    if not isinstance(mlp, torch.nn.Module):
        raise CogipError(f"{type(block).__name__} has no mlp to recompute alone; checkpoint its blocks whole")
    return mlp


def set_checkpointing(model, family: Family, parts: str | Iterable[str], kwargs: dict | None = None,
                      keep: str | Iterable[str] = "none") -> dict[str, int]:
    """Checkpoint the repeated blocks of `parts` only (all of a part's blocks, or as 'part=N[+M]' says,
    see `parse_part_blocks`), whole blocks keeping the outputs of `keep` (see KEEPABLE) from their
    forward; returns {part: blocks with any recomputation}.

    Along a part's blocks in forward order: first those recomputed whole, then those whose MLP alone
    recomputes, then those that keep everything. The backward frees the last blocks' activations first,
    so the blocks that keep most are freed before any recomputation. An MLP-only block keeps its
    attention's activations and drops the MLP's widest (its up projection and activation): for a
    Mllama vision layer about half the memory of keeping the block, while its recomputation, the up
    projection and activation alone (the recomputation stops before the down projection), is a small
    part of the block's forward.

    Call after `gradient_checkpointing_enable` (which the Trainer calls at the start of `train`) and
    after PEFT wrapping (so trained copies of the vision tower are the ones wrapped)."""
    from transformers.modeling_layers import GradientCheckpointingLayer
    wanted = parse_part_blocks(parts)
    kwargs = dict(kwargs or {})
    kwargs.pop("use_reentrant", None)   # blocks wrapped here recompute non-reentrant (as selective checkpointing needs)
    context_fn = keep_context(keep)
    blocks = list(repeated_blocks(model, family))
    have = Counter(part for _, _, part in blocks)
    for part, span in wanted.items():
        if span is not None and sum(span) > have[part]:
            asked = f"{part}={span[0]}" + (f"+{span[1]}" if span[1] else "")
            raise CogipError(f"checkpointing parts: {asked} asks for {sum(span)} blocks, "
                             f"but the model has {have[part]} {part} blocks")
    counts = {p: 0 for p in PARTS}
    seen = Counter()
    for _, block, part in blocks:
        span = wanted.get(part, (0, 0))   # None: every block whole
        whole, mlp_only = (have[part], 0) if span is None else span
        i = seen[part]
        seen[part] += 1
        on, mlp_on = i < whole, whole <= i < whole + mlp_only
        if isinstance(block, GradientCheckpointingLayer):
            if (on or mlp_on) and private.checkpoint_function(block) is None:
                raise CogipError("enable gradient checkpointing on the model before choosing its parts")
            block.gradient_checkpointing = on
            if on:   # transformers' own function (offloading included), with the kept ops on top
                plain = block.__dict__.setdefault("_cogip_plain_checkpoint_func", private.checkpoint_function(block))
                private.set_checkpoint_function(block, partial(plain, use_reentrant=False, context_fn=context_fn)
                                                if context_fn else plain)
        else:
            _wrap(block, kwargs)
            block._cogip_checkpoint = on
            block._cogip_context_fn = context_fn
        if mlp_on or hasattr(getattr(block, "mlp", None), "_cogip_forward"):   # on, or wrapped before: set either way
            mlp = _block_mlp(block)
            _wrap(mlp, kwargs)
            mlp._cogip_checkpoint = mlp_on
            mlp._cogip_context_fn = None
        counts[part] += on or mlp_on
    return counts
