"""Fold 0, nested label-ratio subsets, constant validation, test cases kept out, pretraining leakage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainfm.errors import LeakageError
from brainfm.segmentation.planning import ConfigurationRequest, add_configuration, subject_crossval_splits
from brainfm.segmentation.protocol import (
    PAPER_RATIOS,
    check_pretraining_leakage,
    check_protocol,
    ratio_training_cases,
)


def _cases(n_subjects=40, sessions=1, n_test=8):
    rows = []
    for i in range(n_subjects):
        for s in range(sessions):
            cid = f"s{i:03d}" if sessions == 1 else f"s{i:03d}-{s}"
            rows.append({"case_id": cid, "subject": f"s{i:03d}", "session": str(s),
                         "split": "test" if i >= n_subjects - n_test else "train"})
    return pd.DataFrame(rows)


def test_split_is_nnunets_own_when_each_subject_has_one_case():
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    cases = _cases()
    train = cases[cases.split == "train"]
    ours = subject_crossval_splits(dict(zip(train.case_id, train.subject)))
    theirs = generate_crossval_split(sorted(train.case_id), seed=12345, n_splits=5)
    assert [{k: sorted(v) for k, v in f.items()} for f in theirs] == ours


def test_sessions_of_a_subject_stay_on_one_side():
    cases = _cases(sessions=2)
    train = cases[cases.split == "train"]
    for fold in subject_crossval_splits(dict(zip(train.case_id, train.subject))):
        tr = {c.split("-")[0] for c in fold["train"]}
        va = {c.split("-")[0] for c in fold["val"]}
        assert not tr & va and len(fold["train"]) % 2 == 0


def test_ratio_subsets_are_nested_seeded_and_disjoint_from_validation_and_test():
    cases = _cases(n_subjects=110, n_test=10)
    train = cases[cases.split == "train"]
    fold0 = subject_crossval_splits(dict(zip(train.case_id, train.subject)))[0]
    subsets = ratio_training_cases(cases, fold0["train"], PAPER_RATIOS, seed=3)
    sizes = [len(subsets[r]) for r in PAPER_RATIOS]
    assert sizes == [int(np.ceil(r * 80)) for r in PAPER_RATIOS]  # 80 fold-0 training subjects
    for small, large in zip(PAPER_RATIOS, PAPER_RATIOS[1:]):
        assert set(subsets[small]) <= set(subsets[large])
    assert subsets[1.0] == sorted(fold0["train"])
    assert ratio_training_cases(cases, fold0["train"], PAPER_RATIOS, seed=3) == subsets
    assert ratio_training_cases(cases, fold0["train"], [0.1], seed=4)[0.1] != subsets[0.1]
    for r in PAPER_RATIOS:
        check_protocol(cases, subsets[r], fold0["val"])
    test_case = cases[cases.split == "test"].case_id.iloc[0]
    with pytest.raises(LeakageError, match="training and test"):
        check_protocol(cases, [*subsets[0.1], test_case], fold0["val"])


def test_pretraining_leakage_check():
    check_pretraining_leakage(["a", "b"], ["c", "d"], "brats2023_men")
    check_pretraining_leakage(["a", "b"], None, "brats2023_men")
    with pytest.raises(LeakageError, match="segmentation/brats2023_men.*1 shared subject.*: b"):
        check_pretraining_leakage(["a", "b"], ["b", "c"], "brats2023_men")


def test_added_configurations_inherit_nnunets():
    plans = {"configurations": {
        "2d": {"patch_size": [192, 160], "spacing": [1.0, 1.0], "median_image_size_in_voxels": [170.0, 140.0],
               "batch_size": 105, "data_identifier": "nnUNetPlans_2d"},
        "3d_fullres": {"patch_size": [128, 128, 128], "spacing": [1.0, 1.0, 1.0], "batch_size": 2,
                       "architecture": {"network_class_name": "x", "arch_kwargs": {}, "_kw_requires_import": []}}}}
    fit = add_configuration(plans, ConfigurationRequest.parse("2d_256", batch_size=12))
    assert fit == {"inherits_from": "2d", "patch_size": [256, 256], "spacing": [0.75, 0.75],
                   "median_image_size_in_voxels": [170 / 0.75, 140 / 0.75],
                   "data_identifier": "nnUNetPlans_2d_256", "batch_size": 12}
    keep = add_configuration(plans, ConfigurationRequest.parse("2d_256", fit_field_of_view=False))
    assert keep == {"inherits_from": "2d", "patch_size": [256, 256]}  # shares nnU-Net's 2d data
    assert add_configuration(plans, ConfigurationRequest.parse("3d_96")) == {"inherits_from": "3d_fullres",
                                                                            "patch_size": [96, 96, 96]}
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    cm = PlansManager(plans).get_configuration("3d_96")
    assert cm.patch_size == [96, 96, 96] and cm.batch_size == 2 and cm.spacing == [1.0, 1.0, 1.0]


def test_fold_all_trains_on_every_non_test_case(tmp_path):
    from brainfm.atomic import write_json
    from brainfm.segmentation.protocol import fold_cases

    cases = _cases(n_subjects=50, n_test=10)
    train = cases[cases.split == "train"]
    splits = subject_crossval_splits(dict(zip(train.case_id, train.subject)))
    write_json(tmp_path / "splits_final.json", splits)
    tr0, val0 = fold_cases(tmp_path / "splits_final.json", 0)
    assert (len(tr0), len(val0)) == (32, 8) and tr0 == splits[0]["train"]
    tr, val = fold_cases(tmp_path / "splits_final.json", "all")
    assert tr == val == sorted(train.case_id)  # 80% of all cases train, as the paper's n at 100%
    subsets = ratio_training_cases(cases, tr, PAPER_RATIOS, seed=0)
    assert len(subsets[0.1]) == 4 and len(subsets[1.0]) == 40
    check_protocol(cases, subsets[1.0], val, separate_val=False)
    with pytest.raises(LeakageError):
        check_protocol(cases, subsets[1.0], val)
