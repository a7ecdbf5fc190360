"""Task runner: protocol properties on synthetic features with known signal."""

import numpy as np
import pandas as pd
import pytest

from brainfm.errors import LeakageError
from brainfm.tasks.data import assemble
from brainfm.tasks.runner import run_grid
from brainfm.tasks.runs import plan_folds, write_run
from brainfm.config import TaskSpec

FAST_HEAD = {"lr": 3e-3, "max_epochs": 40, "patience": 5, "batch_size": 16}


def _cohort(n=120, d=48, sessions=1, seed=0, split=True):
    rng = np.random.default_rng(seed)
    rows, feats = [], []
    for i in range(n):
        dx = ["CN", "MCI", "AD"][i % 3]
        age = rng.uniform(20, 90)
        z = rng.normal(size=d)
        for s in range(sessions):
            f = z + rng.normal(scale=0.3, size=d)
            f[:8] += {"CN": -1.0, "MCI": 0, "AD": 1.0}[dx]
            f[8:16] += (age - 55) / 20
            feats.append(f)
            rows.append(dict(dataset="toy", subject=f"s{i:03d}", session=f"v{s}", modality="T1", path="x",
                             site="a", split=("test" if i % 5 == 0 else "train") if split else "",
                             diagnosis=dx, age=age, survival_days=float(np.exp(6 - 0.03 * (age - 55))),
                             event=float(rng.random() < 0.7)))
    manifest = pd.DataFrame(rows)
    keys = manifest[["subject", "session"]]
    return keys, np.array(feats, dtype=np.float32), manifest


def _spec(name, **kw):
    return TaskSpec.from_config(name, {"dataset": "toy", **kw}, {"ratios": [0.2, 1.0], "seeds": [0, 1], "head": FAST_HEAD})


def test_classification_learns_and_writes_contract(tmp_path):
    keys, x, man = _cohort()
    data = assemble(_spec("dx", kind="classification", target="diagnosis", classes=["CN", "MCI", "AD"]), keys, x, man)
    res = run_grid(data, backbone="toy", ratios=[0.2, 1.0], seeds=[0, 1])
    assert set(res) == {(r, s) for r in (0.2, 1.0) for s in (0, 1)}
    full = [e for k, e in res.items() if k.ratio == 1.0][0]
    assert full["metrics"]["auc"] > 0.75
    pred = full["predictions"]
    assert {"task", "backbone", "ratio", "seed", "fold", "subject", "y_true", "y_pred", "prob_0", "prob_2"} <= set(pred)
    np.testing.assert_allclose(pred[["prob_0", "prob_1", "prob_2"]].sum(1), 1, atol=1e-5)
    out = write_run(tmp_path, next(iter(res)), next(iter(res.values())))
    assert (out / "predictions.parquet").exists() and (out / "metrics.json").exists()


def test_ratio_subsets_nested_and_run_deterministic():
    keys, x, man = _cohort()
    data = assemble(_spec("dx", kind="classification", target="diagnosis", classes=["CN", "MCI", "AD"]), keys, x, man)
    a = run_grid(data, backbone="b", ratios=[0.2, 1.0], seeds=[0])
    b = run_grid(data, backbone="b", ratios=[0.2, 1.0], seeds=[0])
    for key in a:
        pd.testing.assert_frame_equal(a[key]["predictions"], b[key]["predictions"])
    small = [e for k, e in a.items() if k.ratio == 0.2][0]["info"]["n_train"]
    large = [e for k, e in a.items() if k.ratio == 1.0][0]["info"]["n_train"]
    assert small < large


def test_regression_beats_mean_predictor_and_uses_raw_units():
    keys, x, man = _cohort(200)
    data = assemble(_spec("age", kind="regression", target="age"), keys, x, man)
    res = run_grid(data, backbone="b", ratios=[1.0], seeds=[0])
    entry = next(iter(res.values()))
    pred = entry["predictions"]
    train_mean = data.table.loc[data.table.split == "train", "y"].mean()
    assert entry["metrics"]["mae"] < 0.6 * np.abs(pred["y_true"] - train_mean).mean()
    assert 20 <= pred["y_pred"].median() <= 90


def test_cv_is_subject_disjoint_with_longitudinal_visits():
    keys, x, man = _cohort(90, sessions=3, split=False)
    spec = _spec("adni", kind="classification", target="diagnosis", classes=["CN", "MCI", "AD"],
                 split={"type": "cv", "n_splits": 3})
    data = assemble(spec, keys, x, man)
    folds = plan_folds(data)
    assert len(folds) == 3
    res = run_grid(data, backbone="b", ratios=[1.0], seeds=[0])
    pred = next(iter(res.values()))["predictions"]
    assert pred.groupby("subject")["fold"].nunique().max() == 1
    assert len(pred) == len(data.table)  # every scan is tested exactly once


def test_survival_cox_cindex_and_pretraining_leakage():
    keys, x, man = _cohort(150)
    spec = _spec("os", kind="survival", target="survival_days")
    data = assemble(spec, keys, x, man)
    res = run_grid(data, backbone="b", ratios=[1.0], seeds=[0])
    assert next(iter(res.values()))["metrics"]["cindex"] > 0.6
    test_subject = man.loc[man.split == "test", "subject"].iloc[0]
    with pytest.raises(LeakageError, match=test_subject):
        run_grid(data, backbone="b", ratios=[1.0], seeds=[0],
                 pretrain_subjects=[test_subject])


def test_binarize_and_query_exclusions_are_counted():
    keys, x, man = _cohort(100)
    spec = _spec("os1y", kind="classification", target="survival_days",
                 binarize={"threshold": 365, "above": 0, "at_or_below": 1},
                 query="not (event == 0 and survival_days <= 365)")
    data = assemble(spec, keys, x, man)
    assert data.excluded["query"] == int(((man.event == 0) & (man.survival_days <= 365)).sum())
    assert set(np.unique(data.y)) <= {0.0, 1.0}


def test_smote_only_touches_training_rows():
    keys, x, man = _cohort(100)
    man["pd"] = (np.arange(100) % 4 != 1).astype(float)  # 3:1 imbalance, both classes in train and test
    spec = _spec("pd", kind="classification", target="pd", classes=[0, 1], smote=True)
    data = assemble(spec, keys, x, man)
    res = run_grid(data, backbone="b", ratios=[1.0], seeds=[0])
    entry = next(iter(res.values()))
    fold = entry["folds"][0]
    assert fold["n_train_synthetic"] > 0
    assert len(entry["predictions"]) == int((man.split == "test").sum())
