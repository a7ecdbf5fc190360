"""Survival statistics: Harrell's C-index, the log-rank test and Kaplan-Meier risk stratification.

Risk convention everywhere: a higher predicted risk means an earlier expected event (a Cox
model's linear predictor). The C-index follows Harrell with lifelines' treatment of ties: a pair
is comparable when the earlier time is an event, or when the times are equal and only the other
subject is censored; equal risks count one half. The kernel takes resampling weights so that
the paired bootstrap of the C-index is a pair of matrix products per chunk of resamples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from brainfm.stats.kernels import Prepared, safe_divide
from brainfm.stats.validate import StatsInputError, as_1d, check_same_length

__all__ = ["CIndexKernel", "cindex", "logrank", "LogRankResult", "km_risk_stratification", "km_groups",
           "KMStratification"]

_BLOCK_ELEMENTS = 4_000_000  # pair-matrix entries built at once (32 MB of float64)


class CIndexKernel(Prepared):
    """Weighted Harrell C: sum_ij w_i w_j M_ij / sum_ij w_i w_j A_ij over pairs (event i, other j)."""

    def __init__(self, time: np.ndarray, event: np.ndarray, risk: np.ndarray):
        self.time, self.event, self.risk = time, event, risk
        self.n = len(time)
        self.strata = event
        self.ev = np.flatnonzero(event == 1)
        step = max(1, _BLOCK_ELEMENTS // (2 * max(self.n, 1)))
        self.blocks = [self.ev[i:i + step] for i in range(0, len(self.ev), step)]
        self._cache = [self._pairs(b) for b in self.blocks] if len(self.ev) * self.n <= 5 * _BLOCK_ELEMENTS else None

    def _pairs(self, rows: np.ndarray) -> np.ndarray:
        """Stacked [2 * concordance score; comparable] rows of the event subjects ``rows`` (float32, exact)."""
        t, r = self.time, self.risk
        comparable = (t[None, :] > t[rows, None]) | ((t[None, :] == t[rows, None]) & (self.event[None, :] == 0))
        twice_score = 2 * (r[rows, None] > r[None, :]) + (r[rows, None] == r[None, :])
        return np.vstack([comparable * twice_score, comparable]).astype(np.float32)

    def __call__(self, w: np.ndarray) -> np.ndarray:
        # integer weights: every sum is an integer below 2 * (total weight)^2, exact in float32 under 2^24
        total = float(w.sum(1).max()) if len(w) else 0.0
        dt = np.float32 if (w.dtype == np.float32 and 2 * total * total < 2**24) else np.float64
        w = w.astype(dt, copy=False)
        num = np.zeros(len(w))
        den = np.zeros(len(w))
        for k, rows in enumerate(self.blocks):
            pairs = self._cache[k] if self._cache is not None else self._pairs(rows)
            prod = w @ pairs.astype(dt, copy=False).T  # (B, 2 * len(rows))
            wi = w[:, rows]
            num += np.einsum("bi,bi->b", wi, prod[:, :len(rows)]).astype(np.float64)
            den += np.einsum("bi,bi->b", wi, prod[:, len(rows):]).astype(np.float64)
        return safe_divide(0.5 * num, den)


def cindex(time: Any, event: Any, risk: Any) -> float:
    """Harrell's concordance index of ``risk`` against right-censored survival (0.5 = chance)."""
    t = as_1d(time, "time")
    e = as_1d(event, "event")
    r = as_1d(risk, "risk")
    check_same_length(time=t, event=e, risk=r)
    if not np.all((e == 0) | (e == 1)):
        raise StatsInputError("event must be 0 (censored) or 1 (event)")
    kern = CIndexKernel(t, e.astype(np.int64), r)
    value = kern.point()
    if np.isnan(value):
        raise StatsInputError("C-index is undefined: no comparable pairs (no events before another time)")
    return value


@dataclass(frozen=True)
class LogRankResult:
    statistic: float  # chi-square
    p_value: float
    df: int
    n_groups: int


def logrank(time: Any, event: Any, group: Any) -> LogRankResult:
    """Two-sided log-rank test of equal hazards across the groups (lifelines' multivariate form)."""
    from lifelines.statistics import multivariate_logrank_test

    t = as_1d(time, "time")
    e = as_1d(event, "event")
    g = np.asarray(group)
    if g.ndim != 1:
        raise StatsInputError(f"group must be 1-D, got shape {g.shape}")
    check_same_length(time=t, event=e, group=g)
    if not np.all((e == 0) | (e == 1)):
        raise StatsInputError("event must be 0 (censored) or 1 (event)")
    if pd.isna(g).any():
        raise StatsInputError("group contains missing labels")
    labels = np.unique(g)
    if len(labels) < 2:
        raise StatsInputError(f"log-rank needs at least two non-empty groups, got {labels.tolist()}")
    if e.sum() == 0:
        raise StatsInputError("log-rank is undefined without any observed event")
    res = multivariate_logrank_test(t, g, e)
    return LogRankResult(float(res.test_statistic), float(res.p_value), int(len(labels) - 1), int(len(labels)))


@dataclass(frozen=True)
class KMStratification:
    """Kaplan-Meier risk stratification of a test set at the training-set median risk."""

    threshold: float
    groups: np.ndarray  # "low" / "high" per test subject, in input order
    statistic: float  # log-rank chi-square (NaN when one group is empty)
    p_value: float
    n_low: int
    n_high: int
    events_low: int
    events_high: int
    median_low: float  # median survival time; inf when the curve never reaches 0.5
    median_high: float
    curves: pd.DataFrame  # group, time, survival, ci_low, ci_high, at_risk


def _km_curve(t: np.ndarray, e: np.ndarray, label: str) -> tuple[pd.DataFrame, float]:
    from lifelines import KaplanMeierFitter

    kmf = KaplanMeierFitter().fit(t, e, label=label)
    sf = kmf.survival_function_[label]
    ci = kmf.confidence_interval_survival_function_
    at_risk = kmf.event_table["at_risk"].reindex(sf.index).fillna(0)
    frame = pd.DataFrame({
        "group": label, "time": sf.index.to_numpy(float), "survival": sf.to_numpy(float),
        "ci_low": ci.iloc[:, 0].to_numpy(float), "ci_high": ci.iloc[:, 1].to_numpy(float),
        "at_risk": at_risk.to_numpy(int),
    })
    return frame, float(kmf.median_survival_time_)


def km_risk_stratification(train_risk: Any, test_time: Any, test_event: Any, test_risk: Any) -> KMStratification:
    """Split test subjects at the median *training* risk and compare the groups' survival.

    The threshold comes from the training predictions so that the test set does not choose its
    own cut (BrainIAC/BrainDINO protocol). Subjects with risk strictly above it are "high";
    ties go to "low". A model that puts every test subject on one side is a legitimate
    (uninformative) outcome, reported with NaN statistic and p-value rather than an error.
    """
    tr = as_1d(train_risk, "train_risk")
    t = as_1d(test_time, "test_time")
    e = as_1d(test_event, "test_event")
    r = as_1d(test_risk, "test_risk")
    check_same_length(test_time=t, test_event=e, test_risk=r)
    if not np.all((e == 0) | (e == 1)):
        raise StatsInputError("test_event must be 0 (censored) or 1 (event)")
    threshold = float(np.median(tr))
    return km_groups(t, e, r > threshold, threshold)


def km_groups(time: np.ndarray, event: np.ndarray, high: np.ndarray,
              threshold: float = float("nan")) -> KMStratification:
    """Kaplan-Meier curves and log-rank test for a given high/low assignment (e.g. pooled CV folds)."""
    t = as_1d(time, "time")
    e = as_1d(event, "event")
    high = np.asarray(high, dtype=bool)
    check_same_length(time=t, event=e, high=high)
    if not np.all((e == 0) | (e == 1)):
        raise StatsInputError("event must be 0 (censored) or 1 (event)")
    groups = np.where(high, "high", "low")
    frames, medians = [], {}
    for label, mask in (("low", ~high), ("high", high)):
        if mask.any():
            frame, med = _km_curve(t[mask], e[mask], label)
            frames.append(frame)
            medians[label] = med
        else:
            medians[label] = float("nan")
    if high.any() and (~high).any() and e.sum() > 0:
        lr = logrank(t, e, groups)
        stat, p = lr.statistic, lr.p_value
    else:
        stat, p = float("nan"), float("nan")
    return KMStratification(
        threshold=float(threshold), groups=groups, statistic=stat, p_value=p,
        n_low=int((~high).sum()), n_high=int(high.sum()),
        events_low=int(e[~high].sum()), events_high=int(e[high].sum()),
        median_low=medians["low"], median_high=medians["high"],
        curves=pd.concat(frames, ignore_index=True),
    )
