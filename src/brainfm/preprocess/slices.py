"""Axial slice sampling for pretraining (paper §4.1.2) and blank-slice flags.

The paper samples 128 of the 256 axial positions of the cube "according to a one-dimensional
normal distribution centred at the midpoint (mu=128, sigma=50)". We read this as successive
sampling without replacement: each draw picks a not-yet-chosen position k with probability
proportional to N(k; mu, sigma) over the remaining positions (numpy's ``choice(replace=False,
p=...)``, the Plackett-Luce / Gumbel-top-k scheme). Note what that implies: with n=128 of
N=256, positions near the centre are almost always chosen, so the *inclusion* frequency per
position is flatter than the normal pdf itself (see ``tests/preprocess/test_slices.py``); only
the first draw follows the truncated normal exactly.

Every volume gets its own generator seeded from (run seed, volume key) through a stable hash,
so the chosen slices do not depend on processing order, ``n_jobs`` or Python's hash seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

__all__ = ["slice_probabilities", "sample_slice_indices", "volume_rng", "blank_flags", "stable_seed"]


def stable_seed(*parts: object) -> int:
    """A 63-bit integer from ``parts`` that is the same in every process and Python version."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little") >> 1


def volume_rng(seed: int, key: Iterable[object], stream: str = "slices") -> np.random.Generator:
    """The generator for the random choices made about one volume (slices, perturbation field)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, stable_seed(stream, *key)])


def slice_probabilities(n_positions: int = 256, mu: float = 128.0, sigma: float = 50.0) -> np.ndarray:
    """N(mu, sigma) evaluated at the integer positions 0..n_positions-1, normalised to sum 1."""
    if n_positions < 1 or sigma <= 0:
        raise ValueError(f"need n_positions >= 1 and sigma > 0 (got {n_positions}, {sigma})")
    k = np.arange(n_positions, dtype=np.float64)
    w = np.exp(-0.5 * ((k - mu) / sigma) ** 2)
    if w.sum() <= 0 or not np.isfinite(w).all():
        raise ValueError(f"mu={mu} is too far from the axis 0..{n_positions - 1} for sigma={sigma}")
    return w / w.sum()


def sample_slice_indices(rng: np.random.Generator, n_positions: int = 256, n: int = 128, mu: float = 128.0,
                         sigma: float = 50.0) -> np.ndarray:
    """``n`` distinct axial positions in ``[0, n_positions)`` drawn without replacement, p ∝ N(mu, sigma).

    Returned sorted (storage order follows anatomy); int64. ``n >= n_positions`` returns every position.
    """
    if n >= n_positions:
        return np.arange(n_positions, dtype=np.int64)
    p = slice_probabilities(n_positions, mu, sigma)
    n_support = int(np.count_nonzero(p))
    if n > n_support:  # far tails underflow to 0; take them uniformly after the support is exhausted
        p = p + 1e-300
        p /= p.sum()
    idx = rng.choice(n_positions, size=int(n), replace=False, p=p)
    return np.sort(idx.astype(np.int64))


def blank_flags(slices: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    """True for slices (n, H, W) whose fraction of non-zero pixels is below ``threshold``."""
    s = np.asarray(slices)
    frac = np.count_nonzero(s.reshape(s.shape[0], -1), axis=1) / float(np.prod(s.shape[1:]))
    return frac < float(threshold)
