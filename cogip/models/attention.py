"""Variable-length attention without flash-attn, for vision towers that attend within windows.

Without flash-attn, transformers runs Qwen2.5-VL's windowed vision attention as one SDPA call per
window in a Python loop: a batch of 32 images at 1024 visual tokens makes 2048 calls per layer.
Windows come in very few distinct lengths, so this groups sequences of equal length and runs one
batched SDPA call per length. It is registered under a name containing "flash" because that is
what makes transformers hand the vision attention its `cu_seqlens` instead of looping itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NAME = "flash_varlen_sdpa_cogip"
_PLANS: dict = {}


def _plan(cu_seqlens: torch.Tensor) -> list[tuple[torch.Tensor, int]]:
    """[(index tensor [n, L] of token positions, L)] per distinct sequence length L, cached by content."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()          # one host sync per call
    key = (tuple(lengths), str(cu_seqlens.device))
    if key not in _PLANS:
        if len(_PLANS) > 64:
            _PLANS.clear()
        starts = cu_seqlens[:-1].tolist()
        groups: dict[int, list[int]] = {}
        for s, n in zip(starts, lengths):
            groups.setdefault(n, []).append(s)
        _PLANS[key] = [(torch.tensor(ss, device=cu_seqlens.device)[:, None]
                        + torch.arange(n, device=cu_seqlens.device), n) for n, ss in groups.items() if n > 0]
    return _PLANS[key]


def varlen_sdpa(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0,
                cu_seq_lens_q=None, is_causal=False, **kwargs):
    """query/key/value [1, heads, total, dim] → ([1, total, heads, dim], None), like transformers' flash path."""
    if cu_seq_lens_q is None:
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, scale=scaling,
                                             is_causal=is_causal)
        return out.transpose(1, 2), None
    q, k, v = query[0], key[0], value[0]                              # [H, T, D]
    out = torch.empty_like(q)
    for idx, _ in _plan(cu_seq_lens_q):
        o = F.scaled_dot_product_attention(q[:, idx].transpose(0, 1), k[:, idx].transpose(0, 1),
                                           v[:, idx].transpose(0, 1), scale=scaling, is_causal=is_causal)
        out[:, idx] = o.transpose(0, 1)                               # [n, H, L, D] -> [H, n, L, D]
    return out.transpose(0, 1).unsqueeze(0), None


def use_varlen_vision_attention(model) -> bool:
    """Switch a model's vision tower to grouped varlen SDPA where it would loop per window; True if done."""
    from transformers import AttentionInterface
    vision = getattr(model.config, "vision_config", None)
    if vision is None or getattr(model.config, "model_type", "") not in ("qwen2_5_vl", "qwen2_vl"):
        return False
    if "flash" in str(getattr(vision, "_attn_implementation", "")):
        return False                                                  # real flash-attn already varlen
    AttentionInterface.register(NAME, varlen_sdpa)
    vision._attn_implementation = NAME
    return True
