"""C-index vs lifelines, log-rank vs a hand implementation, KM stratification protocol."""

import numpy as np
import pytest
from lifelines import KaplanMeierFitter
from lifelines.utils import concordance_index
from scipy import stats as sps

from brainfm.stats import StatsInputError, cindex, km_risk_stratification, logrank
from brainfm.stats.bootstrap import Resampler
from brainfm.stats.metrics import prepare_metric


def _surv(rng, n):
    time = np.round(rng.exponential(300, n))  # rounded: tied times
    event = rng.integers(0, 2, n)
    risk = np.round(-np.log1p(time) + rng.normal(0, 1, n), 1)  # rounded: tied risks
    return time, event, risk


@pytest.mark.parametrize("seed", range(3))
def test_cindex_matches_lifelines_with_ties(seed):
    time, event, risk = _surv(np.random.default_rng(seed), 150)
    # lifelines scores agreement with survival times, so a risk enters negated
    assert cindex(time, event, risk) == pytest.approx(concordance_index(time, -risk, event), abs=1e-12)


def test_weighted_cindex_kernel_equals_lifelines_on_resamples():
    rng = np.random.default_rng(4)
    time, event, risk = _surv(rng, 80)
    w = next(Resampler(80, 12, seed=0, strata=event).chunks())
    got = prepare_metric("cindex", (time, event), risk)(w)
    for b in range(len(w)):
        idx = np.repeat(np.arange(80), w[b].astype(int))
        assert got[b] == pytest.approx(concordance_index(time[idx], -risk[idx], event[idx]), abs=1e-12)


def test_cindex_bad_inputs():
    with pytest.raises(StatsInputError, match="no comparable pairs"):
        cindex([1, 2, 3], [0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(StatsInputError, match="0 \\(censored\\)"):
        cindex([1, 2, 3], [0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(StatsInputError, match="length mismatch"):
        cindex([1, 2, 3], [0, 1], [0.1, 0.2, 0.3])


def _logrank_by_hand(time, event, group):
    """Two-group log-rank: sum over distinct event times of O - E and the hypergeometric variance."""
    g1 = group == group.max()
    o_minus_e, var = 0.0, 0.0
    for t in np.unique(time[event == 1]):
        at_risk = time >= t
        n, n1 = at_risk.sum(), (at_risk & g1).sum()
        d = ((time == t) & (event == 1)).sum()
        d1 = ((time == t) & (event == 1) & g1).sum()
        o_minus_e += d1 - d * n1 / n
        if n > 1:
            var += d * (n1 / n) * (1 - n1 / n) * (n - d) / (n - 1)
    chi2 = o_minus_e**2 / var
    return chi2, sps.chi2.sf(chi2, 1)


def test_logrank_matches_hand_implementation():
    rng = np.random.default_rng(5)
    time = np.round(np.r_[rng.exponential(200, 40), rng.exponential(400, 45)])
    event = rng.integers(0, 2, 85)
    group = np.r_[np.zeros(40), np.ones(45)]
    res = logrank(time, event, group)
    chi2, p = _logrank_by_hand(time, event, group)
    assert res.statistic == pytest.approx(chi2)
    assert res.p_value == pytest.approx(p)
    assert res.df == 1


def test_logrank_bad_inputs():
    with pytest.raises(StatsInputError, match="two non-empty groups"):
        logrank([1, 2, 3], [1, 0, 1], ["a", "a", "a"])
    with pytest.raises(StatsInputError, match="without any observed event"):
        logrank([1, 2, 3], [0, 0, 0], [0, 1, 1])
    with pytest.raises(StatsInputError, match="NaN"):
        logrank([1, np.nan, 3], [1, 0, 1], [0, 1, 1])


def test_km_stratification_uses_the_training_median():
    rng = np.random.default_rng(6)
    n = 120
    risk = rng.normal(size=n)
    time = rng.exponential(300 * np.exp(-risk))
    event = (rng.random(n) < 0.8).astype(int)
    train_risk = rng.normal(0.5, 1, 300)  # shifted: the threshold must not be the test median
    res = km_risk_stratification(train_risk, time, event, risk)
    assert res.threshold == pytest.approx(np.median(train_risk))
    high = risk > np.median(train_risk)
    np.testing.assert_array_equal(res.groups == "high", high)
    assert (res.n_high, res.n_low) == (high.sum(), (~high).sum())
    assert res.p_value == pytest.approx(logrank(time, event, high.astype(int)).p_value)
    assert res.p_value < 0.05  # risk drives the hazard
    med = KaplanMeierFitter().fit(time[high], event[high]).median_survival_time_
    assert res.median_high == pytest.approx(med)
    assert set(res.curves["group"]) == {"low", "high"}
    low = res.curves[res.curves["group"] == "low"]
    assert np.all(np.diff(low["survival"].to_numpy()) <= 0) and low["survival"].iloc[0] == 1.0


def test_km_single_group_is_reported_not_raised():
    res = km_risk_stratification([0.0, 0.0, 0.0], [10, 20, 30], [1, 1, 0], [-1.0, -2.0, -3.0])
    assert res.n_high == 0 and np.isnan(res.p_value)
    assert set(res.curves["group"]) == {"low"}
