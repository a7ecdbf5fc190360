"""Dataset entries: every built-in entry validates and covers the paper; a bad entry names its file and field."""

from __future__ import annotations

import jsonschema
import pytest

from brainfm.data.datasets import compile_pattern, dataset_schema, list_datasets, load_dataset_entry
from brainfm.data.datasets.catalog import BUILTIN_ENTRIES
from brainfm.errors import ConfigError

BUILTIN = (BUILTIN_ENTRIES,)

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

def test_schema_is_a_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(dataset_schema())


@pytest.mark.parametrize("path", sorted(BUILTIN_ENTRIES.glob("*.yaml")), ids=lambda p: p.stem)
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
    names = set(list_datasets(BUILTIN))
    assert PRETRAIN | DOWNSTREAM <= names
    pretrain = {n for n in names if load_dataset_entry(n, BUILTIN).roles["pretrain"]}
    assert pretrain == PRETRAIN  # 21 files for the paper's 20 sources (PIOP1&2 counted once)
    for name in DOWNSTREAM:
        assert load_dataset_entry(name, BUILTIN).roles["tasks"], name
    adni = load_dataset_entry("adni", BUILTIN)
    assert adni.split["type"] == "cv" and adni.paper["n_images"] == 2182 and adni.paper["n_subjects"] == 382
    oasis = load_dataset_entry("oasis1", BUILTIN)
    assert oasis.paper["n_train"] + oasis.paper["n_test"] == oasis.paper["n_subjects"] == 235
    # open datasets with stable URLs carry a download section; DUA datasets never do
    assert load_dataset_entry("ixi", BUILTIN).download
    assert not any(load_dataset_entry(n, BUILTIN).download for n in names
                   if load_dataset_entry(n, BUILTIN).access != "open")


def test_load_by_name_unknown_name_lists_known():
    with pytest.raises(ConfigError, match="no dataset registry entry named 'nope'.*ixi"):
        load_dataset_entry("nope", BUILTIN)


@pytest.mark.parametrize("change, field", [
    ({"access": "free"}, "access"),
    ({"how_to_get": None}, "how_to_get"),
    ({"modalities": {"T1": "images/{id}.nii.gz"}}, "modalities/T1"),
    ({"modalities": {"T2w": "{subject}.nii.gz"}}, "modalities"),
    ({"split": {"type": "holdout", "seed": 1}}, "split"),
    ({"labels": {"file": "x.csv", "ids": {"subject": "id"}, "columns": {"age": "age"}, "bogus": 1}}, "labels"),
])
def test_schema_errors_name_file_and_field(tmp_path, change, field, write_entry, toy_entry):
    data = toy_entry(**change)
    data = {k: v for k, v in data.items() if v is not None}
    path = write_entry(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_dataset_entry(path)
    assert str(path) in str(err.value) and f"field '{field}" in str(err.value)


def test_semantic_errors(tmp_path, write_entry, toy_entry):
    path = write_entry(tmp_path / "a", {**toy_entry(), "name": "other"})
    path = path.rename(tmp_path / "a" / "toy.yaml")
    with pytest.raises(ConfigError, match="must equal the file name"):
        load_dataset_entry(path)
    bad_regex = write_entry(tmp_path / "b", toy_entry(placeholders={"subject": "("}))
    with pytest.raises(ConfigError, match="placeholders/subject"):
        load_dataset_entry(bad_regex)
    no_session = toy_entry(modalities={"T1": "sub-{subject}.nii.gz"})
    no_session["labels"] = {**no_session["labels"], "ids": {"subject": "participant_id", "session": "ses"}}
    with pytest.raises(ConfigError, match="labels/ids/session"):
        load_dataset_entry(write_entry(tmp_path / "c", no_session))
