"""Targets, losses and cohorts as the paper states them (issue 12, item 4)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from test_runner import FAST_HEAD, _cohort

from brainfm.config import TaskSpec, load_config
from brainfm.tasks.data import assemble, build_task_data
from brainfm.tasks.losses import LOSSES
from brainfm.tasks.runner import head_config_for, run_grid, training_targets
from brainfm.tasks.runs import manifest_task_data, plan_folds
from brainfm.tasks.train import HeadJob

ROOT = Path(__file__).resolve().parents[2]


def _task(name, head=None, **kw):
    return TaskSpec.from_config(name, {"dataset": "toy", **kw},
                                {"ratios": [0.5, 1.0], "seeds": [0], "head": {**FAST_HEAD, **(head or {})}})


def test_paper_config_does_not_zscore_features_or_targets():
    cfg = load_config(ROOT / "config" / "paper.yaml")
    for name in ("brain_age", "atlas_dps", "abide"):
        assert not cfg.tasks[name].head.standardize_target and not cfg.tasks[name].head.standardize_features


def test_atlas_huber_delta_applies_in_log1p_days():
    """Even when the run z-scores regression targets, the ATLAS loss sees log1p(days): δ = 1 is in those units."""
    keys, x, man = _cohort(n=40)
    man["dps"] = np.linspace(2, 3000, len(man))
    spec = _task("dps", kind="regression", target="dps", target_transform="log1p", loss="atlas_mixed",
                 loss_kwargs={"alpha": 0.2, "delta": 1.0}, head={"standardize_target": True})
    data = assemble(spec, keys, x, man)
    cfg, standardize = head_config_for(data)
    rows = np.arange(len(data.y))
    target, mean, std = training_targets(data.y, spec.target_transform, standardize, [HeadJob(rows, rows, 0)])
    assert mean is None and std is None
    days = torch.as_tensor(data.y, dtype=torch.float32)
    pred = torch.log1p(days) + torch.linspace(-3, 3, len(days))  # errors on both sides of δ
    got = LOSSES["atlas_mixed"](pred[None, :, None], target[None], torch.ones(1, len(days)), **cfg.loss_kwargs)
    ref_target = torch.log1p(days)
    expected = 0.2 * F.mse_loss(pred, ref_target) + 0.8 * (0.5 * F.l1_loss(pred, ref_target)
                                                         + 0.5 * F.huber_loss(pred, ref_target, delta=1.0))
    torch.testing.assert_close(got[0], expected)


def test_zscoring_off_changes_nothing_but_the_scaling():
    keys, x, man = _cohort(n=40)
    runs = {}
    for on in (True, False):
        spec = _task("age", kind="regression", target="age",
                     head={"standardize_target": on, "standardize_features": on, "max_epochs": 8})
        data = assemble(spec, keys, x, man)
        runs[on] = run_grid(data, backbone="b", ratios=[0.5, 1.0], seeds=[0])
        _, standardize = head_config_for(data)
        assert standardize is on
        target, mean, _ = training_targets(data.y, "none", standardize, [HeadJob(np.arange(len(data.y)), [], 0)])
        assert (mean is None) is (not on) and (on or np.array_equal(target.numpy(), data.y))
    for key in runs[True]:
        a, b = runs[True][key], runs[False][key]
        assert a["folds"][0]["n_train"] == b["folds"][0]["n_train"] and a["folds"][0]["n_val"] == b["folds"][0]["n_val"]
        pd.testing.assert_frame_equal(a["predictions"][["subject", "session", "y_true"]],
                                      b["predictions"][["subject", "session", "y_true"]])
        head_a = {k: v for k, v in a["info"]["head"].items() if not k.startswith("standardize")}
        head_b = {k: v for k, v in b["info"]["head"].items() if not k.startswith("standardize")}
        assert head_a == head_b and a["info"]["head"]["standardize_target"] != b["info"]["head"]["standardize_target"]
        assert not np.allclose(a["predictions"]["y_pred"], b["predictions"]["y_pred"])


def test_a_case_lacking_a_required_modality_is_dropped_and_counted(tmp_path):
    from brainfm.features.store import FeatureStore, write_feature_dir

    keys, x, man = _cohort(n=30, split=False)
    four = []
    for m in ("T1", "T1c", "T2", "FLAIR"):
        four.append(man.assign(modality=m))
    man4 = pd.concat(four, ignore_index=True)
    man4 = man4[~((man4["subject"].isin(["s003", "s007"])) & (man4["modality"] == "T2"))].reset_index(drop=True)
    spec = _task("os", kind="survival", target="survival_days", modalities=["T1", "T1c", "T2", "FLAIR"])
    planned = manifest_task_data(spec, man4)
    assert planned.excluded["missing_modality"] == 2 and not {"s003", "s007"} & set(planned.table["subject"])
    index = man4[["subject", "session", "modality"]].reset_index(drop=True)
    feats = np.random.default_rng(0).normal(size=(len(index), 8)).astype(np.float32)
    write_feature_dir(tmp_path / "fs", index, feats)
    data = build_task_data(spec, FeatureStore(tmp_path / "fs"), man4)
    assert data.excluded["missing_modality"] == 2 and len(data.table) == 28
    assert [f.test for f in plan_folds(data)] == [f.test for f in plan_folds(planned)]


def test_cox_cohort_is_the_binary_survival_cohort_with_one_365_day_boundary():
    cfg = load_config(ROOT / "config" / "paper.yaml")
    binary, cox = cfg.tasks["survival_1y"], cfg.tasks["survival_cox"]
    days = np.array([100, 300, 364, 365, 365, 366, 500, 800, 900, 1200] * 6, dtype=float)
    event = np.array([1, 0, 0, 0, 1, 0, 1, 0, 1, np.nan] * 6)
    subjects = [f"p{i:03d}" for i in range(len(days))]
    rows = [{"dataset": "upenn_gbm", "subject": s, "session": "1", "modality": m, "path": "x", "site": "a", "split": "",
             "survival_days": d, "event": e}
            for s, d, e in zip(subjects, days, event) for m in ("T1", "T1c", "T2", "FLAIR")]
    man = pd.DataFrame(rows)
    b, c = manifest_task_data(binary, man), manifest_task_data(cox, man)
    # censored at or before 365 days: unknown one-year outcome, out of both cohorts (the binarize boundary)
    censored_early = set(man.loc[(man["event"] == 0) & (man["survival_days"] <= 365), "subject"])
    assert not censored_early & set(b.table["subject"]) and not censored_early & set(c.table["subject"])
    # Cox = the binary cohort less the patients without follow-up (no event status)
    no_event = set(man.loc[man["event"].isna(), "subject"])
    assert set(c.table["subject"]) == set(b.table["subject"]) - no_event
    # ... on the binary task's split
    fb, fc = plan_folds(b)[0], plan_folds(c)[0]
    assert set(fc.test) == set(fb.test) - no_event and set(fc.train) == set(fb.train) - no_event


def test_paper_config_feeds_the_baselines_as_the_public_braindino_code():
    cfg = load_config(ROOT / "config" / "paper.yaml")
    for name in ("brainiac", "bmmae", "brainmvp"):
        assert cfg.backbones[name].args["protocol"] == "braindino"
    assert cfg.backbones["bmmae"].args["modalities"] == "auto"  # each sequence through its own tokenizer
