"""Expected mode's number: the score read from a model's probabilities over number tokens along its answer,
shared by the in-process scorer (the full distribution) and the server backend (the top log-probabilities).

Along the answer, each number token's distribution (over the number tokens of its digit count: single digits
for Qwen and Gemma, 1-3-digit tokens for Llama 3) gives an expected value; the score is
Σ E[token] · 10^position, its spread sqrt(Σ Var[token] · 10^(2·position)) (positions treated as independent).
The sign and the decimal point follow the answer as written.
"""

from __future__ import annotations

import math
from typing import Callable

from ..dims import Dimension


def read_number(tokens: list[str], digits: list[int], distribution: Callable, dim: Dimension
                ) -> tuple[float, float] | None:
    """(score, spread) of the first number in an answer, or None where it has no number token.
    `tokens`: the answer's token strings; `digits[i]`: the digit count of token i (0: not a number token);
    `distribution(i, k)`: (values, probabilities) tensors of the k-digit number tokens at step i."""
    start = next((i for i, k in enumerate(digits) if k > 0), None)
    if start is None:
        return None
    j, int_part, frac_part = start, [], []
    while j < len(tokens) and digits[j] > 0:
        int_part.append(j)
        j += 1
    if j < len(tokens) and tokens[j] == ".":
        j += 1
        while j < len(tokens) and digits[j] > 0:
            frac_part.append(j)
            j += 1
    mean = var = 0.0
    exponent = sum(digits[i] for i in int_part)
    for i in int_part + frac_part:
        k = digits[i]
        exponent -= k
        values, p = distribution(i, k)
        m = (p * values).sum().item()
        v = (p * values ** 2).sum().item() - m * m
        mean += m * 10.0 ** exponent
        var += max(v, 0.0) * 10.0 ** (2 * exponent)
    sign = -1.0 if start > 0 and tokens[start - 1].lstrip("Ġ▁ ").endswith("-") else 1.0
    return min(max(sign * mean, dim.low), dim.high), math.sqrt(var)
