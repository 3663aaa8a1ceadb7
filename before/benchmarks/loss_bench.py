"""Soft-label loss at real shapes: this project's loss vs a faithful re-implementation of the published
algorithm vs plain cross-entropy. Times forward+backward of lm_head + loss from the backbone's last
hidden states, and the extra memory each needs on top of its inputs.

    python benchmarks/loss_bench.py                 # GPU, real shapes (batch 4 x 1536, hidden 3584)
    python benchmarks/loss_bench.py --cpu-smoke     # tiny shapes on the CPU (CI: that it runs)
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from cogip.loss import NumberTokens, SoftLabelLoss, proximity

ANSWER = 8   # "medium 5.577<|im_end|>": label, space, 5 number tokens, end of turn


def make_case(batch, seq, hidden, vocab, digits, device, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden_states = (torch.randn(batch, seq, hidden, generator=g) * 0.5).to(device, dtype).requires_grad_()
    weight = (torch.randn(vocab, hidden, generator=g) * 0.02).to(device, dtype)   # lm_head: frozen in the recipe
    ids = torch.randperm(vocab - 1, generator=g)[:1110] + 1           # distinct ids for the number tokens
    length, value, classes = torch.zeros(vocab, dtype=torch.long), torch.zeros(vocab, dtype=torch.long), {}
    start = 0
    for k in digits:
        classes[k] = ids[start:start + 10 ** k]
        length[classes[k]], value[classes[k]] = k, torch.arange(10 ** k)
        start += 10 ** k
    numbers = NumberTokens(classes, length, value)
    labels = torch.full((batch, seq), -100, dtype=torch.long)
    for b in range(batch):   # answers at the end of each row: word, word, then numbers, then a word
        answer = [int(torch.randint(2000, vocab, (1,), generator=g)) for _ in range(2)]
        answer += [int(classes[1][torch.randint(0, 10, (1,), generator=g)]) for _ in range(ANSWER - 3)]
        answer += [int(torch.randint(2000, vocab, (1,), generator=g))]
        labels[b, seq - len(answer):] = torch.tensor(answer)
    return hidden_states, weight, labels.to(device), numbers


def ours(hidden_states, weight, labels, loss_fn):
    shifted = labels[:, 1:]
    keep = shifted != -100
    logits = hidden_states[:, :-1][keep] @ weight.T
    return loss_fn(logits, shifted[keep])[0]


def plain_ce(hidden_states, weight, labels, loss_fn):
    logits = hidden_states @ weight.T                               # full logits, as transformers computes them
    return F.cross_entropy(logits[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)


def published(hidden_states, weight, labels, loss_fn, eta=0.15, lam=2.0):
    return published_from_logits(hidden_states @ weight.T, labels, loss_fn, eta, lam)


def published_from_logits(logits, labels, loss_fn, eta=0.15, lam=2.0):
    """The published algorithm: full-vocabulary log-softmax in the model dtype over every position, then a
    Python loop over supervised tokens; each digit gets the published soft target over the 10 digit tokens
    (ψ ∝ max_j|j-c| - |k-c|: the published place weight 10^p cancels in its normalisation)."""
    logp = torch.log_softmax(logits, dim=-1)                        # model dtype, [B, T, V]
    digit_ids = loss_fn.ids1
    psi = proximity(10, 1, "published").to(logp.device, logp.dtype)
    total, count = 0.0, 0
    for b in range(labels.shape[0]):
        positions = (labels[b, 1:] != -100).nonzero().flatten().tolist()
        for p in positions:
            t = int(labels[b, p + 1])
            row = logp[b, p]
            if int(loss_fn.length[t]) == 1:
                v = int(loss_fn.value[t])
                q = torch.zeros_like(row)
                q[t] += 1 - eta
                q[digit_ids] += eta * psi[v]
                total = total - lam * (q * row).sum()
            else:
                total = total - row[t]
            count += 1
    return total / count


def measure(fn, args, device, reps):
    for _ in range(2):
        fn(*args).backward()
    hs = args[0]
    hs.grad = None
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    base = torch.cuda.memory_allocated() if device == "cuda" else 0
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(reps):
        hs.grad = None
        sync()
        t = time.perf_counter()
        loss = fn(*args)
        loss.backward()
        sync()
        times.append(time.perf_counter() - t)
    extra = (torch.cuda.max_memory_allocated() - base) if device == "cuda" else 0
    times.sort()
    return times[len(times) // 2], extra, float(loss.detach())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cpu-smoke", action="store_true")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--out")
    a = p.parse_args()
    device = "cpu" if a.cpu_smoke or not torch.cuda.is_available() else "cuda"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    cases = ([("qwen2.5-vl", 4, 1536, 3584, 152064, (1,)), ("llama-3.2", 4, 1536, 4096, 128256, (1, 2, 3)),
              ("gemma-3", 4, 1536, 3840, 262208, (1,))] if device == "cuda"
             else [("tiny", 2, 64, 32, 3000, (1, 2, 3))])
    rows = []
    for name, b, t, h, v, digits in cases:
        hs, w, labels, numbers = make_case(b, t, h, v, digits, device, dtype)
        loss_fn = SoftLabelLoss(numbers).to(device)
        res = {}
        for label, fn in (("ours", ours), ("published", published), ("plain_ce", plain_ce)):
            sec, extra, value = measure(fn, (hs, w, labels, loss_fn), device, a.reps if device == "cuda" else 2)
            res[label] = {"ms": sec * 1e3, "extra_gib": extra / 2 ** 30, "loss": value}
        rows.append({"case": name, "batch": b, "seq": t, "hidden": h, "vocab": v, **res,
                     "speedup_vs_published": res["published"]["ms"] / res["ours"]["ms"],
                     "memory_ratio_vs_published": (res["ours"]["extra_gib"] / res["published"]["extra_gib"]
                                                   if res["published"]["extra_gib"] else None)})
    device_name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"device: {device_name}  torch {torch.__version__}")
    print(f"{'case':<12}{'vocab':>8} | {'ours ms':>8}{'GiB':>7} | {'published ms':>13}{'GiB':>7} | {'plain CE ms':>12}{'GiB':>7}"
          f" | {'speedup':>8}{'mem ratio':>10}")
    for r in rows:
        o, pub, ce = r["ours"], r["published"], r["plain_ce"]
        ratio = r["memory_ratio_vs_published"]
        print(f"{r['case']:<12}{r['vocab']:>8} | {o['ms']:>8.2f}{o['extra_gib']:>7.3f} | {pub['ms']:>13.2f}"
              f"{pub['extra_gib']:>7.3f} | {ce['ms']:>12.2f}{ce['extra_gib']:>7.3f} | {r['speedup_vs_published']:>7.1f}x"
              f"{(f'{ratio:.3f}' if ratio is not None else '—'):>10}")
    if a.out:
        json.dump({"device": device_name, "torch": torch.__version__, "rows": rows}, open(a.out, "w"), indent=2)


if __name__ == "__main__":
    main()
