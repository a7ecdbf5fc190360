"""The nnU-Net raw dataset written from a manifest: layout, coding, test split and quarantine."""

from __future__ import annotations

import json
import logging

import nibabel as nib
import numpy as np
import pytest

from brainfm.errors import ConfigError, ManifestError
from brainfm.data.datasets.labelmap import label_map_for
from brainfm.segmentation.cases import MODALITIES
from brainfm.segmentation.raw_dataset import open_raw_dataset, write_raw_dataset


@pytest.fixture
def cohort(tmp_path, case_writer, make_manifest):
    root = tmp_path / "data"
    rows = []
    for i in range(6):
        rows += case_writer(root, f"sub-{i:02d}", labels=(1, 2, 4), seed=i)
    return root, make_manifest(root, rows, test={"sub-04", "sub-05"})


def test_layout_channels_and_coding(cohort, tmp_path):
    root, manifest = cohort
    lm = label_map_for("brats2021")
    raw = write_raw_dataset(manifest, lm, tmp_path / "raw", "brats21-test")
    assert raw.path.name == "Dataset001_brats21-test"
    assert raw.case_ids("train") == [f"sub-{i:02d}" for i in range(4)]
    assert raw.case_ids("test") == ["sub-04", "sub-05"]
    dj = json.loads((raw.path / "dataset.json").read_text())
    assert dj["channel_names"] == {"0": "T1", "1": "T1c", "2": "T2", "3": "FLAIR"}
    assert dj["labels"] == {"background": 0, "WT": [1, 2, 3], "TC": [2, 3], "ET": 3}
    assert dj["regions_class_order"] == [1, 2, 3] and dj["numTraining"] == 4
    for cid, part in (("sub-00", "Tr"), ("sub-05", "Ts")):
        for c, m in enumerate(MODALITIES):  # channel c is the modality's own file, unchanged
            link = raw.path / f"images{part}" / f"{cid}_{c:04d}.nii.gz"
            assert link.resolve() == (root / cid / f"{cid}_{m}.nii.gz").resolve()
        src = nib.load(str(root / cid / f"{cid}_seg.nii.gz"))
        out = nib.load(str(raw.path / f"labels{part}" / f"{cid}.nii.gz"))
        np.testing.assert_array_equal(out.affine, src.affine)
        raw_mask = np.asanyarray(src.dataobj)
        expected = np.select([raw_mask == 4, raw_mask == 1, raw_mask == 2], [3, 2, 1], 0)  # nnU-Net's BraTS coding
        np.testing.assert_array_equal(np.asanyarray(out.dataobj), expected)
    again = open_raw_dataset(raw.path)
    assert again.case_ids("test") == raw.case_ids("test") and again.quarantined == ()


def test_copy_mode_and_nnunet_integrity_check(cohort, tmp_path):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    _, manifest = cohort
    raw = write_raw_dataset(manifest, label_map_for("brats2021"), tmp_path / "raw", "copied", link="copy")
    assert not (raw.path / "imagesTr" / "sub-00_0000.nii.gz").is_symlink()
    verify_dataset_integrity(str(raw.path), 1)  # nnU-Net's own checks: channels, labels, geometry


def test_bad_cases_are_quarantined_and_named(tmp_path, caplog, case_writer, make_manifest):
    root = tmp_path / "data"
    rows = []
    for i in range(5):
        rows += case_writer(root, f"ok-{i}", seed=i)
    rows += case_writer(root, "badlabel", labels=(1, 2, 4))  # BraTS 2021 codes in a 2023-coded dataset
    rows += case_writer(root, "badgrid", mask_shape=(12, 14, 11))
    rows += case_writer(root, "badaffine", mask_affine=np.diag([2.0, 2.0, 2.5, 1.0]))
    rows += case_writer(root, "nomod", modalities=("T1", "T1c", "FLAIR"))
    manifest = make_manifest(root, rows, test={"ok-4"})
    with caplog.at_level(logging.ERROR, logger="brainfm.segmentation"):
        raw = write_raw_dataset(manifest, label_map_for("brats2023_men"), tmp_path / "raw", "q")
    reasons = {q.case_id: q.reason for q in raw.quarantined}
    assert set(reasons) == {"badlabel", "badgrid", "badaffine", "nomod"}
    assert "label value(s) [4]" in reasons["badlabel"]
    assert "shape (12, 14, 10)" in reasons["badgrid"] and "(12, 14, 11)" in reasons["badgrid"]
    assert "affines" in reasons["badaffine"]
    assert "missing modality ['T2']" in reasons["nomod"]
    for cid, reason in reasons.items():
        assert reason.startswith(f"case {cid}:") and cid in caplog.text
    written = json.loads((raw.path / "quarantine.json").read_text())
    assert {q["case_id"] for q in written} == set(reasons)
    assert raw.case_ids("train") == [f"ok-{i}" for i in range(4)] and raw.case_ids("test") == ["ok-4"]
    assert sorted(p.name for p in (raw.path / "labelsTr").iterdir()) == [f"ok-{i}.nii.gz" for i in range(4)]


def test_unsplit_subjects_need_a_test_fraction(tmp_path, case_writer, make_manifest):
    root = tmp_path / "data"
    rows = []
    for i in range(10):
        rows += case_writer(root, f"s{i}", seed=i)
    manifest = make_manifest(root, rows, test=set())
    manifest["split"] = ""
    with pytest.raises(ConfigError, match="test_fraction"):
        write_raw_dataset(manifest, label_map_for("brats2023_men"), tmp_path / "raw", "x")
    a = write_raw_dataset(manifest, label_map_for("brats2023_men"), tmp_path / "raw", "x", test_fraction=0.2)
    b = write_raw_dataset(manifest, label_map_for("brats2023_men"), tmp_path / "raw2", "x", test_fraction=0.2)
    assert len(a.case_ids("test")) == 2 and a.case_ids("test") == b.case_ids("test")  # seeded


def test_no_usable_test_case_is_an_error(tmp_path, case_writer, make_manifest):
    root = tmp_path / "data"
    rows = case_writer(root, "a") + case_writer(root, "b", labels=(1, 2, 4))
    with pytest.raises(ManifestError, match="no usable test case.*label value"):
        write_raw_dataset(make_manifest(root, rows, test={"b"}), label_map_for("brats2023_men"), tmp_path / "raw", "x")
