"""Qwen2-VL / Qwen2.5-VL patch embedding as one matrix product.

The patch embedding is a Conv3d whose kernel equals its stride and each input is exactly one patch
([N, C, T, P, P] -> [N, E, 1, 1, 1]), i.e. a linear map of the flattened patch. torch 2.11 runs that
bf16 Conv3d as an implicit-GEMM fallback kernel: 17.7 ms for a batch of 32 images at 1024 visual
tokens on an H200, 1.2% of the benchmark loop's GPU time, for ~0.4 TFLOP that a GEMM does in about
a millisecond (docs/benchmarks.md). The same product as `F.linear` is exact up to summation order.

Only the Conv3d's `forward` is replaced, so its module hooks (DeepSpeed ZeRO-3 gathers its weight
there) and its parameters and state dict stay as they are.
"""

from __future__ import annotations

from types import MethodType

import torch
import torch.nn.functional as F
from torch import nn


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
