"""Dataset registry: every entry validates, and manifests built from fake trees are exactly right.

The fake trees are tiny NIfTI (and Analyze) files laid out like the real releases, so the real
registry entries (OASIS-1, LONG579, UCSF-PDGM, UPENN-GBM, BraTS 2021, IXI) are exercised against
the layouts they claim, and every expected value below is written out by hand.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import jsonschema
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from brainfm.data.manifest import read_manifest
from brainfm.data.registry import (
    build_manifest,
    check_dataset,
    compile_pattern,
    dataset_schema,
    ensure_available,
    list_datasets,
    load_dataset_entry,
)
from brainfm.errors import ConfigError, DataMissingError, InputError, ManifestError

REPO = Path(__file__).resolve().parents[2]
DATASETS = REPO / "config" / "datasets"
SEARCH = (DATASETS,)

# §4.1.1 lists these sources (the paper counts "PIOP1&2" as one of its 20).
PRETRAIN = {
    "icbm", "aomic_id1000", "aomic_piop1", "aomic_piop2", "long579", "abide", "ppmi", "tcga_gbm", "cptac_gbm",
    "glis_rt", "rembrandt", "ivygap", "brats2025_gli_pre", "brats2023_ped", "brats2023_men", "brats2023_ssa",
    "men_seg_class", "remind", "fastmri_brain", "acrin_dsc_mr_brain", "acrin_fmiso_brain",
}
DOWNSTREAM = {
    "brats2021", "brats2023_mets", "brats2023_men", "brats2024_goat", "abide", "adni", "oasis1", "ppmi", "ixi",
    "long579", "pixar", "atlas_v2", "ucsf_pdgm", "upenn_gbm", "brats2023_ped", "brats2023_ssa",
}


# ----------------------------------------------------------------------------- helpers
def _vol(path: Path, analyze: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cls = nib.AnalyzeImage if analyze else nib.Nifti1Image
    nib.save(cls(np.zeros((2, 2, 2), np.float32), np.eye(4)), str(path))


def _write_entry(directory: Path, data: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _toy(**overrides) -> dict:
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


def _toy_rel(site: str, subject: str, session: str, modality: str) -> str:
    suffix = "T1w" if modality == "T1" else "FLAIR"
    return f"{site}/sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}_{suffix}.nii.gz"


@pytest.fixture
def toy(tmp_path):
    root = tmp_path / "raw"
    for f in TOY_FILES:
        _vol(root / _toy_rel(*f))
    TOY_LABELS.to_csv(root / "participants.csv", index=False)
    (root / "README.txt").write_text("not an image")
    return root


# ----------------------------------------------------------------------------- the registry files
def test_schema_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(dataset_schema())


@pytest.mark.parametrize("path", sorted(DATASETS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_registry_entry_validates(path):
    entry = load_dataset_entry(path)
    assert entry.name == path.stem
    assert entry.access in ("open", "registration", "dua")
    assert entry.homepage.startswith(("http://", "https://"))
    for patterns in entry.modalities.values():
        for p in patterns:
            assert "subject" in compile_pattern(p, entry.placeholders).names
    assert entry.roles["pretrain"] or entry.roles["tasks"] or entry.paper["section"] == "5"


def test_registry_covers_every_dataset_the_paper_names():
    names = set(list_datasets(SEARCH))
    assert PRETRAIN | DOWNSTREAM <= names
    pretrain = {n for n in names if load_dataset_entry(n, SEARCH).roles["pretrain"]}
    assert pretrain == PRETRAIN  # 21 files for the paper's 20 sources (PIOP1&2 counted once)
    for name in DOWNSTREAM:
        assert load_dataset_entry(name, SEARCH).roles["tasks"], name
    adni = load_dataset_entry("adni", SEARCH)
    assert adni.split["type"] == "cv" and adni.paper["n_images"] == 2182 and adni.paper["n_subjects"] == 382
    oasis = load_dataset_entry("oasis1", SEARCH)
    assert oasis.paper["n_train"] + oasis.paper["n_test"] == oasis.paper["n_subjects"] == 235
    # open datasets with stable URLs carry a download section; DUA datasets never do
    assert load_dataset_entry("ixi", SEARCH).download
    assert not any(load_dataset_entry(n, SEARCH).download for n in names
                   if load_dataset_entry(n, SEARCH).access != "open")


def test_load_by_name_unknown_name_lists_known():
    with pytest.raises(ConfigError, match="no dataset registry entry named 'nope'.*ixi"):
        load_dataset_entry("nope", SEARCH)


@pytest.mark.parametrize("change, field", [
    ({"access": "free"}, "access"),
    ({"how_to_get": None}, "how_to_get"),
    ({"modalities": {"T1": "images/{id}.nii.gz"}}, "modalities/T1"),
    ({"modalities": {"T2w": "{subject}.nii.gz"}}, "modalities"),
    ({"split": {"type": "holdout", "seed": 1}}, "split"),
    ({"labels": {"file": "x.csv", "ids": {"subject": "id"}, "columns": {"age": "age"}, "bogus": 1}}, "labels"),
])
def test_schema_errors_name_file_and_field(tmp_path, change, field):
    data = _toy(**change)
    data = {k: v for k, v in data.items() if v is not None}
    path = _write_entry(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_dataset_entry(path)
    assert str(path) in str(err.value) and f"field '{field}" in str(err.value)


def test_semantic_errors(tmp_path):
    path = _write_entry(tmp_path / "a", {**_toy(), "name": "other"})
    path = path.rename(tmp_path / "a" / "toy.yaml")
    with pytest.raises(ConfigError, match="must equal the file name"):
        load_dataset_entry(path)
    bad_regex = _write_entry(tmp_path / "b", _toy(placeholders={"subject": "("}))
    with pytest.raises(ConfigError, match="placeholders/subject"):
        load_dataset_entry(bad_regex)
    no_session = _toy(modalities={"T1": "sub-{subject}.nii.gz"})
    no_session["labels"] = {**no_session["labels"], "ids": {"subject": "participant_id", "session": "ses"}}
    with pytest.raises(ConfigError, match="labels/ids/session"):
        load_dataset_entry(_write_entry(tmp_path / "c", no_session))


# ----------------------------------------------------------------------------- patterns
def test_compile_pattern_semantics():
    cp = compile_pattern("**/{subject}/{subject}_t1.nii.gz")
    assert cp.regex.fullmatch("BraTS2021_00000/BraTS2021_00000_t1.nii.gz")["subject"] == "BraTS2021_00000"
    assert cp.regex.fullmatch("a/b/S1/S1_t1.nii.gz")["subject"] == "S1"
    assert cp.regex.fullmatch("S1/S2_t1.nii.gz") is None  # back-reference: file must be in its own folder
    assert cp.regex.fullmatch("S1/S1_t1ce.nii.gz") is None
    star = compile_pattern("x/*/{subject}.nii")
    assert star.regex.fullmatch("x/a/s.nii") and not star.regex.fullmatch("x/a/b/s.nii")
    cls = compile_pattern("[ab]?/{subject}_{run}.img")
    assert cls.regex.fullmatch("a1/s_2.img").groupdict() == {"subject": "s", "run": "2"}
    assert cls.qualifiers == ("run",) and not cls.regex.fullmatch("c1/s_2.img")
    over = compile_pattern("{subject}-{session}.nii", {"session": r"\d{3}"})
    assert over.regex.fullmatch("BraTS-MEN-00001-000.nii").groupdict() == {"subject": "BraTS-MEN-00001",
                                                                           "session": "000"}
    with pytest.raises(ConfigError, match="needs a {subject}"):
        compile_pattern("{session}.nii")
    with pytest.raises(ConfigError, match="does not start a placeholder"):
        compile_pattern("{subject}/{1x}.nii")


# ----------------------------------------------------------------------------- building manifests
def test_toy_manifest_is_exactly_as_expected(tmp_path, toy):
    entry = load_dataset_entry(_write_entry(tmp_path / "entries", _toy()))
    out = tmp_path / "results" / "toy" / "manifest.parquet"
    df = build_manifest(entry, toy, out)
    labels = TOY_LABELS.set_index("participant_id")
    rows = []
    for site, subject, session, modality in sorted(TOY_FILES, key=lambda f: (f[1], f[2], f[3])):
        lab = labels.loc[subject]
        rows.append({
            "dataset": "toy", "subject": subject, "session": session, "modality": modality,
            "path": os.path.relpath(toy / _toy_rel(site, subject, session, modality), out.parent),
            "site": site, "split": "", "age": float(lab.age),
            "sex": {"male": "M", "female": "F"}[lab.gender],
            "demented": {0.0: 0.0, 0.5: 1.0, 1.0: 1.0}.get(lab.cdr, np.nan), "diagnosis": lab.group,
        })
    expected = pd.DataFrame(rows)
    pd.testing.assert_frame_equal(df, expected, check_dtype=False)
    back = read_manifest(out)  # validates: the files exist relative to the manifest
    pd.testing.assert_frame_equal(back.drop(columns=[]), expected, check_dtype=False)
    assert back["age"].dtype == float and back["demented"].dtype == float


def test_check_dataset_counts_and_paper_comparison(tmp_path, toy):
    entry = load_dataset_entry(_write_entry(tmp_path / "entries", _toy()))
    report = check_dataset(entry, toy)
    assert report["n_images"] == 8 and report["n_subjects"] == 4 and report["n_sessions"] == 5
    assert report["per_modality"] == {"T1": {"images": 5, "subjects": 4}, "FLAIR": {"images": 3, "subjects": 3}}
    assert report["missing_modalities"]["by_subject"] == {"04": ["FLAIR"]}
    assert report["labels"]["subjects_with_label"] == {"age": 4, "sex": 4, "demented": 3, "diagnosis": 4}
    assert report["labels"]["value_counts"]["demented"] == {"0": 1, "1": 2}
    assert report["paper"]["comparison"]["n_subjects"] == {"paper": 4, "found": 4, "match": True}


def test_unknown_label_ids_are_named_or_ignored_on_request(tmp_path, toy):
    extra = pd.concat([TOY_LABELS, pd.DataFrame({"participant_id": ["99", "77"], "age": [1, 2],
                                                 "gender": ["male", "male"], "cdr": [0, 0], "group": ["CN", "CN"]})])
    extra.to_csv(toy / "participants.csv", index=False)
    strict = load_dataset_entry(_write_entry(tmp_path / "strict", _toy()))
    with pytest.raises(ManifestError, match=r"2 id\(s\) not found among the images: subject=99; subject=77"):
        build_manifest(strict, toy, tmp_path / "m.parquet")
    data = _toy()
    data["labels"]["unknown_ids"] = "ignore"
    lenient = load_dataset_entry(_write_entry(tmp_path / "lenient", data))
    df = build_manifest(lenient, toy, tmp_path / "m.parquet")
    assert set(df["subject"]) == {"01", "02", "03", "04"}
    report = check_dataset(lenient, toy)
    assert report["labels"]["ids_without_images"] == {"count": 2, "examples": ["99", "77"]}
    # ignoring unknown ids never hides ids that match nothing at all
    TOY_LABELS.assign(participant_id=lambda d: "sub-" + d.participant_id).to_csv(toy / "participants.csv",
                                                                                   index=False)
    with pytest.raises(ManifestError, match="none of the 4 id"):
        build_manifest(lenient, toy, tmp_path / "m.parquet")


def test_duplicate_label_rows_error_or_merge(tmp_path, toy):
    dup = pd.concat([TOY_LABELS, pd.DataFrame({"participant_id": ["01", "02"], "age": [None, 99],
                                               "gender": ["male", "female"], "cdr": [None, 0.5],
                                               "group": [None, "MCI"]})])
    dup.to_csv(toy / "participants.csv", index=False)
    strict = load_dataset_entry(_write_entry(tmp_path / "strict", _toy()))
    with pytest.raises(ManifestError, match="duplicate label rows.*subject=01"):
        build_manifest(strict, toy, tmp_path / "m.parquet")
    data = _toy()
    data["labels"]["duplicates"] = "merge"
    merged = load_dataset_entry(_write_entry(tmp_path / "merge", data))
    df = build_manifest(merged, toy, tmp_path / "m.parquet").drop_duplicates("subject").set_index("subject")
    assert df.loc["01", "age"] == 70 and df.loc["01", "diagnosis"] == "CN"  # gaps filled by the full row
    assert np.isnan(df.loc["02", "age"]) and df.loc["02", "demented"] == 1  # 75 vs 99 disagree -> missing
    assert check_dataset(merged, toy)["labels"]["merged_conflicts"] == {"age": 1}


def test_missing_or_empty_root_explains_how_to_get_the_data(tmp_path, toy):
    entry = load_dataset_entry(_write_entry(tmp_path / "entries", _toy()))
    missing = tmp_path / "nowhere"
    for call in (lambda: build_manifest(entry, missing, tmp_path / "m.parquet"), lambda: ensure_available(entry, missing)):
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
    link = broken / _toy_rel("siteA", "01", "1", "T1")
    link.parent.mkdir(parents=True)
    link.symlink_to(tmp_path / "annex-object-not-fetched")
    with pytest.raises(DataMissingError, match="broken links"):
        build_manifest(entry, broken, tmp_path / "m.parquet")
    (toy / "participants.csv").unlink()
    with pytest.raises(DataMissingError, match="label file 'participants.csv' is missing"):
        build_manifest(entry, toy, tmp_path / "m.parquet")


def test_symlinked_files_keep_their_names_and_link_cycles_end(tmp_path, toy):
    blob = tmp_path / "annex" / "MD5E-s352--0123abcd.nii.gz"
    blob.parent.mkdir()
    target = toy / _toy_rel("siteB", "04", "1", "T1")
    target.rename(blob)
    target.symlink_to(blob)  # a DataLad/git-annex file: a link to a content-addressed blob
    (toy / "siteA" / "loop").symlink_to(toy)  # a directory cycle
    entry = load_dataset_entry(_write_entry(tmp_path / "entries", _toy()))
    out = tmp_path / "results" / "manifest.parquet"
    df = build_manifest(entry, toy, out)
    assert len(df) == 8 and df.loc[df.subject == "04", "path"].item().endswith("sub-04_ses-1_T1w.nii.gz")
    assert read_manifest(out)["path"].tolist() == df["path"].tolist()


def test_label_codes_must_be_mapped_and_numeric(tmp_path, toy):
    TOY_LABELS.assign(gender=["male", "female", "other", "female"]).to_csv(toy / "participants.csv", index=False)
    entry = load_dataset_entry(_write_entry(tmp_path / "entries", _toy()))
    with pytest.raises(ManifestError, match="no entry in labels/values/sex: other"):
        build_manifest(entry, toy, tmp_path / "m.parquet")
    TOY_LABELS.assign(age=["70", "75", "old", "65"]).to_csv(toy / "participants.csv", index=False)
    with pytest.raises(ManifestError, match="label 'age' must be numeric; found old"):
        build_manifest(entry, toy, tmp_path / "m.parquet")
    data = _toy()
    data["labels"]["na_values"] = ["old"]
    entry = load_dataset_entry(_write_entry(tmp_path / "na", data))
    df = build_manifest(entry, toy, tmp_path / "m.parquet")
    assert df.loc[df.subject == "03", "age"].isna().all()


def test_column_level_missing_codes_and_scale(tmp_path, toy):
    TOY_LABELS.assign(age=["70", "n.k.", "80", "65"], group=["CN", "n.k.", "AD", "CN"]).to_csv(
        toy / "participants.csv", index=False)
    data = _toy()
    data["labels"]["columns"]["age"] = {"column": "age", "missing": ["n.k."], "scale": 12}  # months
    entry = load_dataset_entry(_write_entry(tmp_path / "e", data))
    per = build_manifest(entry, toy, tmp_path / "m.parquet").drop_duplicates("subject")
    np.testing.assert_array_equal(per["age"].to_numpy(), [840, np.nan, 960, 780])
    assert per["diagnosis"].tolist() == ["CN", "n.k.", "AD", "CN"]  # the code is missing only where listed


def test_ambiguous_or_duplicate_files_are_errors(tmp_path, toy):
    both = _toy(modalities={"T1": "{site}/sub-{subject}/ses-{session}/anat/*.nii.gz",
                            "FLAIR": "{site}/sub-{subject}/ses-{session}/anat/*FLAIR.nii.gz"})
    with pytest.raises(ConfigError, match="matches the patterns of both T1 and FLAIR"):
        build_manifest(load_dataset_entry(_write_entry(tmp_path / "a", both)), toy, tmp_path / "m.parquet")
    _vol(toy / "siteA/sub-01/ses-1/anat/sub-01_ses-1_acq-fast_T1w.nii.gz")
    loose = _toy(modalities={"T1": "{site}/sub-{subject}/ses-{session}/anat/sub-{subject}_ses-{session}*_T1w.nii.gz"})
    with pytest.raises(ManifestError, match="several files for one.*placeholder such as"):
        build_manifest(load_dataset_entry(_write_entry(tmp_path / "b", loose)), toy, tmp_path / "m.parquet")


def test_split_file_and_fixed_splits_are_applied(tmp_path, toy):
    pd.DataFrame({"id": ["01", "02", "03", "04"], "set": ["training", "testing", "training", "training"]}).to_csv(
        toy / "splits.csv", index=False)
    split = {"type": "file", "file": "splits.csv", "ids": {"subject": "id"}, "column": "set",
             "values": {"training": "train", "testing": "test"}}
    entry = load_dataset_entry(_write_entry(tmp_path / "file", _toy(split=split)))
    df = build_manifest(entry, toy, tmp_path / "m.parquet")
    assert df.groupby("subject")["split"].first().to_dict() == {"01": "train", "02": "test", "03": "train",
                                                                "04": "train"}
    report = check_dataset(entry, toy)
    assert report["paper"]["comparison"]["n_subjects"]["match"] is True
    assert report["split"]["subjects_per_split"] == {"test": 1, "train": 3}
    pd.DataFrame({"id": ["01", "02"], "set": ["training", "testing"]}).to_csv(toy / "splits.csv", index=False)
    with pytest.raises(ManifestError, match="2 subject\\(s\\) on disk are not in the split file: 03, 04"):
        build_manifest(entry, toy, tmp_path / "m.parquet")
    lenient = load_dataset_entry(_write_entry(tmp_path / "file2", _toy(split={**split, "missing": "unassigned"})))
    df = build_manifest(lenient, toy, tmp_path / "m.parquet")
    assert df.groupby("subject")["split"].first().to_dict() == {"01": "train", "02": "test", "03": "", "04": ""}
    fixed = {"type": "fixed", "test_path_regex": "^siteB/", "test_subjects": ["01"]}
    entry = load_dataset_entry(_write_entry(tmp_path / "fixed", _toy(split=fixed)))
    df = build_manifest(entry, toy, tmp_path / "m.parquet")
    assert df.groupby("subject")["split"].first().to_dict() == {"01": "test", "02": "train", "03": "test",
                                                                "04": "test"}


def test_xlsx_labels(tmp_path, toy):
    data = _toy()
    data["labels"] = {**data["labels"], "file": "participants.xlsx"}
    entry = load_dataset_entry(_write_entry(tmp_path / "x", data))
    try:
        import openpyxl  # noqa: F401
    except ImportError:
        (toy / "participants.xlsx").write_bytes(b"PK\x03\x04")
        with pytest.raises(InputError, match="needs the 'openpyxl' package"):
            build_manifest(entry, toy, tmp_path / "m.parquet")
    else:
        TOY_LABELS.to_excel(toy / "participants.xlsx", index=False)
        df = build_manifest(entry, toy, tmp_path / "m.parquet")
        assert df.drop_duplicates("subject")["age"].tolist() == [70, 75, 80, 65]


# ----------------------------------------------------------------------------- real entries, fake trees
def test_oasis1_entry_on_an_oasis_like_tree(tmp_path):
    root = tmp_path / "oasis"
    sessions = [("OAS1_0001", "MR1", 0), ("OAS1_0001", "MR2", None), ("OAS1_0002", "MR1", 0.5),
                ("OAS1_0003", "MR1", 2), ("OAS1_0004", "MR1", None)]
    for subject, session, _ in sessions:
        base = root / "oasis_cross-sectional_disc1" / "disc1" / f"{subject}_{session}"
        _vol(base / "PROCESSED/MPRAGE/T88_111" / f"{subject}_{session}_mpr_n4_anon_111_t88_masked_gfc.img",
             analyze=True)
        _vol(base / "RAW" / f"{subject}_{session}_mpr-1_anon.img", analyze=True)  # not the processed image
    pd.DataFrame({"ID": [f"{s}_{m}" for s, m, _ in sessions] + ["OAS1_0456_MR1"],
                  "M/F": ["F", "F", "M", "F", "M", "M"], "Hand": "R", "Age": [74, 74, 55, 80, 23, 60],
                  "Educ": None, "SES": None, "MMSE": [29, 29, 27, 15, None, 30],
                  "CDR": [c for *_, c in sessions] + [0]}).to_csv(root / "oasis_cross-sectional.csv", index=False)
    entry = load_dataset_entry("oasis1", SEARCH)
    df = build_manifest(entry, root, tmp_path / "out" / "manifest.parquet")
    assert list(zip(df.subject, df.session)) == [(s, m) for s, m, _ in sessions]
    assert df["path"].str.endswith("_mpr_n4_anon_111_t88_masked_gfc.img").all()
    np.testing.assert_array_equal(df["demented"].to_numpy(), [0, np.nan, 1, 1, np.nan])
    np.testing.assert_array_equal(df["cdr"].to_numpy(), [0, np.nan, 0.5, 2, np.nan])
    assert df["sex"].tolist() == ["F", "F", "M", "F", "M"] and df["age"].tolist() == [74, 74, 55, 80, 23]
    assert nib.load(str(tmp_path / "out" / df["path"][0])).shape == (2, 2, 2)  # Analyze pair resolves


def test_long579_entry_computes_age_per_session(tmp_path):
    root = tmp_path / "long579"
    files = [("5002", "5", "D1S2"), ("5002", "5", "D1S7"), ("5002", "7", "D1S2"), ("5003", "5", "D1S3")]
    for sub, ses, acq in files:
        _vol(root / f"sub-{sub}/ses-{ses}/anat/sub-{sub}_ses-{ses}_acq-{acq}_T1w.nii.gz")
    participants = pd.DataFrame({
        "participant_id": ["sub-5002", "sub-5003"], "birthdate": ["1809-08-09", "1808-12-03"],
        "sex": ["Female", "Male"], "ses-5_date_ST": ["1814-07-31", "1814-02-11"],
        "ses-7_date_ST": ["1816-08-23", "1816-02-05"], "ses-9_date_ST": ["n/a", "n/a"]})
    participants.to_csv(root / "participants.tsv", sep="\t", index=False)
    entry = load_dataset_entry("long579", SEARCH)
    df = build_manifest(entry, root, tmp_path / "m.parquet")
    assert df["session"].tolist() == ["5_acq-D1S2", "5_acq-D1S7", "7_acq-D1S2", "5_acq-D1S3"]
    years = [(dt.date(*a) - dt.date(*b)).days / 365.25 for a, b in [
        ((1814, 7, 31), (1809, 8, 9)), ((1814, 7, 31), (1809, 8, 9)), ((1816, 8, 23), (1809, 8, 9)),
        ((1814, 2, 11), (1808, 12, 3))]]
    np.testing.assert_allclose(df["age"].to_numpy(), years)
    assert df["sex"].tolist() == ["F", "F", "F", "M"]
    pd.concat([participants, participants.iloc[:1].assign(participant_id="sub-5999")]).to_csv(
        root / "participants.tsv", sep="\t", index=False)
    with pytest.raises(ManifestError, match="subject=5999"):
        build_manifest(entry, root, tmp_path / "m.parquet")


def test_ucsf_pdgm_entry_reformats_ids_and_codes_idh(tmp_path):
    root = tmp_path / "ucsf"
    for case in ("UCSF-PDGM-0004", "UCSF-PDGM-0012", "UCSF-PDGM-0300"):
        for suffix in ("T1c", "FLAIR", "T2", "tumor_segmentation", "T1c_bias"):
            _vol(root / "UCSF-PDGM-v3" / f"{case}_nifti" / f"{case}_{suffix}.nii.gz")
    pd.DataFrame({"ID": ["UCSF-PDGM-004", "UCSF-PDGM-012", "UCSF-PDGM-300"], "Sex": ["M", "F", "F"],
                  "Age at MRI": [66, 41, 50], "WHO CNS Grade": [4, 2, 4],
                  "IDH": ["wildtype", "IDH1 p.R132H", "unknown"], "1-dead 0-alive": [1, 0, "unknown"],
                  "OS": [400, "unknown", 100]}).to_csv(root / "UCSF-PDGM-metadata_v2.csv", index=False)
    entry = load_dataset_entry("ucsf_pdgm", SEARCH)
    df = build_manifest(entry, root, tmp_path / "m.parquet")
    assert len(df) == 9 and set(df.modality) == {"T1c", "FLAIR", "T2"}
    per = df.drop_duplicates("subject").set_index("subject")
    # the paper counts unknown IDH as non-wildtype; "unknown" survival fields are missing
    assert per["idh"].tolist() == [0, 1, 1] and per["event"].fillna(-1).tolist() == [1, 0, -1]
    assert per.loc["UCSF-PDGM-0004", "survival_days"] == 400 and np.isnan(per.loc["UCSF-PDGM-0012", "survival_days"])
    assert df["mask_path"].str.endswith("_tumor_segmentation.nii.gz").all()


def test_upenn_gbm_entry_sessions_masks_and_events(tmp_path):
    root = tmp_path / "upenn"
    nifti = root / "imaging" / "NIfTI"
    for scan in ("UPENN-GBM-00001_11", "UPENN-GBM-00001_21", "UPENN-GBM-00002_11"):
        for mod in ("T1", "T1GD", "T2", "FLAIR"):
            if scan == "UPENN-GBM-00002_11" and mod in ("T1", "T2"):
                continue
            _vol(nifti / "images_structural" / scan / f"{scan}_{mod}.nii.gz")
    _vol(nifti / "images_segm" / "UPENN-GBM-00001_11_segm.nii.gz")
    _vol(nifti / "automated_segm" / "UPENN-GBM-00001_11_automated_approx_segm.nii.gz")
    _vol(nifti / "automated_segm" / "UPENN-GBM-00002_11_automated_approx_segm.nii.gz")
    pd.DataFrame({"ID": ["UPENN-GBM-00001_11", "UPENN-GBM-00001_21", "UPENN-GBM-00002_11"],
                  "Gender": ["F", "F", "M"], "Age_at_scan_years": [60.5, 61.0, 55.2],
                  "Survival_from_surgery_days_UPDATED": ["400", "Not Available", "120"],
                  "Survival_Status": ["Deceased", "Not Available", "Alive"]}).to_csv(
        root / "UPENN-GBM_clinical_info_v2.1.csv", index=False)
    entry = load_dataset_entry("upenn_gbm", SEARCH)
    df = build_manifest(entry, root, tmp_path / "m.parquet")
    per = df.drop_duplicates(["subject", "session"]).set_index(["subject", "session"])
    assert per.index.tolist() == [("UPENN-GBM-00001", "11"), ("UPENN-GBM-00001", "21"), ("UPENN-GBM-00002", "11")]
    assert per["mask_path"].map(lambda p: p.split("/")[-2] if p else "").tolist() == ["images_segm", "",
                                                                                     "automated_segm"]
    np.testing.assert_array_equal(per["event"].to_numpy(), [1, np.nan, 0])
    np.testing.assert_array_equal(per["survival_days"].to_numpy(), [400, np.nan, 120])
    assert set(df.loc[df.subject == "UPENN-GBM-00002", "modality"]) == {"T1c", "FLAIR"}
    report = check_dataset(entry, root)
    assert report["masks"] == {"mask_files": 3, "sessions": 3, "sessions_with_mask": 2}
    assert report["missing_modalities"]["by_subject"] == {"UPENN-GBM-00002": ["T1", "T2"]}


def test_brats2021_entry_keeps_t1_and_t1ce_apart(tmp_path):
    root = tmp_path / "brats"
    for case in ("BraTS2021_00000", "BraTS2021_00002"):
        for suffix in ("t1", "t1ce", "t2", "flair", "seg"):
            _vol(root / "BraTS2021_Training_Data" / case / f"{case}_{suffix}.nii.gz")
    _vol(root / "BraTS2021_Training_Data" / "BraTS2021_00000" / "BraTS2021_00009_t1.nii.gz")  # misplaced file
    entry = load_dataset_entry("brats2021", SEARCH)
    df = build_manifest(entry, root, tmp_path / "m.parquet")
    assert len(df) == 8 and df.groupby("subject")["modality"].apply(sorted).tolist() == [
        ["FLAIR", "T1", "T1c", "T2"]] * 2
    t1c = df[df.modality == "T1c"]["path"]
    assert t1c.str.endswith("_t1ce.nii.gz").all()
    assert (df["mask_path"].str.endswith("_seg.nii.gz")).all() and "00009" not in " ".join(df["path"])


def test_ixi_entry_merges_duplicate_rows(tmp_path):
    root = tmp_path / "ixi"
    for name in ("IXI-T1/IXI002-Guys-0828-T1.nii.gz", "IXI-T2/IXI002-Guys-0828-T2.nii.gz",
                 "IXI-T1/IXI012-HH-1211-T1.nii.gz", "IXI-T1/IXI400-IOP-0999-PD.nii.gz"):
        _vol(root / name)
    sheet = pd.DataFrame({"IXI_ID": [2, 2, 12, 12, 50], "SEX_ID (1=m, 2=f)": [1, 0, 2, 1, 1],
                          "AGE": [35.8, None, 38.1, 38.1, 20.0]})
    entry = load_dataset_entry("ixi", SEARCH)
    try:
        import xlrd  # noqa: F401
    except ImportError:
        (root / "IXI.xls").write_bytes(b"\xd0\xcf\x11\xe0")
        with pytest.raises(InputError, match="needs the 'xlrd' package.*save the sheet as CSV"):
            build_manifest(entry, root, tmp_path / "m.parquet")
    # the CSV route that how_to_get describes
    sheet.to_csv(root / "IXI.csv", index=False)
    data = yaml.safe_load(entry.source.read_text())
    data["labels"] = {**data["labels"], "file": "IXI.csv", "format": "csv"}
    data["labels"].pop("sheet")
    csv_entry = load_dataset_entry(_write_entry(tmp_path / "entries", data))
    df = build_manifest(csv_entry, root, tmp_path / "m.parquet")
    per = df.drop_duplicates("subject").set_index("subject")
    assert per.index.tolist() == ["002", "012"] and per["site"].tolist() == ["Guys", "HH"]
    assert per.loc["002", "sex"] == "M" and per.loc["002", "age"] == 35.8  # zeroed copy merged away
    assert pd.isna(per.loc["012", "sex"]) and per.loc["012", "age"] == 38.1  # conflicting sex -> missing
    report = check_dataset(csv_entry, root)
    assert report["labels"]["merged_conflicts"] == {"sex": 1}
    assert report["labels"]["ids_without_images"]["count"] == 1
