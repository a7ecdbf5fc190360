"""The check report: counts on disk next to the paper's, per modality, label and split."""

from __future__ import annotations

from brainfm.data.datasets import check_dataset, load_dataset_entry


def test_check_dataset_counts_and_paper_comparison(tmp_path, toy, write_entry, toy_entry):
    entry = load_dataset_entry(write_entry(tmp_path / "entries", toy_entry()))
    report = check_dataset(entry, toy)
    assert report["n_images"] == 8 and report["n_subjects"] == 4 and report["n_sessions"] == 5
    assert report["per_modality"] == {"T1": {"images": 5, "subjects": 4}, "FLAIR": {"images": 3, "subjects": 3}}
    assert report["missing_modalities"]["by_subject"] == {"04": ["FLAIR"]}
    assert report["labels"]["subjects_with_label"] == {"age": 4, "sex": 4, "demented": 3, "diagnosis": 4}
    assert report["labels"]["value_counts"]["demented"] == {"0": 1, "1": 2}
    assert report["paper"]["comparison"]["n_subjects"] == {"paper": 4, "found": 4, "match": True}
