"""Shared helpers for the preprocessing tests: a small synthetic NIfTI dataset and store comparison."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainfm.preprocess.store import ShardedStore, shard_name

CUBE = 24
PROTO = {"cube": CUBE, "downstream_shape": [12, 20, 20], "pretrain_slices": {"n": 8, "mu": 12, "sigma": 5},
         "shard_size_volumes": 2, "shard_size_slices": 6, "blank_threshold": 0.05}
AFFINES = [np.diag([2.0, 2.0, 2.0, 1.0]),
           np.array([[-2.0, 0, 0, 40], [0, 0, 2.2, -10], [0, 1.8, 0, 5], [0, 0, 0, 1]])]


def _subject(rng: np.random.Generator, shape) -> tuple[np.ndarray, np.ndarray]:
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    c = rng.uniform(-0.1, 0.1, 3)
    r2 = sum(((g - ci) / a) ** 2 for g, ci, a in zip(grids, c, rng.uniform(0.6, 0.85, 3)))
    brain = r2 < 1
    img = np.where(brain, 400 + 60 * rng.standard_normal(shape), 0.0)
    lesion = sum((g - ci) ** 2 for g, ci in zip(grids, c)) < 0.12
    img[lesion] += 500  # bright lesion, labelled 1
    img[brain & (grids[2] > 0.6 + c[2])] += 150
    return img.astype(np.float32), lesion.astype(np.uint8)


def _make_dataset(root: Path, n: int = 5, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        shape = tuple(int(s) for s in rng.integers(22, 34, 3))
        img, lab = _subject(rng, shape)
        aff = AFFINES[i % 2]
        nib.save(nib.Nifti1Image(img, aff), str(root / f"sub{i}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, aff), str(root / f"sub{i}_seg.nii.gz"))
        rows.append({"dataset": "toy", "subject": f"sub{i}", "session": "0", "modality": "T1",
                     "path": f"sub{i}.nii.gz", "mask_path": f"sub{i}_seg.nii.gz", "site": "a", "split": ""})
    return pd.DataFrame(rows)


def _assert_stores_equal(a: Path, b: Path, names=("downstream", "downstream_masks", "pretrain")) -> None:
    for name in names:
        sa, sb = ShardedStore(a / name), ShardedStore(b / name)
        pd.testing.assert_frame_equal(sa.index, sb.index)
        for s in range(sa.meta["n_shards"]):
            assert (a / name / shard_name(s)).read_bytes() == (b / name / shard_name(s)).read_bytes()


@pytest.fixture
def proto() -> dict:
    """A small protocol (cube 24) whose shard sizes split volumes across shards."""
    return {**PROTO, "pretrain_slices": dict(PROTO["pretrain_slices"])}


@pytest.fixture
def make_dataset():
    """``make_dataset(root, n=5, seed=0) -> manifest``: synthetic brains + lesion label maps as .nii.gz."""
    return _make_dataset


@pytest.fixture
def assert_stores_equal():
    """``assert_stores_equal(out_a, out_b, names=...)``: same index and byte-identical shards."""
    return _assert_stores_equal
