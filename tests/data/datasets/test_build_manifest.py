"""Building manifests from fake trees: exactly the expected rows, and every way a tree can be wrong is named."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from brainfm.data.datasets import build_manifest, check_dataset, ensure_available, load_dataset_entry
from brainfm.data.manifest import read_manifest
from brainfm.errors import ConfigError, DataMissingError, ManifestError


def test_toy_manifest_is_exactly_as_expected(tmp_path, toy, write_entry, toy_entry, toy_rel, toy_labels, toy_files):
    entry = load_dataset_entry(write_entry(tmp_path / "entries", toy_entry()))
    out = tmp_path / "results" / "toy" / "manifest.parquet"
    df = build_manifest(entry, toy, out)
    labels = toy_labels.set_index("participant_id")
    rows = []
    for site, subject, session, modality in sorted(toy_files, key=lambda f: (f[1], f[2], f[3])):
        lab = labels.loc[subject]
        rows.append({
            "dataset": "toy", "subject": subject, "session": session, "modality": modality,
            "path": os.path.relpath(toy / toy_rel(site, subject, session, modality), out.parent),
            "site": site, "split": "", "age": float(lab.age),
            "sex": {"male": "M", "female": "F"}[lab.gender],
            "demented": {0.0: 0.0, 0.5: 1.0, 1.0: 1.0}.get(lab.cdr, np.nan), "diagnosis": lab.group,
        })
    expected = pd.DataFrame(rows)
    pd.testing.assert_frame_equal(df, expected, check_dtype=False)
    back = read_manifest(out)  # validates: the files exist relative to the manifest
    pd.testing.assert_frame_equal(back.drop(columns=[]), expected, check_dtype=False)
    assert back["age"].dtype == float and back["demented"].dtype == float


def test_missing_or_empty_root_explains_how_to_get_the_data(tmp_path, toy, write_entry, toy_entry, toy_rel):
    entry = load_dataset_entry(write_entry(tmp_path / "entries", toy_entry()))
    missing = tmp_path / "nowhere"
    for call in (lambda: build_manifest(entry, missing, tmp_path / "m.parquet"),
                 lambda: ensure_available(entry, missing)):
        with pytest.raises(DataMissingError) as err:
            call()
        msg = str(err.value)
        assert "dataset 'toy'" in msg and str(missing) in msg and "does not exist" in msg
        assert "registration" in msg and "Register at https://example.org/toy" in msg
    empty = tmp_path / "empty"
    (empty / "junk").mkdir(parents=True)
    (empty / "junk" / "notes.txt").write_text("x")
    with pytest.raises(DataMissingError, match="1 file\\(s\\) under the root, none matching"):
        build_manifest(entry, empty, tmp_path / "m.parquet")
    broken = tmp_path / "annex"
    link = broken / toy_rel("siteA", "01", "1", "T1")
    link.parent.mkdir(parents=True)
    link.symlink_to(tmp_path / "annex-object-not-fetched")
    with pytest.raises(DataMissingError, match="broken links"):
        build_manifest(entry, broken, tmp_path / "m.parquet")
    (toy / "participants.csv").unlink()
    with pytest.raises(DataMissingError, match="label file 'participants.csv' is missing"):
        build_manifest(entry, toy, tmp_path / "m.parquet")


def test_symlinked_files_keep_their_names_and_link_cycles_end(tmp_path, toy, write_entry, toy_entry, toy_rel):
    blob = tmp_path / "annex" / "MD5E-s352--0123abcd.nii.gz"
    blob.parent.mkdir()
    target = toy / toy_rel("siteB", "04", "1", "T1")
    target.rename(blob)
    target.symlink_to(blob)  # a DataLad/git-annex file: a link to a content-addressed blob
    (toy / "siteA" / "loop").symlink_to(toy)  # a directory cycle
    entry = load_dataset_entry(write_entry(tmp_path / "entries", toy_entry()))
    out = tmp_path / "results" / "manifest.parquet"
    df = build_manifest(entry, toy, out)
    assert len(df) == 8 and df.loc[df.subject == "04", "path"].item().endswith("sub-04_ses-1_T1w.nii.gz")
    assert read_manifest(out)["path"].tolist() == df["path"].tolist()


def test_ambiguous_or_duplicate_files_are_errors(tmp_path, toy, volume, write_entry, toy_entry):
    both = toy_entry(modalities={"T1": "{site}/sub-{subject}/ses-{session}/anat/*.nii.gz",
                                 "FLAIR": "{site}/sub-{subject}/ses-{session}/anat/*FLAIR.nii.gz"})
    with pytest.raises(ConfigError, match="matches the patterns of both T1 and FLAIR"):
        build_manifest(load_dataset_entry(write_entry(tmp_path / "a", both)), toy, tmp_path / "m.parquet")
    volume(toy / "siteA/sub-01/ses-1/anat/sub-01_ses-1_acq-fast_T1w.nii.gz")
    loose = toy_entry(
        modalities={"T1": "{site}/sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}*_T1w.nii.gz"})
    with pytest.raises(ManifestError, match="several files for one.*placeholder such as"):
        build_manifest(load_dataset_entry(write_entry(tmp_path / "b", loose)), toy, tmp_path / "m.parquet")


def test_split_file_and_fixed_splits_are_applied(tmp_path, toy, write_entry, toy_entry):
    pd.DataFrame({"id": ["01", "02", "03", "04"], "set": ["training", "testing", "training", "training"]}).to_csv(
        toy / "splits.csv", index=False)
    split = {"type": "file", "file": "splits.csv", "ids": {"subject": "id"}, "column": "set",
             "values": {"training": "train", "testing": "test"}}
    entry = load_dataset_entry(write_entry(tmp_path / "file", toy_entry(split=split)))
    df = build_manifest(entry, toy, tmp_path / "m.parquet")
    assert df.groupby("subject")["split"].first().to_dict() == {"01": "train", "02": "test", "03": "train",
                                                                "04": "train"}
    report = check_dataset(entry, toy)
    assert report["paper"]["comparison"]["n_subjects"]["match"] is True
    assert report["split"]["subjects_per_split"] == {"test": 1, "train": 3}
    pd.DataFrame({"id": ["01", "02"], "set": ["training", "testing"]}).to_csv(toy / "splits.csv", index=False)
    with pytest.raises(ManifestError, match="2 subject\\(s\\) on disk are not in the split file: 03, 04"):
        build_manifest(entry, toy, tmp_path / "m.parquet")
    lenient = load_dataset_entry(write_entry(tmp_path / "file2", toy_entry(split={**split, "missing": "unassigned"})))
    df = build_manifest(lenient, toy, tmp_path / "m.parquet")
    assert df.groupby("subject")["split"].first().to_dict() == {"01": "train", "02": "test", "03": "", "04": ""}
    fixed = {"type": "fixed", "test_path_regex": "^siteB/", "test_subjects": ["01"]}
    entry = load_dataset_entry(write_entry(tmp_path / "fixed", toy_entry(split=fixed)))
    df = build_manifest(entry, toy, tmp_path / "m.parquet")
    assert df.groupby("subject")["split"].first().to_dict() == {"01": "test", "02": "train", "03": "test",
                                                                "04": "test"}
