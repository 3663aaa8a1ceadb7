"""The soft-label loss for describe-then-predict answers, shared by every family.

Over the supervised answer tokens (N of them):
- a regular token t gets cross-entropy  -log p(t);
- a digit token with true digit c gets  -Σ_k q_k log p(k)  with  q = (1-η)·onehot(c) + η·ψ_c,
  where k runs over the ten digit tokens and ψ_c is a proximity distribution over their values;
- total = (Σ regular + λ Σ numeric) / N.

The default is the published loss exactly: the kernel `published`, ψ_c(k) ∝ max_j|j−c| − |k−c| over
k = 0…9 (for c = 5: [0, 1, 2, 3, 4, 5, 4, 3, 2, 1] / 25; the published code's place weight 10^p
multiplies every distance and cancels in the normalisation), and only single-digit tokens are
digit tokens: Llama 3's multi-digit tokens (`577`) get plain cross-entropy, as they do there. The
published code calls this kernel "triangular" (accepted as an alias).

Options, each named for what it is:
- `narrow-triangle`: ∝ max(0, 1 − |k−c|/w), half-width w (`width`, default 2: the true digit weighs
  twice each neighbour and nothing further out gets mass);
- `gaussian`: ∝ exp(−|k−c|²/2w²);  `uniform`: 1/10 (the published code's "uniform" too);
- `multidigit=True`: soft labels on multi-digit tokens too, over all 10^k tokens of the same digit
  count, distances in units of their leading digit (577 vs 677 as far apart as 5 vs 6).

One difference from the published code that changes no value beyond rounding: it takes a full-
vocabulary log-softmax at every position in the model's dtype; here only supervised positions are
projected, in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

KERNELS = ("published", "narrow-triangle", "gaussian", "uniform")
ALIASES = {"triangular": "published"}   # the published code's name for its kernel


def kernel_name(kernel: str) -> str:
    name = ALIASES.get(kernel, kernel)
    if name not in KERNELS:
        raise ValueError(f"unknown soft-label kernel {kernel!r}; expected one of {', '.join(KERNELS)} "
                         f"(or 'triangular', the published code's name for 'published')")
    return name


def proximity(values: int, scale: float, kernel: str = "published", width: float = 2.0) -> torch.Tensor:
    """ψ as a [values, values] matrix: row v is the soft target around value v."""
    kernel = kernel_name(kernel)
    v = torch.arange(values, dtype=torch.float64)
    d = (v[:, None] - v[None, :]).abs() / scale
    if kernel == "published":
        w = d.amax(1, keepdim=True) - d
    elif kernel == "narrow-triangle":
        w = (1 - d / width).clamp(min=0)
    elif kernel == "gaussian":
        w = torch.exp(-0.5 * (d / width) ** 2)
    elif kernel == "uniform":
        w = torch.ones_like(d)
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
    def __init__(self, numbers: NumberTokens, eta: float = 0.15, lam: float = 2.0, kernel: str = "published",
                 width: float = 2.0, soft: bool = True, multidigit: bool = False):
        super().__init__()
        self.eta, self.lam, self.soft = eta, lam, soft
        classes = {k: ids for k, ids in numbers.classes.items() if multidigit or k == 1}
        length = numbers.length if multidigit else torch.where(numbers.length == 1, 1, 0)
        self.register_buffer("length", length, persistent=False)
        self.register_buffer("value", numbers.value, persistent=False)
        self.digit_counts = sorted(classes)
        for k, ids in classes.items():
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
