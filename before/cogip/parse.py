"""Read the label and the score out of a model's describe-then-predict answer.

Rules, in order:
- `<answer>…</answer>` tags are unwrapped (the GRPO format); anything else around them is ignored.
- The label is the dimension's label word that appears first (longest match wins, so
  "very low" is not read as "low"); an answer without one still parses if it has a score.
- The score is the first number after the label, or the first number if there is no label.
  Integers (`positive 2`) and negative numbers (`negative -2.000`) parse.
- No number, or a number outside the dimension's range, is a parse failure: it is recorded
  with its reason and never replaced by a made-up score.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from .dims import Dimension, get_dimension

_ANSWER_TAG = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.S | re.I)
_NUMBER = re.compile(r"(?<![\w.])[-+−]?\d+(?:\.\d+)?|(?<![\w.])[-+−]?\.\d+")


@dataclass
class ParsedAnswer:
    label: str | None
    score: float | None
    ok: bool
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _label_pattern(dim: Dimension) -> re.Pattern:
    words = sorted(dim.labels, key=len, reverse=True)
    return re.compile(r"\b(" + "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in words) + r")\b", re.I)


_LABEL_PATTERNS: dict[str, re.Pattern] = {}


def parse_answer(text: str | None, dimension: str | Dimension) -> ParsedAnswer:
    dim = dimension if isinstance(dimension, Dimension) else get_dimension(dimension)
    if text is None or not text.strip():
        return ParsedAnswer(None, None, False, "empty answer")
    tagged = _ANSWER_TAG.search(text)
    body = tagged.group(1) if tagged else text
    pattern = _LABEL_PATTERNS.setdefault(dim.name, _label_pattern(dim))
    found = pattern.search(body)
    label = " ".join(found.group(1).lower().split()) if found else None
    number = _NUMBER.search(body, found.end() if found else 0) or (found and _NUMBER.search(body))
    if not number:
        return ParsedAnswer(label, None, False, f"no score in answer {text.strip()[:60]!r}")
    score = float(number.group(0).replace("−", "-"))
    if not dim.in_range(score):
        return ParsedAnswer(label, None, False, f"score {score:g} outside [{dim.low:g}, {dim.high:g}]")
    return ParsedAnswer(label, score, True)
