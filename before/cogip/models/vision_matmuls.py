"""Qwen2-VL / Qwen2.5-VL vision-tower matrix products in the shapes cuBLAS runs fast. Both rewrites
are exact up to summation order, keep the parameters, their shapes and the state dict as they are,
and were measured on an H200 (docs/benchmarks.md, seventh round).

Patch embedding. It is a Conv3d whose kernel equals its stride and each input is exactly one patch
([N, C, T, P, P] -> [N, E, 1, 1, 1]), i.e. a linear map of the flattened patch. torch 2.11 runs that
bf16 Conv3d as an implicit-GEMM fallback kernel: 17.7 ms for a batch of 32 images at 1024 visual
tokens, for ~0.4 TFLOP that a GEMM does in about a millisecond. Only the Conv3d's `forward` is
replaced, so its module hooks still run.

Gated MLP width. Qwen2.5-VL's vision MLP is 1280 -> 3420 -> 1280, and 3420 bf16 values are no
multiple of 16 bytes: eager cuBLAS falls back to slow unaligned kernels (14.9 ms per block at 131072
patches), and torch.compile pads the GEMMs itself but then adds each bias by a broadcast copy of the
[131072, 3424] output (6.7 ms). With the weights zero-padded to 3424 in the forward (F.pad: cheap,
and differentiable, so training is unchanged) cuBLAS adds the biases in its epilogue: 5.6 ms. The
padded columns are exact zeros (zero weights and biases), so they add nothing. Compiled, inductor
would bring back the broadcast copies, so a compiled block keeps the three linears whole: opaque ops
when a scorer compiles (`cogip::linear`), the MLP uncompiled (a graph break) when training.
"""

from __future__ import annotations

from types import MethodType

import torch
import torch.nn.functional as F
from torch import nn

from .attention import traced_for_scoring

ALIGN = 8   # bf16 elements in 16 bytes


def _one_patch_conv(self: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    if tuple(x.shape[1:]) != (self.in_channels, *self.kernel_size):   # not one patch per input: the conv itself
        return nn.Conv3d.forward(self, x)
    out = F.linear(x.reshape(x.shape[0], -1), self.weight.reshape(self.out_channels, -1), self.bias)
    return out.view(*out.shape, 1, 1, 1)


def use_matmul_patch_embed(model) -> int:
    """Run every vision patch embedding of the Qwen2-VL kind (`*PatchEmbed` with a Conv3d `proj` whose
    kernel is its stride, unpadded, ungrouped) as a matrix product; returns how many were switched."""
    switched = 0
    for module in model.modules():
        proj = getattr(module, "proj", None)
        if (type(module).__name__.endswith("PatchEmbed") and isinstance(proj, nn.Conv3d)
                and tuple(proj.kernel_size) == tuple(proj.stride) and proj.padding == (0, 0, 0)
                and proj.groups == 1 and proj.dilation == (1, 1, 1)):
            proj.forward = MethodType(_one_patch_conv, proj)
            switched += 1
    return switched


def _padded_gated_mlp(self, x: torch.Tensor, linear=None) -> torch.Tensor:
    linear = linear or F.linear
    pad = -self.gate_proj.out_features % ALIGN
    g, u, d = self.gate_proj, self.up_proj, self.down_proj

    def more_outputs(t):   # zero rows of a weight, zeros at the end of a bias
        return None if t is None else F.pad(t, (0, 0, 0, pad) if t.dim() == 2 else (0, pad))
    gate = linear(x, more_outputs(g.weight), more_outputs(g.bias))
    up = linear(x, more_outputs(u.weight), more_outputs(u.bias))
    return linear(self.act_fn(gate) * up, F.pad(d.weight, (0, pad)), d.bias)   # zero columns: more inputs


@torch.library.custom_op("cogip::linear", mutates_args=())
def opaque_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """F.linear that torch.compile leaves whole: cuBLAS adds the bias in its epilogue (see the module doc)."""
    return F.linear(x, weight, bias)


@opaque_linear.register_fake
def _(x, weight, bias):
    return x.new_empty(*x.shape[:-1], weight.shape[0])


_padded_gated_mlp_uncompiled = torch.compiler.disable(_padded_gated_mlp)


def _padded_gated_mlp_forward(self, x: torch.Tensor) -> torch.Tensor:
    # Traced for a compiled scorer, the linears are opaque ops, so the vision block is one graph (its tracing
    # is what a compiled loop's first batch waits for) with the gating fused; see traced_for_scoring
    if traced_for_scoring():
        return _padded_gated_mlp(self, x, linear=torch.ops.cogip.linear)
    return _padded_gated_mlp_uncompiled(self, x)


def pad_vision_mlps(model) -> int:
    """Give every gated MLP of a vision tower (gate/up/down `nn.Linear`s and `act_fn`) whose width is no
    multiple of 8 the zero-padded forward above; returns how many."""
    padded = 0
    for name, module in model.named_modules():
        projs = [getattr(module, p, None) for p in ("gate_proj", "up_proj", "down_proj")]
        if ("visual" in name.split(".") and all(type(p) is nn.Linear for p in projs)
                and hasattr(module, "act_fn") and projs[0].out_features % ALIGN):
            module.forward = MethodType(_padded_gated_mlp_forward, module)
            padded += 1
    return padded


def use_fast_vision_matmuls(model) -> int:
    """Both rewrites above where they apply; returns how many modules changed."""
    return use_matmul_patch_embed(model) + pad_vision_mlps(model)
