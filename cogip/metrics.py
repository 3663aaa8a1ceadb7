"""Agreement between model scores and mean human scores, per dimension.

Spearman ρ is the headline. Items whose answer did not parse are left out of the
correlation and error terms and counted in `parse_rate`; `n` is every item scored.
"""

from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np

# scipy.stats is imported where it is used: importing it takes ~0.5 s, which every cog_test.sh would otherwise
# pay before its loop starts

from .dims import Dimension, get_dimension


def _nan_to_none(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _spearman_rows(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    """Spearman ρ of every resample at once (Pearson of average ranks, as `stats.spearmanr`): the
    bootstrap's 1000 resamples in a few array operations instead of 1000 calls."""
    from scipy import stats
    ra, rb = stats.rankdata(a, axis=axis), stats.rankdata(b, axis=axis)
    ra = ra - ra.mean(axis=axis, keepdims=True)
    rb = rb - rb.mean(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):   # a constant resample: ρ undefined (nan), as spearmanr
        return (ra * rb).sum(axis) / np.sqrt((ra * ra).sum(axis) * (rb * rb).sum(axis))


def spearman_ci(pred: np.ndarray, ref: np.ndarray, n_resamples: int = 1000, seed: int = 0,
                level: float = 0.95) -> tuple[float | None, float | None]:
    """Percentile bootstrap CI of Spearman ρ, resampling (pred, ref) pairs together."""
    if len(pred) < 3:
        return None, None
    from scipy import stats
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap((pred, ref), _spearman_rows, paired=True,
                              vectorized=True, n_resamples=n_resamples, confidence_level=level,
                              method="percentile", random_state=np.random.default_rng(seed))
    return _nan_to_none(res.confidence_interval.low), _nan_to_none(res.confidence_interval.high)


def compute_metrics(predictions: Sequence[float | None], references: Sequence[float],
                    dimension: str | Dimension, pred_labels: Sequence[str | None] | None = None,
                    n_resamples: int = 1000, seed: int = 0) -> dict:
    """Metrics for one dimension. A `None` prediction is a parse failure."""
    from scipy import stats
    dim = dimension if isinstance(dimension, Dimension) else get_dimension(dimension)
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    n = len(references)
    keep = [i for i, p in enumerate(predictions) if p is not None]
    pred = np.array([predictions[i] for i in keep], dtype=float)
    ref = np.array([references[i] for i in keep], dtype=float)
    out: dict = {"dimension": dim.name, "n": n, "n_parsed": len(keep), "parse_rate": len(keep) / n if n else None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant inputs: ρ is undefined, reported as None
        rho, p = stats.spearmanr(pred, ref) if len(keep) >= 2 else (math.nan, math.nan)
        r = stats.pearsonr(pred, ref)[0] if len(keep) >= 2 and np.ptp(pred) > 0 and np.ptp(ref) > 0 else math.nan
    lo, hi = spearman_ci(pred, ref, n_resamples, seed) if len(keep) >= 3 else (None, None)
    out.update(spearman=_nan_to_none(rho), spearman_p=_nan_to_none(p), spearman_ci95=[lo, hi],
               pearson=_nan_to_none(r),
               mae=float(np.mean(np.abs(pred - ref))) if len(keep) else None,
               mse=float(np.mean((pred - ref) ** 2)) if len(keep) else None)
    if pred_labels is not None:
        hits = [pred_labels[i] == dim.label_for(references[i]) for i in range(n)]
        out["label_accuracy"] = sum(hits) / n if n else None
    return out
