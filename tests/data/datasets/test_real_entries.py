"""The built-in entries of real releases (OASIS-1, LONG579, UCSF-PDGM, UPENN-GBM, BraTS 2021, IXI) on fake trees.

The trees are tiny NIfTI (and Analyze) files laid out like the real releases, so each entry is
exercised against the layout it claims; every expected value is written out by hand."""

from __future__ import annotations

import datetime as dt

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from brainfm.data.datasets import build_manifest, check_dataset, load_dataset_entry
from brainfm.data.datasets.catalog import BUILTIN_ENTRIES
from brainfm.errors import InputError, ManifestError

BUILTIN = (BUILTIN_ENTRIES,)

def test_oasis1_entry_on_an_oasis_like_tree(tmp_path, oasis_tree):
    root, sessions = oasis_tree
    entry = load_dataset_entry("oasis1", BUILTIN)
    df = build_manifest(entry, root, tmp_path / "out" / "manifest.parquet")
    assert list(zip(df.subject, df.session)) == [(s, m) for s, m, _ in sessions]
    assert df["path"].str.endswith("_mpr_n4_anon_111_t88_masked_gfc.img").all()
    np.testing.assert_array_equal(df["demented"].to_numpy(), [0, np.nan, 1, 1, np.nan])
    np.testing.assert_array_equal(df["cdr"].to_numpy(), [0, np.nan, 0.5, 2, np.nan])
    assert df["sex"].tolist() == ["F", "F", "M", "F", "M"] and df["age"].tolist() == [74, 74, 55, 80, 23]
    assert nib.load(str(tmp_path / "out" / df["path"][0])).shape == (2, 2, 2)  # Analyze pair resolves


def test_long579_entry_computes_age_per_session(tmp_path, volume):
    root = tmp_path / "long579"
    files = [("5002", "5", "D1S2"), ("5002", "5", "D1S7"), ("5002", "7", "D1S2"), ("5003", "5", "D1S3")]
    for sub, ses, acq in files:
        volume(root / f"sub-{sub}/ses-{ses}/anat/sub-{sub}_ses-{ses}_acq-{acq}_T1w.nii.gz")
    participants = pd.DataFrame({
        "participant_id": ["sub-5002", "sub-5003"], "birthdate": ["1809-08-09", "1808-12-03"],
        "sex": ["Female", "Male"], "ses-5_date_ST": ["1814-07-31", "1814-02-11"],
        "ses-7_date_ST": ["1816-08-23", "1816-02-05"], "ses-9_date_ST": ["n/a", "n/a"]})
    participants.to_csv(root / "participants.tsv", sep="\t", index=False)
    entry = load_dataset_entry("long579", BUILTIN)
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


def test_ucsf_pdgm_entry_reformats_ids_and_codes_idh(tmp_path, volume):
    root = tmp_path / "ucsf"
    for case in ("UCSF-PDGM-0004", "UCSF-PDGM-0012", "UCSF-PDGM-0300"):
        for suffix in ("T1c", "FLAIR", "T2", "tumor_segmentation", "T1c_bias"):
            volume(root / "UCSF-PDGM-v3" / f"{case}_nifti" / f"{case}_{suffix}.nii.gz")
    pd.DataFrame({"ID": ["UCSF-PDGM-004", "UCSF-PDGM-012", "UCSF-PDGM-300"], "Sex": ["M", "F", "F"],
                  "Age at MRI": [66, 41, 50], "WHO CNS Grade": [4, 2, 4],
                  "IDH": ["wildtype", "IDH1 p.R132H", "unknown"], "1-dead 0-alive": [1, 0, "unknown"],
                  "OS": [400, "unknown", 100]}).to_csv(root / "UCSF-PDGM-metadata_v2.csv", index=False)
    entry = load_dataset_entry("ucsf_pdgm", BUILTIN)
    df = build_manifest(entry, root, tmp_path / "m.parquet")
    assert len(df) == 9 and set(df.modality) == {"T1c", "FLAIR", "T2"}
    per = df.drop_duplicates("subject").set_index("subject")
    # the paper counts unknown IDH as non-wildtype; "unknown" survival fields are missing
    assert per["idh"].tolist() == [0, 1, 1] and per["event"].fillna(-1).tolist() == [1, 0, -1]
    assert per.loc["UCSF-PDGM-0004", "survival_days"] == 400 and np.isnan(per.loc["UCSF-PDGM-0012", "survival_days"])
    assert df["mask_path"].str.endswith("_tumor_segmentation.nii.gz").all()


def test_upenn_gbm_entry_sessions_masks_and_events(tmp_path, volume):
    root = tmp_path / "upenn"
    nifti = root / "imaging" / "NIfTI"
    for scan in ("UPENN-GBM-00001_11", "UPENN-GBM-00001_21", "UPENN-GBM-00002_11"):
        for mod in ("T1", "T1GD", "T2", "FLAIR"):
            if scan == "UPENN-GBM-00002_11" and mod in ("T1", "T2"):
                continue
            volume(nifti / "images_structural" / scan / f"{scan}_{mod}.nii.gz")
    volume(nifti / "images_segm" / "UPENN-GBM-00001_11_segm.nii.gz")
    volume(nifti / "automated_segm" / "UPENN-GBM-00001_11_automated_approx_segm.nii.gz")
    volume(nifti / "automated_segm" / "UPENN-GBM-00002_11_automated_approx_segm.nii.gz")
    pd.DataFrame({"ID": ["UPENN-GBM-00001_11", "UPENN-GBM-00001_21", "UPENN-GBM-00002_11"],
                  "Gender": ["F", "F", "M"], "Age_at_scan_years": [60.5, 61.0, 55.2],
                  "Survival_from_surgery_days_UPDATED": ["400", "Not Available", "120"],
                  "Survival_Status": ["Deceased", "Not Available", "Alive"]}).to_csv(
        root / "UPENN-GBM_clinical_info_v2.1.csv", index=False)
    entry = load_dataset_entry("upenn_gbm", BUILTIN)
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


def test_brats2021_entry_keeps_t1_and_t1ce_apart(tmp_path, volume):
    root = tmp_path / "brats"
    for case in ("BraTS2021_00000", "BraTS2021_00002"):
        for suffix in ("t1", "t1ce", "t2", "flair", "seg"):
            volume(root / "BraTS2021_Training_Data" / case / f"{case}_{suffix}.nii.gz")
    volume(root / "BraTS2021_Training_Data" / "BraTS2021_00000" / "BraTS2021_00009_t1.nii.gz")  # misplaced file
    entry = load_dataset_entry("brats2021", BUILTIN)
    df = build_manifest(entry, root, tmp_path / "m.parquet")
    assert len(df) == 8 and df.groupby("subject")["modality"].apply(sorted).tolist() == [
        ["FLAIR", "T1", "T1c", "T2"]] * 2
    t1c = df[df.modality == "T1c"]["path"]
    assert t1c.str.endswith("_t1ce.nii.gz").all()
    assert (df["mask_path"].str.endswith("_seg.nii.gz")).all() and "00009" not in " ".join(df["path"])


def test_ixi_entry_merges_duplicate_rows(tmp_path, volume, write_entry):
    root = tmp_path / "ixi"
    for name in ("IXI-T1/IXI002-Guys-0828-T1.nii.gz", "IXI-T2/IXI002-Guys-0828-T2.nii.gz",
                 "IXI-T1/IXI012-HH-1211-T1.nii.gz", "IXI-T1/IXI400-IOP-0999-PD.nii.gz"):
        volume(root / name)
    sheet = pd.DataFrame({"IXI_ID": [2, 2, 12, 12, 50], "SEX_ID (1=m, 2=f)": [1, 0, 2, 1, 1],
                          "AGE": [35.8, None, 38.1, 38.1, 20.0]})
    entry = load_dataset_entry("ixi", BUILTIN)
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
    csv_entry = load_dataset_entry(write_entry(tmp_path / "entries", data))
    df = build_manifest(csv_entry, root, tmp_path / "m.parquet")
    per = df.drop_duplicates("subject").set_index("subject")
    assert per.index.tolist() == ["002", "012"] and per["site"].tolist() == ["Guys", "HH"]
    assert per.loc["002", "sex"] == "M" and per.loc["002", "age"] == 35.8  # zeroed copy merged away
    assert pd.isna(per.loc["012", "sex"]) and per.loc["012", "age"] == 38.1  # conflicting sex -> missing
    report = check_dataset(csv_entry, root)
    assert report["labels"]["merged_conflicts"] == {"sex": 1}
    assert report["labels"]["ids_without_images"]["count"] == 1
