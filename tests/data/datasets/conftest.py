"""Fake dataset trees for the dataset tests: tiny NIfTI (and Analyze) files laid out like real releases.

Every expected value in the tests is written out by hand from the constants here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

TOY_FILES = [  # (site, subject, session, modality)
    ("siteA", "01", "1", "T1"), ("siteA", "01", "1", "FLAIR"),
    ("siteA", "02", "1", "T1"), ("siteA", "02", "1", "FLAIR"), ("siteA", "02", "2", "T1"),
    ("siteB", "03", "1", "T1"), ("siteB", "03", "1", "FLAIR"),
    ("siteB", "04", "1", "T1"),
]
TOY_LABELS = pd.DataFrame({
    "participant_id": ["01", "02", "03", "04"], "age": [70, 75, 80, 65],
    "gender": ["male", "female", "male", "female"], "cdr": [0, 0.5, 1, None], "group": ["CN", "MCI", "AD", "CN"],
})
# (subject, session, CDR) of an OASIS-1-like tree; OAS1_0456_MR1 is in the CSV only
OASIS_SESSIONS = [("OAS1_0001", "MR1", 0), ("OAS1_0001", "MR2", None), ("OAS1_0002", "MR1", 0.5),
                  ("OAS1_0003", "MR1", 2), ("OAS1_0004", "MR1", None)]


def _volume(path: Path, analyze: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cls = nib.AnalyzeImage if analyze else nib.Nifti1Image
    nib.save(cls(np.zeros((2, 2, 2), np.float32), np.eye(4)), str(path))


def _write_entry(directory: Path, data: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _toy_entry(**overrides) -> dict:
    data = {
        "name": "toy", "title": "Toy dataset", "access": "registration", "homepage": "https://example.org/toy",
        "how_to_get": "1. Register at https://example.org/toy and download toy.tar.\n2. Unpack it into the root.",
        "license": "CC BY 4.0", "citation": "Doe J. Toy data. 2024.",
        "modalities": {
            "T1": "{site}/sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}_T1w.nii.gz",
            "FLAIR": "{site}/sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}_FLAIR.nii.gz",
        },
        "labels": {
            "file": "participants.csv", "ids": {"subject": "participant_id"},
            "columns": {"age": "age", "sex": "gender", "demented": "cdr", "diagnosis": "group"},
            "values": {"sex": {"male": "M", "female": "F"}, "demented": {0: 0, 0.5: 1, 1: 1}},
        },
        "roles": {"pretrain": False, "tasks": ["dementia"]},
        "split": {"type": "holdout", "test_fraction": 0.25, "seed": 0},
        "paper": {"section": "0", "text": "A toy cohort of four subjects.", "n_subjects": 4},
    }
    data.update(overrides)
    return data


def _toy_rel(site: str, subject: str, session: str, modality: str) -> str:
    suffix = "T1w" if modality == "T1" else "FLAIR"
    return f"{site}/sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}_{suffix}.nii.gz"


@pytest.fixture
def volume() -> Callable[..., None]:
    """Write a 2x2x2 image at a path (NIfTI, or an Analyze .img/.hdr pair with ``analyze=True``)."""
    return _volume


@pytest.fixture
def write_entry() -> Callable[[Path, dict], Path]:
    """Write an entry mapping as ``<directory>/<name>.yaml`` and return the path."""
    return _write_entry


@pytest.fixture
def toy_entry() -> Callable[..., dict]:
    """A fresh toy entry mapping; keyword arguments replace top-level fields."""
    return _toy_entry


@pytest.fixture
def toy_rel() -> Callable[[str, str, str, str], str]:
    """Path of a toy image relative to the toy root."""
    return _toy_rel


@pytest.fixture
def toy_files() -> list[tuple[str, str, str, str]]:
    """(site, subject, session, modality) of every image in the ``toy`` root."""
    return list(TOY_FILES)


@pytest.fixture
def toy_labels() -> pd.DataFrame:
    """The toy root's participants.csv as written."""
    return TOY_LABELS.copy()


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    """A toy dataset root: the images of TOY_FILES, participants.csv and a file that is not an image."""
    root = tmp_path / "raw"
    for f in TOY_FILES:
        _volume(root / _toy_rel(*f))
    TOY_LABELS.to_csv(root / "participants.csv", index=False)
    (root / "README.txt").write_text("not an image")
    return root


@pytest.fixture
def oasis_tree(tmp_path: Path) -> tuple[Path, list[tuple[str, str, float | None]]]:
    """An OASIS-1-like root (processed and raw Analyze images per session, the demographics CSV) and its
    (subject, session, CDR) rows."""
    root = tmp_path / "oasis"
    for subject, session, _ in OASIS_SESSIONS:
        base = root / "oasis_cross-sectional_disc1" / "disc1" / f"{subject}_{session}"
        _volume(base / "PROCESSED/MPRAGE/T88_111" / f"{subject}_{session}_mpr_n4_anon_111_t88_masked_gfc.img",
                analyze=True)
        _volume(base / "RAW" / f"{subject}_{session}_mpr-1_anon.img", analyze=True)  # not the processed image
    pd.DataFrame({"ID": [f"{s}_{m}" for s, m, _ in OASIS_SESSIONS] + ["OAS1_0456_MR1"],
                  "M/F": ["F", "F", "M", "F", "M", "M"], "Hand": "R", "Age": [74, 74, 55, 80, 23, 60],
                  "Educ": None, "SES": None, "MMSE": [29, 29, 27, 15, None, 30],
                  "CDR": [c for *_, c in OASIS_SESSIONS] + [0]}).to_csv(root / "oasis_cross-sectional.csv",
                                                                         index=False)
    return root, list(OASIS_SESSIONS)
