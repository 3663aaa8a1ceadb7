"""The soft-label loss for describe-then-predict answers, shared by every family.

Over the supervised answer tokens (N of them):
- a regular token t gets cross-entropy  -log p(t);
- a number token with value v gets  -Σ_j q_j log p(j)  with  q = (1-η)·onehot(v) + η·ψ_v,
  where j runs over the number tokens of the same digit count and ψ_v is a proximity
  distribution over their values;
- total = (Σ regular + λ Σ numeric) / N.

Number tokens are whatever the tokenizer has: single digits for Qwen2 and Gemma 3, and the
1-, 2- and 3-digit tokens of Llama 3 (`577` is one token: its soft target spreads over all
1000 three-digit tokens). Distance between two k-digit values is measured in units of their
leading digit, 10^(k-1), so 577 vs 677 is as far apart as 5 vs 6.

ψ kernels (rows normalised to 1): `triangular` (as published) ∝ max(0, 1 - d/w) with half-width
w (default 2: the true value weighs twice each neighbour); `gaussian` ∝ exp(-d²/2w²); `uniform`.

Deviations from the published loss: the published code weighs each digit position by 10^p before
normalising by the sum of those weights — a common factor per answer that the normalisation
cancels, so it is left out; it also computes a full-vocabulary log-softmax over every position in
the model dtype, here only supervised positions are projected (fp32 log-softmax), and it gives
multi-digit tokens no soft label at all, here they get one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

KERNELS = ("triangular", "gaussian", "uniform")


def proximity(values: int, scale: float, kernel: str = "triangular", width: float = 2.0) -> torch.Tensor:
    """ψ as a [values, values] matrix: row v is the soft target around value v."""
    v = torch.arange(values, dtype=torch.float64)
    d = (v[:, None] - v[None, :]).abs() / scale
    if kernel == "triangular":
        w = (1 - d / width).clamp(min=0)
    elif kernel == "gaussian":
        w = torch.exp(-0.5 * (d / width) ** 2)
    elif kernel == "uniform":
        w = torch.ones_like(d)
    else:
        raise ValueError(f"unknown kernel {kernel!r}; expected one of {KERNELS}")
    return (w / w.sum(1, keepdim=True)).float()


@dataclass
class NumberTokens:
    """The tokenizer's number tokens: for each digit count k, the ids of `0…0`…`9…9` in value order."""
    classes: dict[int, torch.Tensor]     # k -> LongTensor [10**k] of token ids
    length: torch.Tensor                 # [V] digit count of each token id, 0 for non-number tokens
    value: torch.Tensor                  # [V] numeric value of each number token

    @classmethod
    def from_tokenizer(cls, tokenizer, vocab_size: int | None = None, max_digits: int = 3) -> "NumberTokens":
        vocab = tokenizer.get_vocab()
        size = max(vocab_size or 0, max(vocab.values()) + 1)
        length = torch.zeros(size, dtype=torch.long)
        value = torch.zeros(size, dtype=torch.long)
        classes = {}
        for k in range(1, max_digits + 1):
            ids = [vocab.get(str(v).zfill(k)) for v in range(10 ** k)]
            if all(i is not None for i in ids):   # only complete classes: a partial one gets plain CE
                classes[k] = torch.tensor(ids)
                length[classes[k]] = k
                value[classes[k]] = torch.arange(10 ** k)
        return cls(classes, length, value)


class SoftLabelLoss(torch.nn.Module):
    def __init__(self, numbers: NumberTokens, eta: float = 0.15, lam: float = 2.0, kernel: str = "triangular",
                 width: float = 2.0, soft: bool = True):
        super().__init__()
        self.eta, self.lam, self.soft = eta, lam, soft
        self.register_buffer("length", numbers.length, persistent=False)
        self.register_buffer("value", numbers.value, persistent=False)
        self.digit_counts = sorted(numbers.classes)
        for k, ids in numbers.classes.items():
            self.register_buffer(f"ids{k}", ids, persistent=False)
            self.register_buffer(f"psi{k}", proximity(10 ** k, 10 ** (k - 1), kernel, width), persistent=False)

    def target_distribution(self, targets: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """Dense q [N, V] for inspection and tests (training never builds it)."""
        q = torch.nn.functional.one_hot(targets, vocab_size).float()
        if not self.soft:
            return q
        for k in self.digit_counts:
            is_k = self.length[targets] == k
            soft = torch.zeros_like(q)
            soft[:, getattr(self, f"ids{k}")] = getattr(self, f"psi{k}")[torch.where(is_k, self.value[targets], 0)]
            q = torch.where(is_k[:, None], (1 - self.eta) * q + self.eta * soft, q)
        return q

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """logits [N, V] at the supervised positions, targets [N] → (total, regular sum, numeric sum)."""
        logp = F.log_softmax(logits.float(), dim=-1)
        nll = -logp.gather(1, targets[:, None]).squeeze(1)
        if not self.soft:
            return nll.mean(), nll.sum(), nll.new_zeros(())
        length = self.length[targets]
        numeric = torch.zeros_like(nll)
        for k in self.digit_counts:   # at most three classes; each one vectorised over all N tokens
            is_k = length == k
            row = torch.where(is_k, self.value[targets], 0)             # other tokens read row 0, unused
            psi = getattr(self, f"psi{k}")[row]                         # [N, 10**k]
            soft = -(psi * logp[:, getattr(self, f"ids{k}")]).sum(1)
            numeric = torch.where(is_k, (1 - self.eta) * nll + self.eta * soft, numeric)
        is_number = length > 0
        regular_sum = torch.where(is_number, 0.0, nll).sum()
        numeric_sum = torch.where(is_number, numeric, 0.0).sum()
        total = (regular_sum + self.lam * numeric_sum) / max(targets.numel(), 1)
        return total, regular_sum, numeric_sum
