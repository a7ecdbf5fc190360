"""Fixtures: small real sharded stores (brainfm.preprocess.store) holding synthetic brain-like images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def _ellipse_slice(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    a, b = rng.uniform(0.25, 0.42, 2)
    img = ((xx / a) ** 2 + (yy / b) ** 2 < 1).astype(np.float32)
    for _ in range(3):  # "ventricles" / lesions of varying size and position
        cx, cy = rng.uniform(-0.15, 0.15, 2)
        r = rng.uniform(0.03, 0.12)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.uniform(0.2, 2.0)
    img += 0.05 * rng.standard_normal(img.shape).astype(np.float32) * (img > 0)
    return img


def write_slice_store(path: Path, n: int = 48, size: int = 32, n_blank: int = 6, seed: int = 0,
                      shard_size: int = 16) -> Path:
    """A real slice store: ``n`` slices of which ``n_blank`` are all-zero and flagged blank."""
    from brainfm.preprocess.store import ShardWriter

    rng = np.random.default_rng(seed)
    blank_at = set(rng.choice(n, size=n_blank, replace=False).tolist()) if n_blank else set()
    with ShardWriter(path, (size, size), "slice", {"test": True}, shard_size=shard_size) as w:
        for i in range(n):
            blank = i in blank_at
            arr = np.zeros((size, size), np.float32) if blank else _ellipse_slice(rng, size)
            w.add({"dataset": "synth", "subject": f"s{i // 8:03d}", "session": "0", "modality": "T1",
                   "slice_index": i % 8, "blank": blank}, arr)
    return path


def write_volume_store(path: Path, n_subjects: int = 6, shape=(12, 24, 24), modalities=("T1", "T2", "FLAIR"),
                       seed: int = 0) -> Path:
    from brainfm.preprocess.store import ShardWriter

    rng = np.random.default_rng(seed)
    with ShardWriter(path, shape, "volume", {"test": True}, shard_size=4) as w:
        for s in range(n_subjects):
            base = np.stack([_ellipse_slice(rng, shape[1]) for _ in range(shape[0])])
            for k, mod in enumerate(modalities):
                w.add({"dataset": "synth", "subject": f"s{s:03d}", "session": "0", "modality": mod},
                      (base * (1.0 + 0.5 * k)).astype(np.float32))
    return path


@pytest.fixture
def make_slice_store():
    """The store writer itself, for tests that need a special store."""
    return write_slice_store


@pytest.fixture(scope="session")
def slice_store(tmp_path_factory) -> Path:
    return write_slice_store(tmp_path_factory.mktemp("stores") / "slices")


@pytest.fixture(scope="session")
def volume_store(tmp_path_factory) -> Path:
    return write_volume_store(tmp_path_factory.mktemp("stores") / "volumes")
