"""Reference rows: the ``prior`` predictor against scikit-learn's dummies, and the kNN memory-set columns."""

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier, DummyRegressor

from brainfm.analysis.knn import memory_summary, run_knn_task
from brainfm.config import TaskSpec
from brainfm.stats.knn import knn_table
from brainfm.tasks.data import assemble
from brainfm.tasks.runner import run_grid
from brainfm.tasks.runs import plan_folds, ratio_subsets

RATIOS = [0.2, 0.5, 1.0]
SEEDS = [0, 1]


def _cohort(n=90, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        dx = ["CN", "CN", "MCI", "AD"][i % 4]  # imbalanced: the prior is not uniform
        rows.append(dict(dataset="toy", subject=f"s{i:03d}", session="v0", modality="T1", path="x", site="a",
                         split="test" if i % 5 == 0 else "train", diagnosis=dx, age=float(rng.uniform(20, 90)),
                         dps=float(rng.lognormal(4, 1)), survival_days=float(rng.uniform(50, 900)),
                         event=float(rng.random() < 0.7)))
    man = pd.DataFrame(rows)
    return man[["subject", "session"]], np.zeros((n, 1), np.float32), man


def _spec(name, **kw):
    return TaskSpec.from_config(name, {"dataset": "toy", **kw}, {"ratios": RATIOS, "seeds": SEEDS})


def _train_test(data, ratio, seed):
    fold = plan_folds(data)[0]
    train = set(ratio_subsets(fold, data.subject_labels, RATIOS, seed)[float(ratio)])
    subj = data.table["subject"]
    return subj.isin(train).to_numpy(), subj.isin(set(fold.test)).to_numpy()


def test_prior_classification_equals_dummy_classifier():
    keys, x, man = _cohort()
    data = assemble(_spec("dx", kind="classification", target="diagnosis", classes=["CN", "MCI", "AD"]), keys, x, man)
    res = run_grid(data, backbone="prior", ratios=RATIOS, seeds=SEEDS, predictor="prior")
    assert len(res) == len(RATIOS) * len(SEEDS)
    for key, entry in res.items():
        tr, te = _train_test(data, key.ratio, key.seed)
        dummy = DummyClassifier(strategy="prior").fit(x[tr], data.y[tr].astype(int))
        expected = np.zeros((int(te.sum()), 3))
        expected[:, dummy.classes_] = dummy.predict_proba(x[te])
        pred = entry["predictions"].sort_values("subject")
        np.testing.assert_allclose(pred[["prob_0", "prob_1", "prob_2"]].to_numpy(), expected, atol=1e-6)
        np.testing.assert_array_equal(pred["y_pred"].to_numpy(), dummy.predict(x[te]))
        assert entry["metrics"]["auc"] == pytest.approx(0.5)


@pytest.mark.parametrize("transform", [None, "log1p"])
def test_prior_regression_equals_dummy_regressor(transform):
    keys, x, man = _cohort()
    kw = {"target_transform": transform} if transform else {}
    data = assemble(_spec("dps", kind="regression", target="dps", **kw), keys, x, man)
    res = run_grid(data, backbone="prior", ratios=RATIOS, seeds=SEEDS, predictor="prior")
    for key, entry in res.items():
        tr, te = _train_test(data, key.ratio, key.seed)
        y = data.y.astype(np.float64)
        fwd, back = (np.log1p, np.expm1) if transform else (lambda v: v, lambda v: v)
        expected = back(DummyRegressor().fit(x[tr], fwd(y[tr])).predict(x[te]))
        pred = entry["predictions"].sort_values("subject")["y_pred"].to_numpy()
        np.testing.assert_allclose(pred, expected, rtol=1e-4)


def test_prior_survival_is_uninformative():
    keys, x, man = _cohort()
    data = assemble(_spec("os", kind="survival", target="survival_days"), keys, x, man)
    res = run_grid(data, backbone="prior", ratios=[1.0], seeds=[0], predictor="prior")
    entry = next(iter(res.values()))
    assert entry["predictions"]["y_pred"].nunique() == 1
    assert entry["metrics"]["cindex"] == pytest.approx(0.5)


def test_knn_majority_column_is_the_memory_set_majority():
    rng = np.random.default_rng(3)
    keys, _, man = _cohort(120)
    x = rng.normal(size=(120, 5)).astype(np.float32)
    spec = TaskSpec.from_config("knn", {"dataset": "toy", "kind": "knn", "target": "diagnosis",
                                        "classes": ["CN", "MCI", "AD"], "ks": [1, 5, 10, 25, 40]}, {})
    data = assemble(spec, keys, x, man)
    frame = run_knn_task(data, backbone="b")
    bank = data.table["split"].eq("train").to_numpy()
    counts = np.bincount(data.y[bank].astype(int), minlength=3)
    assert frame["bank_majority_fraction"].unique().tolist() == pytest.approx([counts.max() / counts.sum()])
    assert frame["bank_min_class_size"].unique().tolist() == [counts[counts > 0].min()]
    major = counts.argmax()
    query_y = frame.drop_duplicates("subject")["y_true"].to_numpy()
    assert frame["majority_accuracy"].iloc[0] == pytest.approx(np.mean(query_y == major))
    # the prior predictor's kNN accuracy is exactly the majority column
    prior = run_knn_task(data, backbone="prior", predictor="prior")
    assert prior.groupby("k")["correct"].mean().tolist() == pytest.approx([np.mean(query_y == major)] * 5)
    table = knn_table(pd.concat([frame, prior]), reference="b", n_boot=50)
    reaches = table.groupby("k")["k_reaches_min_class"].first()
    assert reaches.to_dict() == {k: bool(k >= counts[counts > 0].min()) for k in (1, 5, 10, 25, 40)}
    assert reaches.any() and not reaches.all()
    assert table["majority_accuracy"].to_numpy() == pytest.approx(np.mean(query_y == major))


def test_memory_summary_counts_only_present_classes():
    s = memory_summary(np.array([0, 0, 0, 2, 2]), 3)
    assert s == {"bank_majority_class": 0, "bank_majority_fraction": 0.6, "bank_min_class_size": 2, "bank_size": 5}
