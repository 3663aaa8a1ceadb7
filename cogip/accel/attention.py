"""Faster exact attention for the vision towers, without flash-attn.

Qwen2.5-VL — variable-length attention for windows:

Without flash-attn, transformers runs Qwen2.5-VL's windowed vision attention as one SDPA call per
window in a Python loop: a batch of 32 images at 1024 visual tokens makes 2048 calls per layer.
Windows come in very few distinct lengths, so this groups sequences of equal length and runs one
batched SDPA call per length. It is registered under a name containing "flash" because that is
what makes transformers hand the vision attention its `cu_seqlens` instead of looping itself.

Llama-3.2-Vision — padding pairs: Mllama's vision mask forbids only padding patches attending to
padding patches (an outer product of padding flags), yet it reaches SDPA as a dense additive
[L, L] bias, whose backward is slow and was the largest part of an 11B training step. Every
real patch attends to every patch, so one unmasked SDPA call is exact for all real rows; the few
padding rows are then recomputed over the real keys only.

Both are opaque to torch.compile, since each reads a plan on the host: a graph break when training
(autograd derives their backward), a custom op when a scorer compiles (`cogip::windowed_sdpa`,
`cogip::padpair_sdpa`), so that a compiled vision block is one graph, traced once.

When scoring on a GPU, flash's variable-length kernel takes both packed forms whole:
- Qwen's windows of mixed lengths (images of varied sizes), instead of a gather, an SDPA call and a scatter per
  window length;
- the language model's prefill of a padded batch. A padding mask sends SDPA from flash to its memory-efficient
  kernel; but each item's tokens are one contiguous run of its row, so the batch's rows laid end to end are
  segments (padding, tokens), causal within each: exact for every real token, with no copy (`packed_prefill_sdpa`).
On images of varied sizes, the gathers, scatters and memory-efficient attention these replace took 21% of a compiled
loop's kernel time (docs/performance.md).
"""

from __future__ import annotations

import functools
import weakref

import torch
import torch.nn.functional as F

from . import private

NAME = "flash_varlen_sdpa_cogip"
_PLANS: dict = {}


def _per_tensor(cache: list, tensor: torch.Tensor, compute):
    """compute(tensor), remembered for that tensor object: every layer of a forward gets the same
    cu_seqlens / mask tensor, so what needs a host sync to read is read once per forward, not per layer
    (each sync lets the GPU run dry while the host launches the next layer). Weak references: a freed
    tensor's entry goes dead instead of matching a new tensor at its address, and a 330 MB Mllama mask is
    not kept alive. The tensors are never written in place (transformers builds them once per forward)."""
    for ref, value in cache:
        if ref() is tensor:
            return value
    value = compute(tensor)
    cache.insert(0, (weakref.ref(tensor), value))
    del cache[8:]   # a few forwards in flight at once (the scorer's pipelined batches), two tensors each
    return value


_RECENT_PLANS: list = []


def _plan(cu_seqlens: torch.Tensor) -> int | list[tuple[torch.Tensor, int]]:
    """L when every sequence has length L (then they tile the tokens and plain views do); otherwise
    [(index tensor [n, L] of token positions, L)] per distinct length L. Cached by content (the
    index tensors) and per tensor object (the host sync)."""
    return _per_tensor(_RECENT_PLANS, cu_seqlens, _read_plan)


_RECENT_LONGEST: list = []


def _longest(cu_seqlens: torch.Tensor) -> int:
    """The longest sequence's length, all that flash's kernel needs of the plan: read once per tensor, without
    building `_plan`'s gather indices."""
    return _per_tensor(_RECENT_LONGEST, cu_seqlens, lambda cu: int((cu[1:] - cu[:-1]).max()))   # the host sync


def _read_plan(cu_seqlens: torch.Tensor):
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()          # the host sync
    key = (tuple(lengths), str(cu_seqlens.device))
    if key not in _PLANS:
        if len(_PLANS) > 64:
            _PLANS.clear()
        if len(set(lengths)) == 1 and lengths[0] > 0:
            _PLANS[key] = lengths[0]
        else:
            starts = cu_seqlens[:-1].tolist()
            groups: dict[int, list[int]] = {}
            for s, n in zip(starts, lengths):
                groups.setdefault(n, []).append(s)
            _PLANS[key] = [((torch.tensor(ss)[:, None] + torch.arange(n)).to(cu_seqlens.device), n)
                           for n, ss in groups.items() if n > 0]
            if cu_seqlens.is_cuda:   # shared with forwards on other streams: the copies must have landed
                torch.cuda.current_stream(cu_seqlens.device).synchronize()
    return _PLANS[key]


def varlen_sdpa(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0,
                cu_seq_lens_q=None, is_causal=False, **kwargs):
    """query/key/value [1, heads, total, dim] → ([1, total, heads, dim], None), like transformers' flash path."""
    if cu_seq_lens_q is None:
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, scale=scaling,
                                             is_causal=is_causal)
        return out.transpose(1, 2), None
    if not traced_for_scoring():
        return _windowed_sdpa(query, key, value, cu_seq_lens_q, scaling, is_causal), None
    return torch.ops.cogip.windowed_sdpa(query, key, value, cu_seq_lens_q, scaling, is_causal), None


def traced_for_scoring() -> bool:
    """Traced by torch.compile without gradients (a compiled scorer): there the vision tower's opaque parts
    run as custom ops, so a compiled block is one graph. Run eagerly they are the plain functions (no
    dispatch through the op); with gradients a graph break, whose backward autograd derives (a custom op
    would need one written)."""
    return torch.compiler.is_compiling() and not torch.is_grad_enabled()


def _windowed_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_seqlens: torch.Tensor,
                        scaling: float | None, is_causal: bool) -> torch.Tensor:
    """[1, H, T, D] → [1, T, H, D]. Scoring on a GPU: flash's variable-length kernel over all windows at once.
    Otherwise (with gradients, on the CPU): equal windows (same-size images) as plain views, no gather/scatter
    copies; mixed ones with one SDPA call per distinct window length, over the windows of that length gathered."""
    if not torch.is_grad_enabled() and flash_varlen_usable(query):   # scoring on a GPU: one call, no gathers
        q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))   # [T, H, D], views
        cu = cu_seqlens.to(torch.int32)
        return flash_varlen(q, k, v, cu, _longest(cu_seqlens), scaling, is_causal).unsqueeze(0)
    plan = _plan(cu_seqlens)
    _, heads, total, dim = query.shape
    # A new tensor, not a view, from either path below (with gradients, the graph break's; the path above returns a
    # view, but only as a custom op's output or uncompiled): a compiled block resumed after this guards on whether
    # its input is a view and on the view's base, and traced again when the path changed.
    out = query.new_empty(1, total, heads, dim)
    if isinstance(plan, int):
        q, k, v = (t[0].view(heads, total // plan, plan, dim).transpose(0, 1) for t in (query, key, value))
        o = F.scaled_dot_product_attention(q, k, v, scale=scaling, is_causal=is_causal)   # [n, H, L, D]
        out.view(total // plan, plan, heads, dim).copy_(o.transpose(1, 2))
        return out
    q, k, v = query[0], key[0], value[0]                              # [H, T, D]
    for idx, _ in plan:
        o = F.scaled_dot_product_attention(q[:, idx].transpose(0, 1), k[:, idx].transpose(0, 1),
                                           v[:, idx].transpose(0, 1), scale=scaling, is_causal=is_causal)
        out[0, idx] = o.transpose(1, 2)                               # [n, H, L, D] -> [n, L, H, D]
    return out


# Opaque whole to torch.compile, equal windows too. A compiled vision block guards on what it sees: the plan's
# caches, traced, change with every forward, and its index tensors with every new mix of image sizes; either
# recompiled the block up to dynamo's recompile limit. With the equal-length branch in view (until 2026-11-29),
# blocks compiled on a batch of same-size images traced again at the first batch of mixed sizes
# (docs/performance.md). As a graph break (training), dynamo splits the block around it and
# traces the pieces again from the start; as a custom op (scoring) the block is one graph, traced once: a
# compiled loop's first batch waits for tracing (docs/performance.md).
_windowed_sdpa = torch.compiler.disable(_windowed_attention)


@torch.library.custom_op("cogip::windowed_sdpa", mutates_args=())
def windowed_sdpa_op(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_seqlens: torch.Tensor,
                     scaling: float | None, is_causal: bool) -> torch.Tensor:
    return _windowed_attention(query, key, value, cu_seqlens, scaling, is_causal)


@windowed_sdpa_op.register_fake
def _(query, key, value, cu_seqlens, scaling, is_causal):
    _, heads, total, dim = query.shape
    return query.new_empty(1, total, heads, dim)


PADPAIR_NAME = "sdpa_padpairs_cogip"


_RECENT_MASKS: list = []


@torch.compiler.disable   # as _windowed_sdpa: traced, its per-forward cache would be guarded on
def _padding_rows(attention_mask: torch.Tensor):
    """(rows, row_pads [B, P], key_real [B, 1, 1, L]): the positions that are padding in some image, which
    of them pad in each image, and each image's real keys; () if nothing pads, None if an image has no
    real patch. Read from the mask's diagonal (a padding patch masks itself), once per mask."""
    return _per_tensor(_RECENT_MASKS, attention_mask, _read_padding_rows)


def _read_padding_rows(attention_mask: torch.Tensor):
    flags = attention_mask[:, 0].diagonal(dim1=-2, dim2=-1) < 0             # [B, L]
    host = flags.cpu()                                                       # the host sync
    if host.all(dim=1).any():
        return None
    rows = torch.nonzero(host.any(dim=0)).squeeze(1)
    if rows.numel() == 0:
        return ()
    rows = rows.to(attention_mask.device)
    return rows, flags[:, rows], ~flags[:, None, None, :]


def padpair_sdpa(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, **kwargs):
    """query/key/value [B, H, L, D], attention_mask [B, 1, L, L] additive (min where both patches pad)
    → ([B, L, H, D], None), like transformers' SDPA path."""
    if attention_mask is None or not traced_for_scoring():   # traced with gradients: a graph break (_padding_rows)
        return _padpair_attention(query, key, value, attention_mask, scaling), None
    return torch.ops.cogip.padpair_sdpa(query, key, value, attention_mask, scaling), None


def _padpair_attention(query, key, value, attention_mask, scaling):
    def sdpa(q, k, v, mask=None):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling)

    if attention_mask is None:
        return sdpa(query, key, value).transpose(1, 2).contiguous()
    plan = _padding_rows(attention_mask)
    if plan is None:                                                          # an empty media slot: keep the bias
        return sdpa(query, key, value, attention_mask.to(query.dtype)).transpose(1, 2).contiguous()
    # [B, L, H, D], exact for every real row; a copy of its own (never the SDPA output, which its backward keeps),
    # so the padding rows can be written in place
    out = sdpa(query, key, value).transpose(1, 2).clone(memory_format=torch.contiguous_format)
    if plan:
        rows, row_pads, key_real = plan
        # the few rows that pad somewhere, over each image's real keys: no copy of the keys or values
        o = sdpa(query[:, :, rows], key, value, key_real).transpose(1, 2)   # [B, P, H, D]
        out[:, rows] = torch.where(row_pads[:, :, None, None], o, out[:, rows])
    return out


@torch.library.custom_op("cogip::padpair_sdpa", mutates_args=())
def padpair_sdpa_op(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor,
                    scaling: float | None) -> torch.Tensor:
    return _padpair_attention(query, key, value, attention_mask, scaling)


@padpair_sdpa_op.register_fake
def _(query, key, value, attention_mask, scaling):
    batch, heads, length, dim = query.shape
    return query.new_empty(batch, length, heads, dim)


def use_fast_vision_attention(model) -> bool:
    """Switch a model's vision tower to the exact faster attention above, where one applies; True if done."""
    from transformers import AttentionInterface
    vision = getattr(model.config, "vision_config", None)
    model_type = getattr(model.config, "model_type", "")
    if vision is None or "flash" in str(private.attn_implementation(vision) or ""):
        return False                                                  # real flash-attn: already varlen
    if model_type in ("qwen2_5_vl", "qwen2_vl"):
        AttentionInterface.register(NAME, varlen_sdpa)
        return private.set_attn_implementation(vision, NAME)
    if model_type == "mllama" and private.attn_implementation(vision) in ("sdpa", None):
        AttentionInterface.register(PADPAIR_NAME, padpair_sdpa)
        return private.set_attn_implementation(vision, PADPAIR_NAME)
    return False


def flash_varlen_usable(query: torch.Tensor) -> bool:
    """Whether flash's variable-length kernel takes this query: a GPU that has it, a half dtype, a head size it
    supports, and flash not switched off (`allow_sdpa_backends`, torch's `sdpa_kernel`)."""
    return (query.is_cuda and query.dtype in (torch.float16, torch.bfloat16) and query.shape[-1] % 8 == 0
            and query.shape[-1] <= 256 and torch.backends.cuda.flash_sdp_enabled()
            and private.has_flash_forward() and _has_flash(query.device.index))


@functools.lru_cache(maxsize=None)
def _has_flash(device_index: int) -> bool:
    return torch.cuda.get_device_capability(device_index) >= (8, 0)


def flash_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, longest: int,
                 scaling: float | None, is_causal: bool) -> torch.Tensor:
    """Attention of each segment [cu[i], cu[i+1]) of the rows to itself: q [T, H, D], k/v [T, H_kv, D] (H_kv
    dividing H), cu_seqlens int32 on the device, `longest` at least the longest segment → [T, H, D]. The kernel
    SDPA runs for unmasked attention (flash), one launch for all the segments (torch's private op, stable since 2.2)."""
    return private.flash_attention_forward(q, k, v, cu_seqlens, longest, scaling, is_causal)


PACKED_PREFILL_NAME = "sdpa_packed_prefill_cogip"
_RECENT_RUNS: list = []


def _token_runs(mask: torch.Tensor):
    """(cu_seqlens, longest) packing a padded causal batch, or None where its mask is anything else.
    mask: SDPA's boolean [B, 1, L, L] (True: attend). Packed means: in each row the real tokens are one run
    [s, s + n) (padding at either end or both); each real query attends exactly to the real keys at or before it.
    Then the rows laid end to end split into segments (padding, tokens, padding), causal within each: exact for
    every real query. Padding queries attend among themselves, finite and unread. One host read per mask."""
    return _per_tensor(_RECENT_RUNS, mask, _read_token_runs)


def _read_token_runs(mask: torch.Tensor):
    if mask.dtype != torch.bool or mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[-1] != mask.shape[-2]:
        return None
    batch, length = mask.shape[0], mask.shape[-1]
    mask = mask[:, 0]
    real = mask.any(dim=1)                                           # [B, L] keys some query attends to
    count = real.sum(dim=1)
    start = real.int().argmax(dim=1)                                 # the first real token
    pos = torch.arange(length, device=mask.device)
    run = (pos >= start[:, None]) & (pos < (start + count)[:, None])   # [B, L]
    causal = pos[:, None] >= pos[None, :]
    expected = causal & run[:, None, :]                             # real query i: real keys j <= i
    ok = (real == run).all() & (count > 0).all() & ((mask == expected) | ~run[:, :, None]).all()
    host = torch.cat([ok.long().view(1), start.long(), count.long()]).cpu()   # the host sync
    if not host[0]:
        return None
    starts, counts = host[1:batch + 1].tolist(), host[batch + 1:].tolist()
    cu, longest = [0], 0
    for i, (s, n) in enumerate(zip(starts, counts)):
        for end in (i * length + s, i * length + s + n, (i + 1) * length):   # padding, tokens, padding
            if end > cu[-1]:
                longest = max(longest, end - cu[-1])
                cu.append(end)
    return torch.tensor(cu, dtype=torch.int32).to(mask.device, non_blocking=True), longest


def packed_prefill_sdpa(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0, **kwargs):
    """transformers' SDPA attention, except for the prefill of a padded batch on a GPU (`_token_runs`): there,
    flash's variable-length kernel over the batch's rows end to end. query [B, H, L, D], key/value [B, H_kv, L, D]
    → ([B, L, H, D], None), as SDPA's path returns."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    batch, heads, length, dim = query.shape
    if (attention_mask is not None and length > 1 and key.shape[2] == length and dropout == 0.0
            and kwargs.get("sliding_window") is None and flash_varlen_usable(query)
            and attention_mask.shape[0] == batch and attention_mask.shape[-2:] == (length, length)):
        runs = _token_runs(attention_mask)
        if runs is not None:
            cu, longest = runs
            q, k, v = (t.transpose(1, 2).reshape(batch * length, t.shape[1], dim) for t in (query, key, value))
            out = flash_varlen(q, k, v, cu, longest, scaling, True)
            return out.view(batch, length, heads, dim), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  **kwargs)


def use_packed_prefill(model) -> bool:
    """Switch a model's language attention to `packed_prefill_sdpa` (with SDPA's masks), where its language
    mask is plain causal with padding (Qwen2-VL, Qwen2.5-VL); True if done. Gemma 3's images attend both ways
    and Mllama's prompts are short (its images enter through cross-attention): left as they are."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    text = model.config.get_text_config()
    if getattr(model.config, "model_type", "") not in ("qwen2_5_vl", "qwen2_vl") or private.attn_implementation(text) != "sdpa":
        return False
    AttentionInterface.register(PACKED_PREFILL_NAME, packed_prefill_sdpa)
    AttentionMaskInterface.register(PACKED_PREFILL_NAME, sdpa_mask)
    return private.set_attn_implementation(text, PACKED_PREFILL_NAME)


SDPA_BACKENDS = {"cudnn": torch.backends.cuda.enable_cudnn_sdp, "flash": torch.backends.cuda.enable_flash_sdp,
                 "efficient": torch.backends.cuda.enable_mem_efficient_sdp}


def allow_sdpa_backends(spec: str) -> list[str]:
    """Restrict torch's SDPA to some fused kernels, process-wide: "auto" (torch's choice, all of them) or
    a comma list of cudnn, flash, efficient. The unfused math kernel stays as the fallback for what the
    fused ones do not take. Returns the fused kernels allowed. The choice is exact: every kernel computes
    the same attention, to rounding."""
    from ..errors import CogipError
    names = list(SDPA_BACKENDS) if spec.strip() == "auto" else [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in SDPA_BACKENDS]
    if unknown or not names:
        raise CogipError(f"SDPA backends must be 'auto' or a comma list of {', '.join(SDPA_BACKENDS)}, not {spec!r}")
    for name, enable in SDPA_BACKENDS.items():
        enable(name in names)
    torch.backends.cuda.enable_math_sdp(True)
    return names
