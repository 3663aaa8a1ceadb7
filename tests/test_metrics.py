
import pytest

from cogip.metrics import compute_metrics


def test_hand_checked_values():
    # ranks of pred 1,2,3,4 vs ref 1,3,2,4: d = 0,1,1,0 -> rho = 1 - 6*2/(4*15) = 0.8
    m = compute_metrics([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0], "Aesthetics",
                        pred_labels=["very low", "low", "very low", "low"])
    assert m["spearman"] == pytest.approx(0.8)
    assert m["pearson"] == pytest.approx(0.8)
    assert m["mae"] == pytest.approx(0.5) and m["mse"] == pytest.approx(0.5)
    assert m["n"] == 4 and m["parse_rate"] == 1.0
    assert m["label_accuracy"] == pytest.approx(0.75)   # ref 3.0 is "very low", not "low"


def test_parse_failures_excluded_and_counted():
    m = compute_metrics([None, 2.0, 3.0, None, 5.0], [9.0, 2.0, 3.0, 1.0, 5.5], "Funniness")
    assert m["n"] == 5 and m["n_parsed"] == 3 and m["parse_rate"] == pytest.approx(0.6)
    assert m["spearman"] == pytest.approx(1.0)
    assert m["mae"] == pytest.approx(0.5 / 3)


def test_bootstrap_ci_brackets_rho():
    import numpy as np
    rng = np.random.default_rng(1)
    ref = rng.normal(size=200)
    pred = ref + rng.normal(scale=1.0, size=200)
    m = compute_metrics(list(pred), list(ref), "Aesthetics")
    lo, hi = m["spearman_ci95"]
    assert lo < m["spearman"] < hi and 0.05 < hi - lo < 0.4


def test_constant_prediction_has_no_correlation():
    m = compute_metrics([5.0, 5.0, 5.0], [1.0, 2.0, 3.0], "Aesthetics")
    assert m["spearman"] is None and m["pearson"] is None and m["mae"] == pytest.approx(3.0)


def test_length_mismatch():
    with pytest.raises(ValueError):
        compute_metrics([1.0], [1.0, 2.0], "Aesthetics")
