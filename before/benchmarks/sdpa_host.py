"""Host and device time of one attention call (forward + backward) per SDPA backend, on every GPU.

A 2-GPU ZeRO-3 profile showed rank 1 spending ~9 ms (forward) and ~21 ms (backward) of host time in
each cuDNN attention call, and rank 0 ~0.1 ms: this separates the backends, the devices and the
masks, at the shapes of the Qwen2.5-VL-7B training step (language model: 4 samples of ~1445 tokens,
28 heads of 128, causal, with and without a padding mask; vision: the windowed layers of 4 images of
1008 px, 4 x 81 windows of 64 patches x 16 heads of 80, no mask).

    python benchmarks/sdpa_host.py --out DIR
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION}


def case_tensors(case: str, device, padded: bool):
    if case == "language":
        b, h, length, d = 4, 28, 1445, 128
    else:
        b, h, length, d = 4 * 81, 16, 64, 80   # 72x72 patches of 14 px per image, in windows of 8x8
    q, k, v = (torch.randn(b, h, length, d, device=device, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    mask = None
    if padded:   # left padding of a few tokens in all but the longest sample, causal inside
        keep = torch.ones(b, length, dtype=torch.bool, device=device)
        for i in range(1, b):
            keep[i, : 7 * i] = False
        causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
        mask = causal[None, None] & keep[:, None, None, :]
    return q, k, v, mask


def time_calls(q, k, v, mask, causal: bool, backend, reps: int):
    host, total = [], []
    grad = torch.randn_like(q)
    for _ in range(reps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        with sdpa_kernel([backend]):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None)
            out.backward(grad)
        host.append(time.perf_counter() - t)
        torch.cuda.synchronize()
        total.append(time.perf_counter() - t)
    return {"host_ms": round(1e3 * statistics.median(host[2:]), 3), "first_host_ms": round(1e3 * host[0], 1),
            "wall_ms": round(1e3 * statistics.median(total[2:]), 3)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--reps", type=int, default=10)
    a = p.parse_args()
    results = {"torch": torch.__version__, "cudnn": torch.backends.cudnn.version(), "devices": {}}
    for index in range(torch.cuda.device_count()):
        torch.cuda.set_device(index)
        device = torch.device("cuda", index)
        rows = {}
        for case, padded in (("language", True), ("language", False), ("vision", False)):
            q, k, v, mask = case_tensors(case, device, padded)
            for name, backend in BACKENDS.items():
                tag = f"{case}{'_padded' if padded else ''}_{name}"
                try:
                    rows[tag] = time_calls(q, k, v, mask, case == "language", backend, a.reps)
                except RuntimeError as e:   # a backend that does not take this case
                    rows[tag] = {"error": str(e).splitlines()[0][:200]}
                print(index, tag, rows[tag], flush=True)
        results["devices"][f"{index}: {torch.cuda.get_device_name(index)}"] = rows
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "sdpa_host.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
