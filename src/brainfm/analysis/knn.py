"""Non-parametric kNN probing of frozen features (paper §4.6).

Features are L2-normalised and compared by cosine similarity; the training split is the memory
bank and the test split the queries. Each query takes the majority label of its ``k`` nearest
neighbours; a tie between classes is broken by the summed similarity of the tied classes'
neighbours (then by the lower class index, which only matters for exactly equal sums). No PCA
or whitening.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["knn_predict", "knn_probe", "run_knn_task", "memory_summary"]


def knn_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, ks: Sequence[int],
                n_classes: int | None = None) -> dict[int, np.ndarray]:
    """Predicted class for every query and every ``k`` (k larger than the bank is clipped)."""
    train_x = np.asarray(train_x, dtype=np.float64)
    test_x = np.asarray(test_x, dtype=np.float64)
    train_y = np.asarray(train_y).astype(int)
    if len(train_x) != len(train_y):
        raise ValueError(f"train_x has {len(train_x)} rows but train_y has {len(train_y)}")
    if len(train_x) == 0 or len(test_x) == 0:
        raise ValueError("kNN needs a non-empty memory bank and at least one query")
    n_classes = int(n_classes or train_y.max() + 1)
    a = train_x / np.linalg.norm(train_x, axis=1, keepdims=True).clip(min=1e-12)
    b = test_x / np.linalg.norm(test_x, axis=1, keepdims=True).clip(min=1e-12)
    sim = b @ a.T  # (Q, N)
    order = np.argsort(-sim, axis=1, kind="stable")
    out: dict[int, np.ndarray] = {}
    rows = np.arange(len(b))[:, None]
    for k in ks:
        kk = int(min(k, len(a)))
        nn = order[:, :kk]
        labels = train_y[nn]
        sims = sim[rows, nn]
        votes = np.zeros((len(b), n_classes))
        sumsim = np.zeros((len(b), n_classes))
        np.add.at(votes, (np.repeat(rows, kk, 1), labels), 1.0)
        np.add.at(sumsim, (np.repeat(rows, kk, 1), labels), sims)
        top = votes == votes.max(1, keepdims=True)
        score = np.where(top, sumsim, -np.inf)
        out[int(k)] = score.argmax(1)
    return out


def memory_summary(train_y: np.ndarray, n_classes: int) -> dict[str, Any]:
    """What a kNN table must show beside each k: the memory set's majority class and its share, and
    the size of its smallest class (a k that reaches it can outvote that class everywhere)."""
    counts = np.bincount(np.asarray(train_y).astype(int), minlength=n_classes)
    major = int(counts.argmax())
    present = counts[counts > 0]
    return {"bank_majority_class": major, "bank_majority_fraction": float(counts[major] / counts.sum()),
            "bank_min_class_size": int(present.min()), "bank_size": int(counts.sum())}


def run_knn_task(data, *, backbone: str, pretrain_subjects=None, predictor: str = "head"):
    """kNN probe of a task: training subjects are the memory bank, test subjects the queries.

    Returns a long frame (one row per query and k) with ``correct`` for McNemar tests, and per row
    the memory set's majority class, its share, the query accuracy of always predicting it
    (``majority_accuracy``) and the smallest class size (:func:`memory_summary`). CV tasks use
    their first fold; the validation subjects join the memory bank (kNN has nothing to tune).
    With ``predictor="prior"`` (the ``prior`` reference) every query gets the majority class.
    """
    import pandas as pd

    from brainfm.data.splits import check_against_pretraining
    from brainfm.tasks.runs import plan_folds

    spec = data.spec
    fold = plan_folds(data)[0]
    if pretrain_subjects is not None:
        check_against_pretraining(fold.test, pretrain_subjects, spec.name)
    table = data.table
    bank = table["subject"].isin(set(fold.train) | set(fold.val)).to_numpy()
    query = table["subject"].isin(set(fold.test)).to_numpy()
    n_classes = len(spec.classes)
    memory = memory_summary(data.y[bank], n_classes)
    if predictor == "prior":
        preds = {int(k): np.full(int(query.sum()), memory["bank_majority_class"]) for k in spec.ks}
    else:
        preds = knn_predict(data.x[bank], data.y[bank], data.x[query], spec.ks, n_classes=n_classes)
    q = table[query]
    memory["majority_accuracy"] = float(np.mean(data.y[query].astype(int) == memory["bank_majority_class"]))
    frames = []
    for k, pred in preds.items():
        frames.append(pd.DataFrame({
            "task": spec.name, "backbone": backbone, "subject": q["subject"].astype(str).to_numpy(),
            "session": q["session"].astype(str).to_numpy(), "y_true": data.y[query].astype(int), "k": k,
            "y_pred": pred.astype(int), "correct": (pred == data.y[query]).astype(int), **memory,
        }))
    return pd.concat(frames, ignore_index=True)


def knn_probe(task: Any, features: str | Path, manifest: str | Path, backbone: str, out: str | Path, *,
              pretrain_manifests: Sequence[str | Path] = ()) -> Any:
    """The ``knn_probe`` step: a kNN task on one backbone's frozen features -> ``out`` (parquet)."""
    from brainfm.atomic import write_parquet
    from brainfm.data.manifest import read_manifest
    from brainfm.features import FeatureStore
    from brainfm.tasks.data import build_task_data
    from brainfm.tasks.runner import predictor_of
    from brainfm.tasks.runs import pretraining_subjects

    store = FeatureStore(features)
    data = build_task_data(task, store, read_manifest(manifest, check_files=False))
    frame = run_knn_task(data, backbone=backbone, pretrain_subjects=pretraining_subjects(pretrain_manifests),
                         predictor=predictor_of(store))
    write_parquet(out, frame)
    return frame
