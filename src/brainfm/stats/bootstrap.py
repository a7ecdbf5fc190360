"""Percentile bootstrap confidence intervals and the paired bootstrap test.

Resampling. A resample draws items with replacement; it is represented by how often each item
was drawn (a row of integer weights), never by a re-sorted copy of the data, so every metric
is evaluated for a whole chunk of resamples at once (:mod:`brainfm.stats.metrics`).
- ``stratify=True`` resamples within each stratum, keeping its size: classes for classification
  metrics, event/censored for the C-index; continuous targets (MAE, MSE, Dice) are not
  stratified. ``strata=`` overrides the default (and is the only way to stratify a callable).
- ``groups=`` (e.g. subject ids) resamples whole groups: every row of a drawn subject comes
  along, which keeps the repeated sessions of one subject from narrowing the interval. A group's
  stratum is its most frequent row stratum.
- The draws depend only on (n_items, strata, groups, n_boot, seed), so the same seed gives the
  same resamples for every prediction of the same test set: intervals of different backbones
  and their paired differences come from identical resamples.

Paired test. For predictions A and B of the same items, d_b = metric_A(b) - metric_B(b) on
each resample b (resamples where either metric is undefined are dropped). The two-sided p-value
is the share of resampled differences on the far side of zero, doubled:

    p = min(1, 2 * min(#{d_b <= 0}, #{d_b >= 0}) / n_valid)

(the paper's "proportion of resampled differences crossing zero"). p = 0 means no resample
crossed zero, i.e. p < 1/n_valid. The CI of the difference is the percentile interval of d_b.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from brainfm.stats.kernels import Prepared
from brainfm.stats.metrics import prepare_metric
from brainfm.stats.validate import StatsInputError, check_n_boot

__all__ = ["Resampler", "BootstrapCI", "PairedBootstrap", "bootstrap_ci", "paired_bootstrap",
           "bootstrap_distributions", "percentile_ci", "bootstrap_p_value"]

_CHUNK_ELEMENTS = 4_000_000  # weights held at once: (resamples per chunk) x (items)

MetricArg = str | Callable[[Any, Any], float]


def _mode_per_unit(unit: np.ndarray, codes: np.ndarray, n_units: int) -> np.ndarray:
    n_codes = int(codes.max()) + 1
    pairs, counts = np.unique(unit * n_codes + codes, return_counts=True)
    u, c = pairs // n_codes, pairs % n_codes
    order = np.lexsort((-counts, u))
    first = np.r_[True, u[order][1:] != u[order][:-1]]
    out = np.empty(n_units, dtype=np.int64)
    out[u[order][first]] = c[order][first]
    return out


class Resampler:
    """Deterministic stratified (cluster) bootstrap draws as (chunk, n_items) weight matrices."""

    def __init__(self, n: int, n_boot: int, seed: int = 42, strata: Any = None, groups: Any = None):
        self.n = int(n)
        self.n_boot = check_n_boot(n_boot)
        self.seed = seed
        if self.n < 1:
            raise StatsInputError("cannot resample an empty test set")
        if groups is not None:
            g = np.asarray(groups)
            if g.shape != (self.n,):
                raise StatsInputError(f"groups must have one entry per item ({self.n}), got shape {g.shape}")
            _, self.unit_of_item = np.unique(g, return_inverse=True)
            self.n_units = int(self.unit_of_item.max()) + 1
        else:
            self.unit_of_item = None
            self.n_units = self.n
        if strata is not None:
            s = np.asarray(strata)
            if s.shape != (self.n,):
                raise StatsInputError(f"strata must have one entry per item ({self.n}), got shape {s.shape}")
            _, codes = np.unique(s, return_inverse=True)
            if self.unit_of_item is not None:
                codes = _mode_per_unit(self.unit_of_item, codes, self.n_units)
            members = (np.flatnonzero(codes == c) for c in range(int(codes.max()) + 1))
            self.members = [m for m in members if len(m)]
        else:
            self.members = [np.arange(self.n_units)]
        self.chunk = max(1, min(self.n_boot, _CHUNK_ELEMENTS // max(self.n, 1)))

    def chunks(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        done = 0
        while done < self.n_boot:
            b = min(self.chunk, self.n_boot - done)
            wu = np.zeros((b, self.n_units), dtype=np.float32)  # integer counts, exact in float32
            rows = np.arange(b)[:, None]
            for members in self.members:
                m = len(members)
                idx = rng.integers(0, m, size=(b, m))
                wu[:, members] = np.bincount((idx + rows * m).ravel(), minlength=b * m).reshape(b, m)
            yield wu if self.unit_of_item is None else wu[:, self.unit_of_item]
            done += b


def bootstrap_distributions(kernels: Sequence[Prepared], n_boot: int = 2000, seed: int = 42,
                            strata: Any = None, groups: Any = None) -> np.ndarray:
    """(n_boot, len(kernels)) metric values, all kernels evaluated on the same resamples."""
    if not kernels:
        raise StatsInputError("no predictions to bootstrap")
    n = kernels[0].n
    if any(k.n != n for k in kernels):
        raise StatsInputError(f"predictions differ in length: {[k.n for k in kernels]}")
    res = Resampler(n, n_boot, seed, strata=strata, groups=groups)
    out = np.empty((res.n_boot, len(kernels)))
    pos = 0
    for w in res.chunks():
        for j, kern in enumerate(kernels):
            out[pos:pos + len(w), j] = kern(w)
        pos += len(w)
    return out


def percentile_ci(values: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval (alpha/2, 1 - alpha/2) of the finite values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(v, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_p_value(diffs: np.ndarray) -> float:
    """Two-sided bootstrap p: 2 * min(P(d <= 0), P(d >= 0)) over finite resampled differences, capped at 1."""
    d = np.asarray(diffs, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return float("nan")
    return float(min(1.0, 2.0 * min(np.count_nonzero(d <= 0), np.count_nonzero(d >= 0)) / d.size))


def _check_alpha(alpha: float) -> float:
    if not 0 < alpha < 1:
        raise StatsInputError(f"alpha must be in (0, 1), got {alpha}")
    return float(alpha)


def _strata(kern: Prepared, stratify: bool, strata: Any) -> Any:
    if strata is not None:
        return strata
    return kern.strata if stratify else None


def _metric_name(metric: MetricArg) -> str:
    return metric if isinstance(metric, str) else getattr(metric, "__name__", "callable")


@dataclass(frozen=True)
class BootstrapCI:
    metric: str
    estimate: float  # metric on the full test set
    low: float
    high: float
    sd: float  # standard deviation of the bootstrap distribution (the "±" of error bars)
    alpha: float
    n_boot: int
    n_valid: int  # resamples where the metric was defined


@dataclass(frozen=True)
class PairedBootstrap:
    metric: str
    estimate_a: float
    estimate_b: float
    delta: float  # estimate_a - estimate_b
    ci: tuple[float, float]  # percentile CI of the resampled differences
    p_value: float  # two-sided, see module docstring
    sd_delta: float
    alpha: float
    n_boot: int
    n_valid: int


def bootstrap_ci(y_true: Any, pred: Any, metric: MetricArg, n_boot: int = 2000, seed: int = 42,
                 alpha: float = 0.05, stratify: bool = True, *, groups: Any = None,
                 strata: Any = None) -> BootstrapCI:
    """Percentile bootstrap CI of ``metric`` on a test set (paper: 2,000 resamples, seed 42)."""
    alpha = _check_alpha(alpha)
    n_boot = check_n_boot(n_boot)
    kern = prepare_metric(metric, y_true, pred)
    estimate = kern.point()
    if np.isnan(estimate):
        raise StatsInputError(f"{_metric_name(metric)} is undefined on the full test set")
    dist = bootstrap_distributions([kern], n_boot, seed, _strata(kern, stratify, strata), groups)[:, 0]
    valid = dist[np.isfinite(dist)]
    if valid.size == 0:
        raise StatsInputError(f"{_metric_name(metric)} is undefined on every resample")
    lo, hi = percentile_ci(valid, alpha)
    return BootstrapCI(_metric_name(metric), estimate, lo, hi, float(valid.std(ddof=1)) if valid.size > 1 else 0.0,
                       alpha, n_boot, int(valid.size))


def paired_bootstrap(y_true: Any, pred_a: Any, pred_b: Any, metric: MetricArg, n_boot: int = 2000,
                     seed: int = 42, stratify: bool = True, *, alpha: float = 0.05, groups: Any = None,
                     strata: Any = None) -> PairedBootstrap:
    """Paired bootstrap of metric(A) - metric(B) on the same test items (same resamples for both)."""
    alpha = _check_alpha(alpha)
    n_boot = check_n_boot(n_boot)
    ka = prepare_metric(metric, y_true, pred_a)
    kb = prepare_metric(metric, y_true, pred_b)
    ea, eb = ka.point(), kb.point()
    if np.isnan(ea) or np.isnan(eb):
        raise StatsInputError(f"{_metric_name(metric)} is undefined on the full test set")
    dist = bootstrap_distributions([ka, kb], n_boot, seed, _strata(ka, stratify, strata), groups)
    d = dist[:, 0] - dist[:, 1]
    d = d[np.isfinite(d)]
    if d.size == 0:
        raise StatsInputError(f"{_metric_name(metric)} is undefined on every resample")
    return PairedBootstrap(_metric_name(metric), ea, eb, ea - eb, percentile_ci(d, alpha), bootstrap_p_value(d),
                           float(d.std(ddof=1)) if d.size > 1 else 0.0, alpha, n_boot, int(d.size))
