"""Probe: the Qwen2.5-VL vision MLP (1280 -> 3420 -> 1280, biases, SiLU gate) at a batch of 32 images'
131072 patches, eager and compiled, with the real width 3420 and with weights zero-padded to 3424.
Prints each variant's device time per call and its kernels. GPU only.

    python benchmarks/mlp_pad_probe.py
"""
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile


def mlp(x, wg, bg, wu, bu, wd, bd):
    return F.linear(F.silu(F.linear(x, wg, bg)) * F.linear(x, wu, bu), wd, bd)


def main():
    torch.manual_seed(0)
    d, h, n = 1280, 3420, 131072
    dev, dt = "cuda", torch.bfloat16
    w = [torch.randn(h, d, device=dev, dtype=dt) * 0.02, torch.randn(h, device=dev, dtype=dt) * 0.02,
         torch.randn(h, d, device=dev, dtype=dt) * 0.02, torch.randn(h, device=dev, dtype=dt) * 0.02,
         torch.randn(d, h, device=dev, dtype=dt) * 0.02, torch.randn(d, device=dev, dtype=dt) * 0.02]
    pad = 3424 - h
    wp = [F.pad(w[0], (0, 0, 0, pad)), F.pad(w[1], (0, pad)), F.pad(w[2], (0, 0, 0, pad)), F.pad(w[3], (0, pad)),
          F.pad(w[4], (0, pad)), w[5]]
    x_small = torch.randn(n // 4, d, device=dev, dtype=dt)
    x = torch.randn(n, d, device=dev, dtype=dt)
    variants = {"eager 3420": (mlp, w), "eager 3424 padded": (mlp, wp)}
    for dyn in (False, True):
        variants[f"compiled dynamic={dyn} 3420"] = (torch.compile(mlp, dynamic=dyn), w)
        variants[f"compiled dynamic={dyn} 3424 padded"] = (torch.compile(mlp, dynamic=dyn), wp)
    ref = mlp(x, *w)
    for name, (fn, weights) in variants.items():
        with torch.no_grad():
            fn(x_small, *weights)
            for _ in range(3):
                out = fn(x, *weights)
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    fn(x, *weights)
                torch.cuda.synchronize()
        kernels = sorted(((e.key, e.self_device_time_total / 5e3, e.count // 5) for e in prof.key_averages()
                          if e.self_device_time_total > 0), key=lambda r: -r[1])
        total = sum(t for _, t, _ in kernels)
        diff = (out.float() - ref.float()).abs().max().item()
        print(f"== {name}: {total:.3f} ms per call, max |diff| vs eager 3420 = {diff:.3g}")
        for k, t, c in kernels[:6]:
            print(f"   {t:8.3f} ms  {c}x  {k[:110]}")


if __name__ == "__main__":
    main()
