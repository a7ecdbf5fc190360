"""Segmentation fixtures: hand-made NIfTI cases (conversion tests) and a prepared phantom benchmark.

The prepared benchmark is the real pipeline on a small phantom tumour cohort (10 subjects at
3 mm, 2 held out): raw dataset, nnU-Net fingerprint, plans with ``2d_48`` and ``3d_32``
configurations, preprocessing and the fold split. It is built once per session (about a minute
on 2 cores).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainfm.segmentation.cases import MODALITIES

#: tiny DINOv3-style ViT of the tests (embed 192, depth 4, patch 8) at the 48 px 2D patch
TINY_VIT = {"arch": "vit_small_patch16_dinov3", "embed_dim": 192, "depth": 4, "num_heads": 3, "patch_size": 8,
            "img_size": 48}
#: tiny BrainIAC-v2-like 3D ViT (48-d, 4 blocks, 16^3 patches) at the 32^3 patch
TINY_VIT3D = {"img_size": 32, "hidden_size": 48, "mlp_dim": 96, "num_layers": 4, "num_heads": 4}
SHAPE = (12, 14, 10)


def write_case(root: Path, subject: str, *, labels=(1, 2, 3), shape=SHAPE, mask_shape=None, mask_affine=None,
               modalities=MODALITIES, seed: int = 0) -> list[dict]:
    """Four random images and a nested tumour mask of ``subject``; returns its manifest rows."""
    import nibabel as nib

    rng = np.random.default_rng(seed)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    folder = root / subject
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for m in modalities:
        path = folder / f"{subject}_{m}.nii.gz"
        nib.save(nib.Nifti1Image(rng.normal(100, 20, shape).astype(np.float32), affine), str(path))
        rows.append({"dataset": "synth", "subject": subject, "session": "ses-01", "modality": m,
                     "path": str(path.relative_to(root)), "site": "a", "split": ""})
    mshape = mask_shape or shape
    zz, yy, xx = np.indices(mshape)
    c = np.array(mshape) / 2
    r = np.sqrt((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2)
    mask = np.zeros(mshape, np.uint8)
    mask[r < 4] = labels[1]  # outer shell (oedema)
    mask[r < 3] = labels[0]  # core
    mask[r < 1.5] = labels[2]  # enhancing centre
    mpath = folder / f"{subject}_seg.nii.gz"
    nib.save(nib.Nifti1Image(mask, affine if mask_affine is None else mask_affine), str(mpath))
    for row in rows:
        row["mask_path"] = str(mpath.relative_to(root))
    return rows


def manifest_of(root: Path, rows: list[dict], test: set[str]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df["split"] = np.where(df["subject"].isin(test), "test", "train")
    df.attrs["root"] = str(root)
    return df


@pytest.fixture(scope="session")
def phantom_cohort(tmp_path_factory) -> pd.DataFrame:
    from brainfm.data.manifest import read_manifest
    from brainfm.data.phantom import generate_dataset

    out = tmp_path_factory.mktemp("phantom_tumor")
    generate_dataset("phantom_tumor", out, n_subjects=10, voxel_size=3.0, progress=False)
    return read_manifest(out / "manifest.parquet")


@pytest.fixture(scope="session")
def prepared(phantom_cohort, tmp_path_factory):
    from brainfm.data.datasets.labelmap import label_map_for
    from brainfm.segmentation import prepare_benchmark

    return prepare_benchmark(phantom_cohort, label_map_for("phantom_tumor"), tmp_path_factory.mktemp("bench"),
                             "phantom-tumor", configurations=["2d_48", "3d_32"], batch_sizes={"2d_48": 4, "3d_32": 2},
                             processes=1)


@pytest.fixture
def case_writer():
    """:func:`write_case` (hand-made case files) for tests."""
    return write_case


@pytest.fixture
def make_manifest():
    """:func:`manifest_of` (manifest rows -> DataFrame with a fixed test set)."""
    return manifest_of


@pytest.fixture
def tiny_vit() -> dict:
    return dict(TINY_VIT)


@pytest.fixture
def tiny_vit3d() -> dict:
    return dict(TINY_VIT3D)
