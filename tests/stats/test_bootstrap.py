"""Bootstrap intervals and the paired bootstrap test: determinism, resampling design, coverage."""

import numpy as np
import pytest
from scipy.stats import norm
from sklearn import metrics as skm

from brainfm.stats import (
    Resampler,
    StatsInputError,
    bootstrap_ci,
    bootstrap_p_value,
    paired_bootstrap,
)


def _binary_data(rng, n=150):
    y = rng.integers(0, 2, n)
    a = y + rng.normal(size=n)
    b = 0.5 * y + rng.normal(size=n)
    return y, a, b


def test_paired_bootstrap_is_deterministic_for_a_seed_and_changes_with_it():
    y, a, b = _binary_data(np.random.default_rng(0))
    r1 = paired_bootstrap(y, a, b, "auc", n_boot=300, seed=5)
    r2 = paired_bootstrap(y, a, b, "auc", n_boot=300, seed=5)
    r3 = paired_bootstrap(y, a, b, "auc", n_boot=300, seed=6)
    assert r1 == r2
    assert r1.ci != r3.ci
    assert r1.delta == pytest.approx(skm.roc_auc_score(y, a) - skm.roc_auc_score(y, b))


def test_named_metric_and_callable_see_the_same_resamples():
    """The vectorised kernel and sklearn on materialised resamples give identical distributions."""
    rng = np.random.default_rng(1)
    y, a, b = _binary_data(rng, 60)
    fast = paired_bootstrap(y, a, b, "auc", n_boot=80, seed=3)
    slow = paired_bootstrap(y, a, b, skm.roc_auc_score, n_boot=80, seed=3, strata=y)
    assert fast.ci == pytest.approx(slow.ci, abs=1e-12)
    assert fast.p_value == slow.p_value
    ci_fast = bootstrap_ci(y, a, "auc", n_boot=80, seed=3)
    ci_slow = bootstrap_ci(y, a, skm.roc_auc_score, n_boot=80, seed=3, strata=y)
    assert (ci_fast.low, ci_fast.high, ci_fast.sd) == pytest.approx((ci_slow.low, ci_slow.high, ci_slow.sd))


def test_stratified_resamples_keep_class_sizes_and_unstratified_do_not():
    y = np.array([0] * 30 + [1] * 10)
    strat = np.vstack(list(Resampler(40, 100, seed=0, strata=y).chunks()))
    assert np.all(strat[:, y == 0].sum(1) == 30) and np.all(strat[:, y == 1].sum(1) == 10)
    free = np.vstack(list(Resampler(40, 100, seed=0).chunks()))
    assert np.all(free.sum(1) == 40)
    assert len(np.unique(free[:, y == 1].sum(1))) > 1


def test_cluster_resampling_moves_whole_subjects():
    groups = np.repeat(np.arange(12), 3)  # 12 subjects x 3 sessions
    y = np.repeat(np.arange(12) % 2, 3)
    w = next(Resampler(36, 50, seed=0, strata=y, groups=groups).chunks())
    per_session = w.reshape(50, 12, 3)
    assert np.all(per_session == per_session[:, :, :1])  # sessions of a subject share their count
    assert np.all(per_session[:, :, 0].sum(1) == 12)  # 12 subjects drawn per resample
    assert np.all(per_session[:, 0::2, 0].sum(1) == 6)  # stratified at subject level


def test_chunked_resampling_is_exact_counts():
    res = Resampler(7, 1000, seed=2)
    ws = np.vstack(list(res.chunks()))
    assert ws.shape == (1000, 7)
    assert np.all(ws == np.rint(ws)) and np.all(ws.sum(1) == 7)
    # each item is drawn Binomial(7, 1/7) times: mean 1
    assert ws.mean() == pytest.approx(1.0, abs=0.05)


def test_p_value_definition():
    assert bootstrap_p_value(np.array([0.1, 0.2, 0.3, -0.1])) == pytest.approx(0.5)  # 2 * 1/4
    assert bootstrap_p_value(np.array([0.1, 0.2, 0.3])) == 0.0
    assert bootstrap_p_value(np.zeros(10)) == 1.0  # capped
    assert bootstrap_p_value(np.array([0.0, 1.0, 2.0, 3.0])) == pytest.approx(0.5)  # zero counts on both sides


def test_identical_predictions_give_zero_delta_and_p_one():
    y, a, _ = _binary_data(np.random.default_rng(2), 80)
    res = paired_bootstrap(y, a, a, "auc", n_boot=100)
    assert res.delta == 0 and res.ci == (0.0, 0.0) and res.p_value == 1.0


def test_bootstrap_ci_contains_estimate_and_mae_is_unstratified():
    rng = np.random.default_rng(3)
    t = rng.normal(50, 10, 200)
    pred = t + rng.normal(0, 4, 200)
    ci = bootstrap_ci(t, pred, "mae", n_boot=500)
    assert ci.low < ci.estimate < ci.high
    assert ci.estimate == pytest.approx(np.mean(np.abs(t - pred)))
    # the bootstrap sd of a mean is close to the analytic standard error
    assert ci.sd == pytest.approx(np.std(np.abs(t - pred), ddof=1) / np.sqrt(200), rel=0.15)


def test_supported_metric_names_run():
    rng = np.random.default_rng(4)
    n = 60
    y3 = rng.integers(0, 3, n)
    p = rng.dirichlet(np.ones(3), n)
    q = rng.dirichlet(np.ones(3), n)
    for metric in ("macro_auc", "accuracy", "balanced_accuracy"):
        r = paired_bootstrap(y3, p, q, metric, n_boot=50)
        assert 0 <= r.p_value <= 1 and r.n_valid == 50
    d1, d2 = rng.uniform(0.6, 0.9, n), rng.uniform(0.6, 0.9, n)
    r = paired_bootstrap(None, d1, d2, "dice", n_boot=50)
    assert r.delta == pytest.approx(d1.mean() - d2.mean())
    time, event = rng.exponential(100, n), rng.integers(0, 2, n)
    r = paired_bootstrap((time, event), -time + rng.normal(size=n), rng.normal(size=n), "cindex", n_boot=50)
    assert r.delta > 0
    r2 = paired_bootstrap(np.column_stack([time, event]), -time + rng.normal(size=n), rng.normal(size=n),
                          "cindex", n_boot=50)
    assert r2.n_valid == 50


def test_paired_bootstrap_ci_covers_the_true_auc_difference_about_95_percent():
    """Binormal model: AUC = Phi(mu / sqrt(2)); 200 simulated test sets of n=200."""
    rng = np.random.default_rng(123)
    mu_a, mu_b = 1.2, 0.7
    true_delta = norm.cdf(mu_a / np.sqrt(2)) - norm.cdf(mu_b / np.sqrt(2))
    covered = 0
    n_sim = 200
    for _ in range(n_sim):
        y = rng.integers(0, 2, 200)
        shared = rng.normal(size=200)
        a = mu_a * y + np.sqrt(0.5) * shared + np.sqrt(0.5) * rng.normal(size=200)
        b = mu_b * y + np.sqrt(0.5) * shared + np.sqrt(0.5) * rng.normal(size=200)
        r = paired_bootstrap(y, a, b, "auc", n_boot=400, seed=int(rng.integers(1 << 30)))
        covered += r.ci[0] <= true_delta <= r.ci[1]
    assert 0.90 <= covered / n_sim <= 0.99


def test_paired_bootstrap_rejects_about_5_percent_under_the_null():
    rng = np.random.default_rng(9)
    rejected = 0
    for _ in range(200):
        y = rng.integers(0, 2, 200)
        shared = rng.normal(size=200)
        a = y + np.sqrt(0.5) * shared + np.sqrt(0.5) * rng.normal(size=200)
        b = y + np.sqrt(0.5) * shared + np.sqrt(0.5) * rng.normal(size=200)
        rejected += paired_bootstrap(y, a, b, "auc", n_boot=400, seed=int(rng.integers(1 << 30))).p_value < 0.05
    assert 0.01 <= rejected / 200 <= 0.10


def test_bad_inputs():
    y, a, b = _binary_data(np.random.default_rng(5), 40)
    with pytest.raises(StatsInputError, match="n_boot"):
        bootstrap_ci(y, a, "auc", n_boot=0)
    with pytest.raises(StatsInputError, match="length mismatch"):
        paired_bootstrap(y, a, b[:-1], "auc")
    with pytest.raises(StatsInputError, match="single class"):
        bootstrap_ci(np.ones(40), a, "auc")
    with pytest.raises(StatsInputError, match="NaN"):
        paired_bootstrap(y, np.where(y == 1, np.nan, a), b, "auc")
    with pytest.raises(StatsInputError, match="alpha"):
        bootstrap_ci(y, a, "auc", alpha=1.5)
    with pytest.raises(StatsInputError, match="unknown metric"):
        bootstrap_ci(y, a, "f1")
    with pytest.raises(StatsInputError, match="groups"):
        bootstrap_ci(y, a, "auc", groups=np.arange(3))


def test_vectorised_macro_auc_paired_bootstrap_is_fast():
    """n=1000, 3 classes, 2000 resamples: the target is <= 0.5 s on 2 cores (``brainfm.bench.stats``
    measures it); the bound here is loose for shared CI machines but still fails for any per-resample
    re-sorting implementation (several seconds)."""
    import time

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 1000)
    pa, pb = rng.dirichlet(np.ones(3), 1000), rng.dirichlet(np.ones(3), 1000)
    paired_bootstrap(y, pa, pb, "macro_auc", n_boot=50)  # warm-up
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        paired_bootstrap(y, pa, pb, "macro_auc", n_boot=2000)
        best = min(best, time.perf_counter() - t0)
    assert best < 1.0, f"paired macro-AUC bootstrap took {best:.2f} s"
