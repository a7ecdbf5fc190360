"""Input checks shared by the statistics functions.

Statistics silently computed from misaligned or degenerate inputs are worse than no statistics,
so every public function funnels its arrays through these helpers and fails with a message that
says which argument is wrong and why.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from brainfm.errors import BrainfmError

__all__ = ["StatsInputError", "as_1d", "as_labels", "as_scores", "as_survival", "check_same_length",
           "check_n_boot"]


class StatsInputError(BrainfmError, ValueError):
    """The data cannot support the requested statistic (mismatched lengths, one class, NaN, ...).

    It is a :class:`ValueError` for code that calls the API directly and a
    :class:`~brainfm.errors.BrainfmError` so that the CLI reports it as one line when the cause
    is a user's results files (e.g. runs whose test subjects differ between backbones).
    """


def as_1d(x: Any, name: str, *, finite: bool = True, allow_empty: bool = False) -> np.ndarray:
    """A 1-D float64 array; NaN/inf rejected unless ``finite=False``."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise StatsInputError(f"{name} must be 1-D, got shape {arr.shape}")
    if not allow_empty and arr.size == 0:
        raise StatsInputError(f"{name} is empty")
    if finite and not np.all(np.isfinite(arr)):
        bad = int((~np.isfinite(arr)).sum())
        raise StatsInputError(f"{name} contains {bad} NaN/inf value(s)")
    return arr


def as_labels(x: Any, name: str = "y_true") -> np.ndarray:
    """Integer class labels from ints or integral floats (predictions.parquet stores them as float)."""
    arr = as_1d(x, name)
    if not np.all(arr == np.round(arr)):
        raise StatsInputError(f"{name} must hold integer class labels, got non-integral values")
    return arr.astype(np.int64)


def as_scores(x: Any, name: str) -> np.ndarray:
    """1-D scores or 2-D (n, K) class probabilities, finite."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim not in (1, 2):
        raise StatsInputError(f"{name} must be 1-D scores or a 2-D (n, K) probability matrix, got {arr.shape}")
    if arr.shape[0] == 0:
        raise StatsInputError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise StatsInputError(f"{name} contains {int((~np.isfinite(arr)).sum())} NaN/inf value(s)")
    return arr


def as_survival(y: Any, name: str = "y_true") -> tuple[np.ndarray, np.ndarray]:
    """(time, event) from a 2-tuple of arrays or an (n, 2) array; event must be 0/1, time finite."""
    if isinstance(y, tuple) and len(y) == 2:
        time, event = y
    else:
        arr = np.asarray(y, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise StatsInputError(
                f"{name} for survival must be (time, event) as a 2-tuple or an (n, 2) array, got shape {arr.shape}")
        time, event = arr[:, 0], arr[:, 1]
    time = as_1d(time, f"{name} time")
    event = as_1d(event, f"{name} event")
    check_same_length(**{f"{name} time": time, f"{name} event": event})
    if not np.all((event == 0) | (event == 1)):
        raise StatsInputError(f"{name} event must be 0 (censored) or 1 (event)")
    if np.any(time < 0):
        raise StatsInputError(f"{name} time must be non-negative")
    return time, event.astype(np.int64)


def check_same_length(**arrays: np.ndarray) -> int:
    """Common first-axis length of the named arrays, or an error listing every length."""
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k}={v}" for k, v in lengths.items())
        raise StatsInputError(f"length mismatch: {shown}")
    return next(iter(lengths.values()))


def check_n_boot(n_boot: int, name: str = "n_boot") -> int:
    if not isinstance(n_boot, (int, np.integer)) or isinstance(n_boot, bool) or n_boot < 1:
        raise StatsInputError(f"{name} must be a positive integer, got {n_boot!r}")
    return int(n_boot)
