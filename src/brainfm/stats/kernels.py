"""Weighted metric kernels shared by the metrics, the survival statistics and the comparison tables.

A bootstrap resample is an integer count per test item, so a metric is written once as a function
of a weight matrix ``W`` (n_resamples, n_items) -> one value per resample; the point estimate is
the same kernel with all weights 1 (:meth:`Prepared.point`). Metric-specific kernels (AUC,
balanced accuracy, C-index) live beside their metric; the generic ones every table needs
(a mean of per-item values, a mean of several kernels) live here.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Prepared", "MeanOf", "WeightedMean", "safe_divide"]


class Prepared:
    """A metric bound to one (y_true, prediction) pair; ``self(W)`` gives one value per row of W."""

    n: int
    strata: np.ndarray | None = None

    def __call__(self, w: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def point(self) -> float:
        """The metric on the full test set (every item weighted once)."""
        return float(self(np.ones((1, self.n)))[0])


def safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with NaN where ``den`` is not positive (an undefined resample, not an error)."""
    out = np.full(np.shape(num), np.nan)
    ok = den > 0
    np.divide(num, den, out=out, where=ok)
    return out


class MeanOf(Prepared):
    """Mean of several kernels over the same items (classes of a macro-AUC, seeds of a run)."""

    def __init__(self, parts: list[Prepared], strata: np.ndarray | None = None):
        self.parts = parts
        self.n = parts[0].n
        self.strata = strata

    def __call__(self, w: np.ndarray) -> np.ndarray:
        return np.mean([p(w) for p in self.parts], axis=0)


class WeightedMean(Prepared):
    """Weighted mean of per-item values: accuracy (0/1), absolute or squared errors, Dice."""

    def __init__(self, values: np.ndarray, strata: np.ndarray | None = None):
        self.values = values
        self.n = len(values)
        self.strata = strata

    def __call__(self, w: np.ndarray) -> np.ndarray:
        return safe_divide(w @ self.values, w.sum(1))
