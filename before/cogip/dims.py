"""The four CogIP-Bench dimensions: score ranges, label bins, answer format and prompts.

Bins are closed on the left and open on the right, as in every published target
(3.5 is `low`, 5.0 `medium`, 0.35 `low`); the top bin also holds the range's maximum
(10.0 is `very high`, Memorability 1.0 is `very high`).

Emotional Valence is published as `negative` [-3, -0.1), `neutral` [0, 0.1),
`positive` [1, 3.1), which leaves gaps (-0.1, 0) and [0.1, 1). Human scores are
integers, so only predictions land there; we give a gap score to the nearest bin,
splitting the gaps at their midpoints: score < -0.05 is negative, < 0.55 neutral,
otherwise positive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import CogipError


@dataclass(frozen=True)
class Dimension:
    name: str                       # folder and file name used by the bench, e.g. "Emotional_Valence"
    low: float                      # score range, inclusive
    high: float
    edges: tuple[float, ...]        # lower edges of bins 2..n (bin i is [edges[i-1], edges[i]))
    labels: tuple[str, ...]         # one label per bin, lowest first
    integer: bool = False           # human scores are whole numbers (valence)
    trait: str = ""                 # what a person judges, in a few words
    prompt: str = ""                # the project's describe-then-predict prompt
    short_prompt: str = ""          # a few words, for the synthetic bench and tiny models

    @property
    def span(self) -> float:
        return self.high - self.low

    def in_range(self, score: float) -> bool:
        return math.isfinite(score) and self.low <= score <= self.high

    def label_for(self, score: float) -> str:
        """The bin label of a score; raises CogipError for a score outside the range."""
        if not self.in_range(score):
            raise CogipError(f"{self.name} score {score} is outside [{self.low:g}, {self.high:g}]")
        for edge, label in zip(self.edges, self.labels):
            if score < edge:
                return label
        return self.labels[-1]

    def format_answer(self, score: float, label: str | None = None) -> str:
        """The describe-then-predict answer: `<label> <score with three decimals>`, the label that of the
        score as written (6.4997 is `high 6.500`, as a reader of the answer bins it)."""
        score = round(float(score), 3)
        return f"{label or self.label_for(score)} {score:.3f}"


def _bins_prompt(dim_name: str, trait: str, labels: tuple[str, ...], edges: tuple[float, ...], low: float,
                 high: float, example: str) -> str:
    bounds = (low, *edges, high)
    rules = "\n".join(f"- {lab}: {bounds[i]:g} <= score {'<=' if i == len(labels) - 1 else '<'} {bounds[i + 1]:g}"
                      for i, lab in enumerate(labels))
    return (f"Rate the {trait} of this image as people would perceive it ({dim_name}).\n"
            f"First give the label of the score's bin, then the score ({low:g} to {high:g}) "
            f"with exactly three decimals:\n{rules}\n"
            f"Answer with the label and the score only, e.g. \"{example}\".")


_FIVE = ("very low", "low", "medium", "high", "very high")

DIMENSIONS: dict[str, Dimension] = {}
for _d in (
    Dimension("Aesthetics", 0.0, 10.0, (3.5, 5.0, 6.5, 8.0), _FIVE, trait="aesthetic appeal",
              short_prompt="Aesthetics? label and score 0-10."),
    Dimension("Funniness", 0.0, 10.0, (3.5, 5.0, 6.5, 8.0), _FIVE, trait="funniness",
              short_prompt="Funniness? label and score 0-10."),
    Dimension("Emotional_Valence", -3.0, 3.0, (-0.05, 0.55), ("negative", "neutral", "positive"), integer=True,
              trait="emotional valence (how negative or positive it feels)",
              short_prompt="Valence? label and score -3 to 3."),
    Dimension("Memorability", 0.0, 1.0, (0.35, 0.5, 0.65, 0.8), _FIVE, trait="memorability",
              short_prompt="Memorability? label and score 0-1."),
):
    _example = _d.format_answer(_d.low + 0.57 * _d.span)
    if _d.integer:  # describe the published valence bins, not our gap split
        _rules = ("- negative: -3 to -1\n- neutral: 0\n- positive: 1 to 3")
        _prompt = (f"Rate the {_d.trait} of this image as people would perceive it ({_d.name}).\n"
                   f"First give the label, then the score (-3 to 3) with exactly three decimals:\n{_rules}\n"
                   f"Answer with the label and the score only, e.g. \"positive 2.000\".")
    else:
        _prompt = _bins_prompt(_d.name, _d.trait, _d.labels, _d.edges, _d.low, _d.high, _example)
    DIMENSIONS[_d.name] = Dimension(**{**_d.__dict__, "prompt": _prompt})

DIMENSION_NAMES: tuple[str, ...] = tuple(DIMENSIONS)
# Reward/metric normaliser: the width of each score range (10, 10, 6, 1).
SCORE_RANGE = {name: d.span for name, d in DIMENSIONS.items()}


def get_dimension(name: str) -> Dimension:
    """Look a dimension up by its bench name (case and `-`/space/`_` insensitive)."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    for dim in DIMENSIONS.values():
        if dim.name.lower() == key or (key == "valence" and dim.integer) or (key == "emotion" and dim.integer):
            return dim
    raise CogipError(f"unknown dimension {name!r}; expected one of {', '.join(DIMENSION_NAMES)}")
