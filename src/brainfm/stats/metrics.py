"""Point metrics and their weighted, vectorised kernels.

A bootstrap resample is a multiset of the test items, i.e. an integer count per item. Every
metric here is therefore written once, as a function of a weight matrix ``W`` of shape
(n_resamples, n_items) -> one value per resample; the point estimate is the same kernel with
all weights 1. The expensive part (sorting scores, building pair matrices) is done once per
prediction vector, and the resamples only cost matrix arithmetic, which is what makes 2,000
paired resamples of a 3-class macro-AUC take milliseconds instead of seconds.

Conventions (shared with scikit-learn, checked in the tests):
- AUC = P(score_pos > score_neg) + 0.5 P(tie) (Mann-Whitney); for 1-D scores the larger label is
  the positive class; a 2-column probability matrix uses column 1; with K > 2 columns "auc" is
  the macro one-vs-rest mean over the classes present in ``y_true``.
- Balanced accuracy is the mean recall over the classes present in ``y_true``.
- Dice of two empty masks is 1 (nothing to find, nothing found).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from brainfm.stats.kernels import MeanOf, Prepared, WeightedMean, safe_divide
from brainfm.stats.survival import CIndexKernel
from brainfm.stats.validate import (
    StatsInputError,
    as_1d,
    as_labels,
    as_scores,
    as_survival,
    check_same_length,
)

__all__ = [
    "MetricInfo",
    "METRICS",
    "metric_info",
    "auc",
    "accuracy",
    "balanced_accuracy",
    "mae",
    "mse",
    "dice",
    "davies_bouldin",
    "prepare_metric",
]


@dataclass(frozen=True)
class MetricInfo:
    """What a named metric is: its label, direction, and how bootstrap resamples are stratified."""

    name: str
    label: str
    higher_is_better: bool
    strata: str | None  # "class" | "event" | None (continuous targets are not stratified)


METRICS: dict[str, MetricInfo] = {
    "auc": MetricInfo("auc", "AUC", True, "class"),
    "macro_auc": MetricInfo("macro_auc", "macro-AUC", True, "class"),
    "accuracy": MetricInfo("accuracy", "Accuracy", True, "class"),
    "balanced_accuracy": MetricInfo("balanced_accuracy", "Balanced accuracy", True, "class"),
    "mae": MetricInfo("mae", "MAE", False, None),
    "mse": MetricInfo("mse", "MSE", False, None),
    "dice": MetricInfo("dice", "Dice", True, None),
    "cindex": MetricInfo("cindex", "C-index", True, "event"),
}


def metric_info(name: str) -> MetricInfo:
    """Metadata of a named metric; ``dice_WT``-style names resolve to ``dice``."""
    base = "dice" if name.startswith("dice_") else name
    if base not in METRICS:
        raise StatsInputError(f"unknown metric {name!r}; known: {sorted(METRICS)} or a callable")
    return METRICS[base]


# --------------------------------------------------------------------------------------------
# Metric-specific kernels (generic ones in brainfm.stats.kernels): built once per prediction vector,
# evaluated on (B, n) weight matrices.
# --------------------------------------------------------------------------------------------

class _BinaryAUC(Prepared):
    """Weighted Mann-Whitney AUC: scores sorted once, negatives accumulated by cumulative sums."""

    def __init__(self, positive: np.ndarray, scores: np.ndarray):
        self.n = len(scores)
        order = np.argsort(scores, kind="mergesort")
        s = scores[order]
        p = positive[order]
        new_group = np.r_[True, s[1:] != s[:-1]]
        gid = np.cumsum(new_group) - 1
        starts = np.flatnonzero(new_group)
        ends = np.r_[starts[1:], len(s)]
        neg_sorted = np.flatnonzero(~p)
        pos_sorted = np.flatnonzero(p)
        # negatives strictly below the positive's tie group, and up to the end of that group
        self.lo = np.searchsorted(neg_sorted, starts[gid[pos_sorted]])
        self.hi = np.searchsorted(neg_sorted, ends[gid[pos_sorted]])
        self.ties = not np.array_equal(self.lo, self.hi)
        self.pos_idx = order[pos_sorted]
        self.neg_idx = order[neg_sorted]

    def __call__(self, w: np.ndarray) -> np.ndarray:
        # Integer counts make every partial sum an integer (twice the numerator with ties) bounded by
        # (total weight)^2 / 4 * 2; below 2^24 float32 is exact and twice as fast as float64.
        total = float(w.sum(1).max()) if len(w) else 0.0
        exact32 = w.dtype == np.float32 and total * total / 2 < 2**24  # float32 W = Resampler counts
        dt = np.float32 if exact32 else np.float64
        w = w.astype(dt, copy=False)
        wn = w[:, self.neg_idx]
        c = np.empty((w.shape[0], wn.shape[1] + 1), dtype=dt)
        c[:, 0] = 0
        np.cumsum(wn, axis=1, out=c[:, 1:])
        wp = w[:, self.pos_idx]
        if self.ties:
            num = 0.5 * np.einsum("bi,bi->b", wp, c[:, self.lo] + c[:, self.hi]).astype(np.float64)
        else:
            num = np.einsum("bi,bi->b", wp, c[:, self.lo]).astype(np.float64)
        return safe_divide(num, wp.sum(1).astype(np.float64) * c[:, -1].astype(np.float64))


class _BalancedAccuracy(Prepared):
    def __init__(self, labels: np.ndarray, correct: np.ndarray):
        self.n = len(labels)
        self.strata = labels
        self.groups = [(np.flatnonzero(labels == k)) for k in np.unique(labels)]
        self.correct = correct

    def __call__(self, w: np.ndarray) -> np.ndarray:
        recalls = [safe_divide(w[:, g] @ self.correct[g], w[:, g].sum(1)) for g in self.groups]
        return np.mean(recalls, axis=0)


class _CallableMetric(Prepared):
    """Any ``fn(y_true, pred) -> float``, evaluated on explicitly materialised resamples (slow path)."""

    def __init__(self, fn: Callable[[Any, Any], float], y: np.ndarray, pred: np.ndarray):
        self.fn = fn
        self.y = y
        self.pred = pred
        self.n = len(pred)

    def __call__(self, w: np.ndarray) -> np.ndarray:
        counts = np.rint(w).astype(np.int64)
        if not np.array_equal(counts, w):
            raise StatsInputError("a callable metric needs integer resampling counts")
        base = np.arange(self.n)
        out = np.empty(len(w))
        for b in range(len(w)):
            idx = np.repeat(base, counts[b])
            try:
                out[b] = float(self.fn(self.y[idx], self.pred[idx]))
            except ValueError:  # e.g. a resample that lost a class; dropped like any undefined value
                out[b] = np.nan
        return out


# --------------------------------------------------------------------------------------------
# Building kernels from raw inputs (all validation happens here).
# --------------------------------------------------------------------------------------------

def _auc_kernel(y_true: Any, scores: Any, name: str = "scores") -> Prepared:
    labels = as_labels(y_true)
    s = as_scores(scores, name)
    check_same_length(y_true=labels, **{name: s})
    present = np.unique(labels)
    if len(present) < 2:
        raise StatsInputError(f"AUC is undefined: y_true holds a single class ({present.tolist()})")
    if s.ndim == 1:
        if len(present) != 2:
            raise StatsInputError(
                f"1-D scores need a binary y_true, got {len(present)} classes; pass (n, K) probabilities")
        kern: Prepared = _BinaryAUC(labels == present[1], s)
        kern.strata = labels
        return kern
    k = s.shape[1]
    if present.min() < 0 or present.max() >= k:
        raise StatsInputError(f"y_true labels {present.tolist()} do not index the {k} probability columns")
    if k == 2:
        kern = _BinaryAUC(labels == 1, s[:, 1])
        kern.strata = labels
        return kern
    return MeanOf([_BinaryAUC(labels == c, s[:, c]) for c in present], strata=labels)


def _predicted_labels(pred: Any, name: str = "y_pred") -> np.ndarray:
    arr = as_scores(pred, name)
    if arr.ndim == 2:
        return arr.argmax(1)
    return as_labels(arr, name)


def prepare_metric(metric: str | Callable[[Any, Any], float], y_true: Any, pred: Any) -> Prepared:
    """Validate inputs and build the weighted kernel of ``metric`` for one prediction.

    ``y_true``/``pred`` by metric: auc/macro_auc: labels and scores or (n, K) probabilities;
    accuracy/balanced_accuracy: labels and predicted labels (or probabilities, argmax taken);
    mae/mse: targets and predicted values; dice: ``pred`` holds per-case Dice values and
    ``y_true`` is ignored (may be None); cindex: ``y_true`` = (time, event), ``pred`` = risk.
    """
    if callable(metric):
        y = np.column_stack(y_true) if isinstance(y_true, tuple) else np.asarray(y_true)
        p = np.asarray(pred)
        if p.ndim == 0 or len(p) == 0:
            raise StatsInputError("pred is empty")
        check_same_length(y_true=y, pred=p)
        return _CallableMetric(metric, y, p)
    info = metric_info(metric)
    if info.name in ("auc", "macro_auc"):
        return _auc_kernel(y_true, pred, "pred")
    if info.name in ("accuracy", "balanced_accuracy"):
        labels = as_labels(y_true)
        yp = _predicted_labels(pred, "pred")
        check_same_length(y_true=labels, pred=yp)
        correct = (labels == yp).astype(np.float64)
        if info.name == "accuracy":
            return WeightedMean(correct, strata=labels)
        return _BalancedAccuracy(labels, correct)
    if info.name in ("mae", "mse"):
        yt = as_1d(y_true, "y_true")
        yp = as_1d(pred, "pred")
        check_same_length(y_true=yt, pred=yp)
        err = yp - yt
        return WeightedMean(np.abs(err) if info.name == "mae" else err**2)
    if info.name == "dice":
        values = as_1d(pred, "pred (per-case Dice)")
        if y_true is not None:
            check_same_length(y_true=np.asarray(y_true), pred=values)
        return WeightedMean(values)
    # cindex
    time, event = as_survival(y_true)
    risk = as_1d(pred, "pred (risk)")
    check_same_length(time=time, risk=risk)
    return CIndexKernel(time, event, risk)


# --------------------------------------------------------------------------------------------
# Point metrics.
# --------------------------------------------------------------------------------------------

def auc(y_true: Any, scores: Any) -> float:
    """ROC AUC: binary for 1-D scores, macro one-vs-rest for (n, K) probabilities (K > 2)."""
    return _auc_kernel(y_true, scores).point()


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Share of correct predictions; ``y_pred`` may be labels or (n, K) probabilities."""
    return prepare_metric("accuracy", y_true, y_pred).point()


def balanced_accuracy(y_true: Any, y_pred: Any) -> float:
    """Mean per-class recall over the classes present in ``y_true`` (robust to class imbalance)."""
    return prepare_metric("balanced_accuracy", y_true, y_pred).point()


def mae(y_true: Any, y_pred: Any) -> float:
    """Mean absolute error."""
    return prepare_metric("mae", y_true, y_pred).point()


def mse(y_true: Any, y_pred: Any) -> float:
    """Mean squared error."""
    return prepare_metric("mse", y_true, y_pred).point()


def dice(pred_mask: Any, true_mask: Any) -> float:
    """Dice overlap 2|A∩B| / (|A| + |B|) of two binary masks of the same shape (1.0 if both empty)."""
    a = np.asarray(pred_mask)
    b = np.asarray(true_mask)
    if a.shape != b.shape:
        raise StatsInputError(f"mask shapes differ: pred {a.shape} vs true {b.shape}")
    if a.size == 0:
        raise StatsInputError("masks are empty arrays")
    for name, m in (("pred_mask", a), ("true_mask", b)):
        if m.dtype != bool and not np.isin(np.unique(m), (0, 1)).all():
            raise StatsInputError(f"{name} must be binary (bool or 0/1)")
    a = a.astype(bool)
    b = b.astype(bool)
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(a, b).sum()) / total


def davies_bouldin(features: Any, labels: Any) -> float:
    """Davies-Bouldin index of labelled clusters in feature space (lower = better separated).

    BrainIAC reports it on fine-tuned features grouped by sequence or age bin.
    """
    from sklearn.metrics import davies_bouldin_score

    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise StatsInputError(f"features must be 2-D (n, d), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise StatsInputError("features contain NaN/inf")
    lab = np.asarray(labels)
    if lab.ndim != 1:
        raise StatsInputError(f"labels must be 1-D, got shape {lab.shape}")
    check_same_length(features=x, labels=lab)
    k = len(np.unique(lab))
    if not 2 <= k < len(lab):
        raise StatsInputError(f"Davies-Bouldin needs 2 <= n_clusters < n_samples, got {k} clusters, {len(lab)} samples")
    return float(davies_bouldin_score(x, lab))
