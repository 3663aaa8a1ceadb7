"""The Qwen2.5-VL vision MLP (1280 -> 3420 -> 1280, biases, SiLU gate) at a batch of 32 images'
131072 patches, eager and compiled (static and dynamic shapes), at the real width 3420 and with the
weights zero-padded to 3424 as `cogip.models.vision_matmuls` runs it. Prints each variant's device
time per call, its kernels, and its largest difference from eager at 3420. Writes a JSON report.

    python benchmarks/mlp_pad_probe.py --out DIR      # GPU
    python benchmarks/mlp_pad_probe.py --cpu-smoke --out DIR   # CPU, 256 patches, float32: that it runs
"""
import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile


def mlp(x, wg, bg, wu, bu, wd, bd):
    return F.linear(F.silu(F.linear(x, wg, bg)) * F.linear(x, wu, bu), wd, bd)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--cpu-smoke", action="store_true")
    a = p.parse_args()
    torch.manual_seed(0)
    d, h, n = 1280, 3420, 131072
    dev, dt = "cuda", torch.bfloat16
    if a.cpu_smoke:
        n, dev, dt = 256, "cpu", torch.float32
    w = [torch.randn(h, d, device=dev, dtype=dt) * 0.02, torch.randn(h, device=dev, dtype=dt) * 0.02,
         torch.randn(h, d, device=dev, dtype=dt) * 0.02, torch.randn(h, device=dev, dtype=dt) * 0.02,
         torch.randn(d, h, device=dev, dtype=dt) * 0.02, torch.randn(d, device=dev, dtype=dt) * 0.02]
    pad = -h % 8
    wp = [F.pad(w[0], (0, 0, 0, pad)), F.pad(w[1], (0, pad)), F.pad(w[2], (0, 0, 0, pad)), F.pad(w[3], (0, pad)),
          F.pad(w[4], (0, pad)), w[5]]
    x_small = torch.randn(n // 4, d, device=dev, dtype=dt)   # a first, smaller shape, as the loop's first chunks
    x = torch.randn(n, d, device=dev, dtype=dt)
    variants = {f"eager {h}": (mlp, w), f"eager {h + pad} padded": (mlp, wp)}
    for dyn in (False, True):
        variants[f"compiled dynamic={dyn} {h}"] = (torch.compile(mlp, dynamic=dyn), w)
        variants[f"compiled dynamic={dyn} {h + pad} padded"] = (torch.compile(mlp, dynamic=dyn), wp)
    ref = mlp(x, *w)
    cuda = dev == "cuda"
    report = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__, "patches": n}
    for name, (fn, weights) in variants.items():
        with torch.no_grad():
            fn(x_small, *weights)
            for _ in range(3):
                out = fn(x, *weights)
            if cuda:
                torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
                for _ in range(5):
                    fn(x, *weights)
                if cuda:
                    torch.cuda.synchronize()
        own = (lambda e: e.self_device_time_total) if cuda else (lambda e: e.self_cpu_time_total)
        kernels = sorted(((e.key, own(e) / 5e3, e.count // 5) for e in prof.key_averages() if own(e) > 0),
                         key=lambda r: -r[1])
        total = sum(t for _, t, _ in kernels)
        diff = (out.float() - ref.float()).abs().max().item()
        report[name] = {"ms_per_call": round(total, 3), "max_abs_diff": diff,
                        "kernels": [[k, round(t, 3), c] for k, t, c in kernels[:6]]}
        print(f"== {name}: {total:.3f} ms per call, max |diff| vs eager {h} = {diff:.3g}")
        for k, t, c in kernels[:6]:
            print(f"   {t:8.3f} ms  {c}x  {k[:110]}")
    Path(a.out).mkdir(parents=True, exist_ok=True)
    Path(a.out, "mlp_pad_probe.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
