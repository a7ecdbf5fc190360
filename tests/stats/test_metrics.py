"""Point metrics and their weighted kernels against scikit-learn and hand-computed values."""

import numpy as np
import pytest
from sklearn import metrics as skm

from brainfm.stats import (
    StatsInputError,
    accuracy,
    auc,
    balanced_accuracy,
    davies_bouldin,
    dice,
    mae,
    metric_info,
    mse,
)
from brainfm.stats.bootstrap import Resampler
from brainfm.stats.metrics import prepare_metric


def _probs(rng, n, k):
    return rng.dirichlet(np.ones(k), size=n)


def test_binary_auc_matches_sklearn_with_and_without_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = rng.normal(size=300) + y
    assert auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    tied = np.round(s, 1)  # many ties, within and across classes
    assert auc(y, tied) == pytest.approx(skm.roc_auc_score(y, tied), abs=1e-12)


def test_binary_auc_positive_class_is_the_larger_label():
    y = np.array([3, 3, 7, 7])
    assert auc(y, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert auc(y, [0.9, 0.8, 0.2, 0.1]) == 0.0


def test_macro_auc_matches_sklearn_ovr_and_two_column_probs_use_column_1():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 250)
    p = _probs(rng, 250, 4)
    assert auc(y, p) == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"), abs=1e-12)
    yb = rng.integers(0, 2, 100)
    p2 = _probs(rng, 100, 2)
    assert auc(yb, p2) == pytest.approx(skm.roc_auc_score(yb, p2[:, 1]), abs=1e-12)


def test_macro_auc_averages_only_classes_present():
    rng = np.random.default_rng(2)
    y = rng.choice([0, 2], 80)  # class 1 absent
    p = _probs(rng, 80, 3)
    expected = np.mean([skm.roc_auc_score(y == c, p[:, c]) for c in (0, 2)])
    assert auc(y, p) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_weighted_auc_kernel_equals_sklearn_on_materialised_resamples(ties):
    rng = np.random.default_rng(3)
    n = 90
    y = rng.integers(0, 3, n)
    p = _probs(rng, n, 3)
    if ties:
        p = np.round(p, 1)
    w = next(Resampler(n, 25, seed=7, strata=y).chunks())
    got = prepare_metric("macro_auc", y, p)(w)
    for b in range(len(w)):
        idx = np.repeat(np.arange(n), w[b].astype(int))
        ref = np.mean([skm.roc_auc_score(y[idx] == c, p[idx, c]) for c in range(3)])
        assert got[b] == pytest.approx(ref, abs=1e-12)


def test_other_weighted_kernels_equal_sklearn_on_resamples():
    rng = np.random.default_rng(4)
    n = 70
    y = rng.integers(0, 3, n)
    yp = np.where(rng.random(n) < 0.6, y, rng.integers(0, 3, n))
    t = rng.normal(size=n)
    tp = t + rng.normal(size=n)
    w = next(Resampler(n, 15, seed=1).chunks())
    acc = prepare_metric("accuracy", y, yp)(w)
    bal = prepare_metric("balanced_accuracy", y, yp)(w)
    ma = prepare_metric("mae", t, tp)(w)
    ms = prepare_metric("mse", t, tp)(w)
    for b in range(len(w)):
        idx = np.repeat(np.arange(n), w[b].astype(int))
        assert acc[b] == pytest.approx(skm.accuracy_score(y[idx], yp[idx]))
        assert bal[b] == pytest.approx(skm.balanced_accuracy_score(y[idx], yp[idx]))
        assert ma[b] == pytest.approx(skm.mean_absolute_error(t[idx], tp[idx]))
        assert ms[b] == pytest.approx(skm.mean_squared_error(t[idx], tp[idx]))


def test_point_metrics_match_sklearn():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 120)
    p = _probs(rng, 120, 3)
    assert accuracy(y, p) == pytest.approx(skm.accuracy_score(y, p.argmax(1)))
    assert balanced_accuracy(y, p.argmax(1)) == pytest.approx(skm.balanced_accuracy_score(y, p.argmax(1)))
    t, tp = rng.normal(size=50), rng.normal(size=50)
    assert mae(t, tp) == pytest.approx(np.mean(np.abs(t - tp)))
    assert mse(t, tp) == pytest.approx(np.mean((t - tp) ** 2))


def test_dice_hand_cases():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2, :2] = True  # 4 voxels
    b[1:3, 1:3] = True  # 4 voxels, overlap 1
    assert dice(a, b) == pytest.approx(2 * 1 / 8)
    assert dice(a, a) == 1.0
    assert dice(np.zeros(5), np.zeros(5)) == 1.0  # both empty
    assert dice(np.ones(5), np.zeros(5)) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        dice(np.zeros((2, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="binary"):
        dice(np.array([0, 2]), np.array([0, 1]))


def test_davies_bouldin_matches_hand_computation():
    x = np.array([[0.0, 0], [0, 2], [10, 0], [10, 4]])
    lab = np.array([0, 0, 1, 1])
    # centroids (0,1) and (10,2); scatter = mean distance to centroid = 1 and 2; centroid distance sqrt(101)
    expected = (1 + 2) / np.sqrt(101)  # both clusters share the same worst ratio
    assert davies_bouldin(x, lab) == pytest.approx(expected)
    with pytest.raises(ValueError, match="n_clusters"):
        davies_bouldin(x, np.zeros(4))


def test_metric_info_directions():
    assert metric_info("mae").higher_is_better is False
    assert metric_info("dice_WT").name == "dice"
    assert metric_info("cindex").strata == "event"
    with pytest.raises(ValueError, match="unknown metric"):
        metric_info("f2")


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: auc([0, 1, 1], [0.1, 0.2]), "length mismatch"),
        (lambda: auc([1, 1, 1], [0.1, 0.2, 0.3]), "single class"),
        (lambda: auc([0, 1, 1], [0.1, np.nan, 0.3]), "NaN"),
        (lambda: auc([0, 1, 2], [0.1, 0.2, 0.3]), "binary"),
        (lambda: auc([0, 1, 5], np.full((3, 3), 1 / 3)), "do not index"),
        (lambda: auc([0, 0.5, 1], [0.1, 0.2, 0.3]), "integer class labels"),
        (lambda: mae([], []), "empty"),
    ],
)
def test_bad_inputs_raise_value_errors_with_reasons(call, message):
    with pytest.raises(StatsInputError, match=message):
        call()
    assert issubclass(StatsInputError, ValueError)
