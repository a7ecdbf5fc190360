"""Label tables: codes are mapped or rejected, unknown ids and duplicate rows follow the entry's rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainfm.data.datasets import build_manifest, check_dataset, load_dataset_entry
from brainfm.errors import InputError, ManifestError


def test_unknown_label_ids_are_named_or_ignored_on_request(tmp_path, toy, write_entry, toy_entry, toy_labels):
    extra = pd.concat([toy_labels, pd.DataFrame({"participant_id": ["99", "77"], "age": [1, 2],
                                                 "gender": ["male", "male"], "cdr": [0, 0], "group": ["CN", "CN"]})])
    extra.to_csv(toy / "participants.csv", index=False)
    strict = load_dataset_entry(write_entry(tmp_path / "strict", toy_entry()))
    with pytest.raises(ManifestError, match=r"2 id\(s\) not found among the images: subject=99; subject=77"):
        build_manifest(strict, toy, tmp_path / "m.parquet")
    data = toy_entry()
    data["labels"]["unknown_ids"] = "ignore"
    lenient = load_dataset_entry(write_entry(tmp_path / "lenient", data))
    df = build_manifest(lenient, toy, tmp_path / "m.parquet")
    assert set(df["subject"]) == {"01", "02", "03", "04"}
    report = check_dataset(lenient, toy)
    assert report["labels"]["ids_without_images"] == {"count": 2, "examples": ["99", "77"]}
    # ignoring unknown ids never hides ids that match nothing at all
    toy_labels.assign(participant_id=lambda d: "sub-" + d.participant_id).to_csv(toy / "participants.csv",
                                                                                   index=False)
    with pytest.raises(ManifestError, match="none of the 4 id"):
        build_manifest(lenient, toy, tmp_path / "m.parquet")


def test_duplicate_label_rows_error_or_merge(tmp_path, toy, write_entry, toy_entry, toy_labels):
    dup = pd.concat([toy_labels, pd.DataFrame({"participant_id": ["01", "02"], "age": [None, 99],
                                               "gender": ["male", "female"], "cdr": [None, 0.5],
                                               "group": [None, "MCI"]})])
    dup.to_csv(toy / "participants.csv", index=False)
    strict = load_dataset_entry(write_entry(tmp_path / "strict", toy_entry()))
    with pytest.raises(ManifestError, match="duplicate label rows.*subject=01"):
        build_manifest(strict, toy, tmp_path / "m.parquet")
    data = toy_entry()
    data["labels"]["duplicates"] = "merge"
    merged = load_dataset_entry(write_entry(tmp_path / "merge", data))
    df = build_manifest(merged, toy, tmp_path / "m.parquet").drop_duplicates("subject").set_index("subject")
    assert df.loc["01", "age"] == 70 and df.loc["01", "diagnosis"] == "CN"  # gaps filled by the full row
    assert np.isnan(df.loc["02", "age"]) and df.loc["02", "demented"] == 1  # 75 vs 99 disagree -> missing
    assert check_dataset(merged, toy)["labels"]["merged_conflicts"] == {"age": 1}


def test_label_codes_must_be_mapped_and_numeric(tmp_path, toy, write_entry, toy_entry, toy_labels):
    toy_labels.assign(gender=["male", "female", "other", "female"]).to_csv(toy / "participants.csv", index=False)
    entry = load_dataset_entry(write_entry(tmp_path / "entries", toy_entry()))
    with pytest.raises(ManifestError, match="no entry in labels/values/sex: other"):
        build_manifest(entry, toy, tmp_path / "m.parquet")
    toy_labels.assign(age=["70", "75", "old", "65"]).to_csv(toy / "participants.csv", index=False)
    with pytest.raises(ManifestError, match="label 'age' must be numeric; found old"):
        build_manifest(entry, toy, tmp_path / "m.parquet")
    data = toy_entry()
    data["labels"]["na_values"] = ["old"]
    entry = load_dataset_entry(write_entry(tmp_path / "na", data))
    df = build_manifest(entry, toy, tmp_path / "m.parquet")
    assert df.loc[df.subject == "03", "age"].isna().all()


def test_column_level_missing_codes_and_scale(tmp_path, toy, write_entry, toy_entry, toy_labels):
    toy_labels.assign(age=["70", "n.k.", "80", "65"], group=["CN", "n.k.", "AD", "CN"]).to_csv(
        toy / "participants.csv", index=False)
    data = toy_entry()
    data["labels"]["columns"]["age"] = {"column": "age", "missing": ["n.k."], "scale": 12}  # months
    entry = load_dataset_entry(write_entry(tmp_path / "e", data))
    per = build_manifest(entry, toy, tmp_path / "m.parquet").drop_duplicates("subject")
    np.testing.assert_array_equal(per["age"].to_numpy(), [840, np.nan, 960, 780])
    assert per["diagnosis"].tolist() == ["CN", "n.k.", "AD", "CN"]  # the code is missing only where listed


def test_xlsx_labels(tmp_path, toy, write_entry, toy_entry, toy_labels):
    data = toy_entry()
    data["labels"] = {**data["labels"], "file": "participants.xlsx"}
    entry = load_dataset_entry(write_entry(tmp_path / "x", data))
    try:
        import openpyxl  # noqa: F401
    except ImportError:
        (toy / "participants.xlsx").write_bytes(b"PK\x03\x04")
        with pytest.raises(InputError, match="needs the 'openpyxl' package"):
            build_manifest(entry, toy, tmp_path / "m.parquet")
    else:
        toy_labels.to_excel(toy / "participants.xlsx", index=False)
        df = build_manifest(entry, toy, tmp_path / "m.parquet")
        assert df.drop_duplicates("subject")["age"].tolist() == [70, 75, 80, 65]
