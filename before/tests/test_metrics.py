
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


def test_resampled_spearman_matches_scipy_row_by_row():
    # the bootstrap's vectorised statistic: ties (average ranks) and a constant resample (nan) as spearmanr
    import numpy as np
    from scipy import stats
    from cogip.metrics import _spearman_rows
    rng = np.random.default_rng(2)
    a = np.round(rng.uniform(0, 5, (50, 30)))
    b = np.round(a + rng.normal(0, 2, (50, 30)))
    a[7] = 3.0
    got = _spearman_rows(a, b)
    want = np.array([stats.spearmanr(x, y)[0] for x, y in zip(a, b)])
    assert np.isnan(got[7]) and np.isnan(want[7])
    np.testing.assert_allclose(np.delete(got, 7), np.delete(want, 7), rtol=0, atol=1e-12)
    assert len(np.unique(np.round(got[~np.isnan(got)], 6))) > 40   # real spread of values, not one repeated


def test_constant_prediction_has_no_correlation():
    m = compute_metrics([5.0, 5.0, 5.0], [1.0, 2.0, 3.0], "Aesthetics")
    assert m["spearman"] is None and m["pearson"] is None and m["mae"] == pytest.approx(3.0)


def test_length_mismatch():
    with pytest.raises(ValueError):
        compute_metrics([1.0], [1.0, 2.0], "Aesthetics")
