"""Paired tests and Holm against statsmodels/scipy, brute force and structural components."""

import itertools

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from brainfm.stats import (
    StatsInputError,
    delong_test,
    holm,
    mcnemar_exact,
    paired_ttest,
    sign_flip_test,
    t_interval,
)


@pytest.mark.parametrize("seed", range(5))
def test_mcnemar_matches_statsmodels_exact(seed):
    rng = np.random.default_rng(seed)
    a = rng.random(60) < 0.7
    b = rng.random(60) < 0.55
    ours = mcnemar_exact(a, b)
    table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
    ref = mcnemar(table, exact=True)
    assert ours.p_value == pytest.approx(ref.pvalue, abs=1e-12)
    assert ours.statistic == ref.statistic
    assert (ours.b, ours.c) == (table[0][1], table[1][0])


def test_mcnemar_no_discordant_pairs_and_bad_input():
    same = np.array([1, 0, 1, 1])
    assert mcnemar_exact(same, same).p_value == 1.0
    with pytest.raises(StatsInputError, match="0/1"):
        mcnemar_exact([0, 2], [0, 1])
    with pytest.raises(StatsInputError, match="length mismatch"):
        mcnemar_exact([0, 1], [0, 1, 1])


@pytest.mark.parametrize("seed", range(20))
def test_holm_matches_statsmodels_and_is_monotone_and_bounded(seed):
    rng = np.random.default_rng(seed)
    p = rng.random(rng.integers(1, 12)) ** 3
    adj = holm(p)
    np.testing.assert_allclose(adj, multipletests(p, method="holm")[1], atol=1e-12)
    assert np.all(adj >= p - 1e-15) and np.all(adj <= 1)
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= -1e-15)


def test_holm_keeps_nan_out_of_the_family():
    adj = holm([0.01, np.nan, 0.04])
    np.testing.assert_allclose(adj[[0, 2]], multipletests([0.01, 0.04], method="holm")[1])
    assert np.isnan(adj[1])
    with pytest.raises(StatsInputError, match=r"\[0, 1\]"):
        holm([0.5, 1.5])


def test_paired_ttest_matches_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(5, 2, 40), rng.normal(5.5, 2, 40)
    ours = paired_ttest(a, b)
    ref = sps.ttest_rel(a, b)
    assert ours.statistic == pytest.approx(ref.statistic)
    assert ours.p_value == pytest.approx(ref.pvalue)
    ci = ref.confidence_interval(0.95)
    assert (ours.ci_low, ours.ci_high) == pytest.approx((ci.low, ci.high))
    assert ours.mean_diff == pytest.approx(np.mean(a - b))


def test_paired_ttest_degenerate_cases():
    x = np.array([1.0, 2.0, 3.0])
    assert paired_ttest(x, x).p_value == 1.0
    assert paired_ttest(x + 1, x).p_value == 0.0
    with pytest.raises(StatsInputError, match="at least 2"):
        paired_ttest([1.0], [2.0])


def _brute_sign_flip(d):
    obs = abs(np.mean(d))
    stats = [abs(np.mean(np.array(s) * d)) for s in itertools.product([-1, 1], repeat=len(d))]
    return np.mean(np.array(stats) >= obs - 1e-12)


@pytest.mark.parametrize("n", [1, 5, 9, 12])
def test_sign_flip_exact_equals_brute_force_enumeration(n):
    d = np.random.default_rng(n).normal(0.4, 1, n)
    res = sign_flip_test(d)
    assert res.exact and res.n_perm == 2**n
    assert res.p_value == pytest.approx(_brute_sign_flip(d))


def test_sign_flip_monte_carlo_approximates_exact_and_is_seeded():
    d = np.random.default_rng(1).normal(0.5, 1, 14)
    exact = sign_flip_test(d).p_value
    mc = sign_flip_test(d, n_perm=20000, seed=3, exact_max_n=10)
    assert not mc.exact
    assert mc.p_value == pytest.approx(exact, abs=0.01)
    assert mc == sign_flip_test(d, n_perm=20000, seed=3, exact_max_n=10)
    # +1 correction: never zero even for an extreme effect
    assert sign_flip_test(np.full(30, 5.0), n_perm=100).p_value == pytest.approx(1 / 101)


def test_t_interval_matches_scipy():
    v = np.array([0.81, 0.79, 0.85, 0.88, 0.77])
    ours = t_interval(v)
    lo, hi = sps.t.interval(0.95, 4, loc=v.mean(), scale=sps.sem(v))
    assert (ours.low, ours.high) == pytest.approx((lo, hi))
    assert ours.sd == pytest.approx(v.std(ddof=1))
    with pytest.raises(StatsInputError, match="at least 2"):
        t_interval([0.5])


def _delong_brute(y, a, b):
    """Structural components by explicit pair comparison (DeLong 1988, eqs. for V10/V01)."""
    pos, neg = y == 1, y == 0
    out = []
    for s in (a, b):
        x, z = s[pos][:, None], s[neg][None, :]
        psi = (x > z) + 0.5 * (x == z)
        out.append((psi.mean(1), psi.mean(0)))
    v10 = np.vstack([o[0] for o in out])
    v01 = np.vstack([o[1] for o in out])
    s = np.cov(v10) / pos.sum() + np.cov(v01) / neg.sum()
    aucs = v10.mean(1)
    z = (aucs[0] - aucs[1]) / np.sqrt(s[0, 0] + s[1, 1] - 2 * s[0, 1])
    return aucs, z, 2 * sps.norm.sf(abs(z))


@pytest.mark.parametrize("ties", [False, True])
def test_delong_matches_brute_force_structural_components(ties):
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 120)
    a = y + rng.normal(size=120)
    b = 0.6 * y + rng.normal(size=120)
    if ties:
        a, b = np.round(a), np.round(b)
    res = delong_test(y, a, b)
    aucs, z, p = _delong_brute(y, a, b)
    assert (res.auc_a, res.auc_b) == pytest.approx(tuple(aucs))
    assert res.auc_a == pytest.approx(roc_auc_score(y, a))
    assert res.z == pytest.approx(z)
    assert res.p_value == pytest.approx(p)


def test_delong_identical_scores_and_bad_input():
    rng = np.random.default_rng(8)
    y = rng.integers(0, 2, 30)
    s = rng.normal(size=30)
    res = delong_test(y, s, s)
    assert res.delta == 0 and res.p_value == 1.0
    with pytest.raises(StatsInputError, match="binary"):
        delong_test(np.arange(30) % 3, s, s)
