"""Image fingerprints: the same scan found in two collections, whatever its file format.

One MRI scan can sit in several public collections (BraTS 2021, UPENN-GBM and UCSF-PDGM cases
reappear in BraTS2025-GLI-PRE), re-saved with another dtype, scaling or axis order. Subject ids
do not match across collections, so leakage between a pretraining corpus and a downstream test
set is found from the pixels: :func:`image_fingerprint` reduces a volume in canonical (RAS+)
orientation to its foreground box, averages it onto a coarse ``GRID``³ grid, rescales the
intensities by robust percentiles of the foreground and quantises them to ``LEVELS`` levels.
Re-saving (float32 ↔ int16 with a scale), flipping the voxel axes (the loader reorients to RAS+)
or padding the background leaves it within one level per cell; two different brains differ in
many cells by several levels. :func:`match_fingerprints` compares every pair with that tolerance
and :func:`check_scan_leakage` stops a run naming both files.

Only numpy: fingerprints are computed in the preprocessing workers and compared anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from brainfm.errors import InputError, LeakageError
from brainfm.frames import read_frames

__all__ = ["GRID", "LEVELS", "FINGERPRINT_FILE", "image_fingerprint", "decode_fingerprint", "match_fingerprints",
           "check_scan_leakage", "read_fingerprints"]

GRID = 16
LEVELS = 16
#: written by the preprocess step next to its report.json, one row per volume
FINGERPRINT_FILE = "fingerprints.parquet"
#: two fingerprints match when at most this fraction of cells differ by more than one level ...
MAX_FAR_CELLS = 0.01
#: ... and their mean absolute difference is at most this many levels
MAX_MEAN_LEVELS = 0.35


def image_fingerprint(data: np.ndarray) -> str:
    """A hex string of ``GRID``³ cells quantised to ``LEVELS`` levels (``data`` in RAS+ orientation)."""
    vol = np.asarray(data, dtype=np.float64)
    if vol.ndim != 3:
        raise ValueError(f"a fingerprint needs a 3D volume, got shape {vol.shape}")
    finite = np.where(np.isfinite(vol), vol, 0.0)
    fg = np.abs(finite) > 1e-6 * max(float(np.abs(finite).max()), 1e-12)
    if not fg.any():
        return "0" * GRID**3
    box = tuple(slice(int(ix.min()), int(ix.max()) + 1) for ix in np.nonzero(fg))
    vol, fg = finite[box], fg[box]
    lo, hi = np.percentile(vol[fg], [1.0, 99.0])
    scaled = np.clip((vol - lo) / max(hi - lo, 1e-12), 0.0, 1.0) * fg
    coarse = _block_mean(scaled, GRID)
    levels = np.clip(np.floor(coarse * LEVELS), 0, LEVELS - 1).astype(np.uint8)
    return "".join(f"{v:x}" for v in levels.ravel())


def _block_mean(vol: np.ndarray, n: int) -> np.ndarray:
    """Average ``vol`` over an ``n``³ grid of (nearly) equal blocks; axes shorter than ``n`` are repeated."""
    for axis in range(3):
        size = vol.shape[axis]
        if size < n:
            vol = np.repeat(vol, int(np.ceil(n / size)), axis=axis)
            size = vol.shape[axis]
        edges = np.linspace(0, size, n + 1).round().astype(int)
        sums = np.add.reduceat(vol, edges[:-1], axis=axis)
        shape = [1, 1, 1]
        shape[axis] = n
        vol = sums / np.diff(edges).reshape(shape)
    return vol


def decode_fingerprint(fp: str) -> np.ndarray:
    """The quantised cells of a fingerprint as uint8 (``GRID**3``,)."""
    if len(fp) != GRID**3:
        raise ValueError(f"a fingerprint has {GRID**3} hex digits, got {len(fp)}")
    return np.frombuffer(bytes.fromhex("".join("0" + c for c in fp)), dtype=np.uint8)


def match_fingerprints(a: pd.DataFrame, b: pd.DataFrame, chunk: int = 8192) -> pd.DataFrame:
    """Pairs of rows of ``a`` and ``b`` (frames with ``fingerprint`` and ``path``) holding the same scan.

    Scales to a whole pretraining corpus: squared distances come from one matrix product per chunk
    of ``b`` (a same-scan pair has a mean squared level difference below 1), and only those
    candidates are checked against the exact criteria (:data:`MAX_MEAN_LEVELS`, :data:`MAX_FAR_CELLS`).
    """
    columns = ["path_a", "path_b", "mean_levels", "far_cells"]
    blank = "0" * GRID**3
    a = a[a["fingerprint"] != blank]  # an empty volume says nothing
    if a.empty or b.empty:
        return pd.DataFrame(columns=columns)
    xa = np.stack([decode_fingerprint(f) for f in a["fingerprint"]]).astype(np.float32)
    na = (xa**2).sum(1)
    records = []
    for start in range(0, len(b), chunk):
        part = b.iloc[start:start + chunk]
        xb = np.stack([decode_fingerprint(f) for f in part["fingerprint"]]).astype(np.float32)
        sq = (na[:, None] + (xb**2).sum(1)[None, :] - 2.0 * xa @ xb.T) / xa.shape[1]
        for i, j in zip(*np.nonzero(sq <= 1.0)):
            diff = np.abs(xa[i] - xb[j])
            mean, far = float(diff.mean()), float((diff > 1).mean())
            if mean <= MAX_MEAN_LEVELS and far <= MAX_FAR_CELLS:
                records.append({"path_a": str(a["path"].iloc[i]), "path_b": str(part["path"].iloc[j]),
                                "mean_levels": mean, "far_cells": far})
    return pd.DataFrame.from_records(records, columns=columns)


def check_scan_leakage(test_scans: pd.DataFrame, pretrain_scans: pd.DataFrame, what: str) -> None:
    """Raise :class:`LeakageError` naming both files when a test scan is also a pretraining scan."""
    matches = match_fingerprints(test_scans, pretrain_scans)
    if len(matches):
        pairs = [f"{r.path_a} == {r.path_b}" for r in matches.itertuples()]
        raise LeakageError(f"{what}: test scans identical to pretraining scans (image fingerprints)", pairs)


def read_fingerprints(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate fingerprint files (each a preprocess step's ``fingerprints.parquet``)."""
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.is_file():
            raise InputError(p, "no image fingerprints (preprocess this dataset again to compute them)")
    if not paths:
        return pd.DataFrame(columns=["path", "fingerprint"])
    return read_frames(paths, "image fingerprints", ["path", "fingerprint"])
