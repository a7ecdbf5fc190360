"""Running a task for one backbone across label ratios, seeds and folds.

All (fold, ratio, seed) heads of a backbone are trained in one :class:`HeadBank`, so a whole
ratio sweep costs one vectorised training loop instead of dozens of Python loops. Results are
identical to training each head alone (see ``tests/tasks/test_heads.py``), so the workflow may
split the grid into jobs any way it likes. Outputs follow the predictions contract read by
:mod:`brainfm.stats` and :mod:`brainfm.report`.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch

from brainfm.atomic import write_json, write_parquet
from brainfm.data.splits import (
    Fold,
    check_against_pretraining,
    cv_folds,
    holdout_split,
    nested_ratio_subsets,
    validation_split,
)
from brainfm.errors import ConfigError
from brainfm.tasks.data import TaskData
from brainfm.config import TaskSpec
from brainfm.tasks.metrics import classification_metrics, regression_metrics, survival_metrics
from brainfm.tasks.train import FitResult, HeadConfig, HeadJob, fit_heads

__all__ = ["plan_folds", "checked_folds", "subject_rows", "summarize_run", "training_subjects", "RunKey", "run_grid", "write_run", "run_dir", "head_config_for"]

class RunKey(NamedTuple):
    ratio: float
    seed: int


def run_dir(root: str | Path, ratio: float, seed: int) -> Path:
    """Where one (ratio, seed) of a (task, backbone) lives: ``<root>/ratio~R/seed~S``."""
    return Path(root) / f"ratio~{ratio:g}" / f"seed~{seed}"


def plan_folds(data: TaskData) -> list[Fold]:
    """The task's subject-disjoint partitions: one hold-out fold or K CV folds."""
    spec = data.spec
    subjects = data.table.groupby("subject", sort=True).agg(split=("split", "first")).reset_index()
    labels = data.subject_labels
    if labels is not None:
        subjects["strat"] = subjects["subject"].map(labels)
    if spec.split.type == "cv":
        return cv_folds(subjects, spec.split.n_splits, spec.split.seed, spec.split.val_fraction)
    train, test = holdout_split(subjects, spec.split.test_fraction, spec.split.seed)
    train, val = validation_split(train, labels, spec.split.val_fraction, spec.split.seed + 1)
    fold = Fold(0, tuple(train), tuple(val), tuple(test))
    fold.check()
    return [fold]


def training_subjects(spec: TaskSpec, manifest: pd.DataFrame) -> list[str]:
    """Subjects the task never tests (in any fold): the only ones a pretraining corpus may share.

    The task's folds depend only on labels and split settings, so they are planned here from the
    manifest alone (no features); the fit step later re-plans the same folds and checks leakage.
    """
    from brainfm.tasks.data import assemble

    if spec.unit == "image":
        keys = manifest[["subject", "session", "modality"]].drop_duplicates()
    else:
        keys = manifest[["subject", "session"]].drop_duplicates()
    keys = keys.reset_index(drop=True)
    data = assemble(spec, keys, np.zeros((len(keys), 1), dtype=np.float32), manifest, source="manifest")
    tested = {s for fold in plan_folds(data) for s in fold.test}
    return sorted(set(manifest["subject"].astype(str)) - tested)


def checked_folds(data: TaskData, pretrain_subjects: Iterable[str] | None) -> list[Fold]:
    """:func:`plan_folds`, refusing any fold that tests a subject seen during pretraining."""
    folds = plan_folds(data)
    if pretrain_subjects is not None:
        pre = set(map(str, pretrain_subjects))
        for fold in folds:
            check_against_pretraining(fold.test, pre, data.spec.name)
    return folds


def subject_rows(data: TaskData) -> dict[str, np.ndarray]:
    """Row indices of ``data.table`` per subject (all visits / images of a subject together)."""
    subj = data.table["subject"].to_numpy()
    return pd.Series(np.arange(len(subj))).groupby(subj).apply(lambda s: s.to_numpy()).to_dict()


def summarize_run(entry: dict[str, Any], key: RunKey, data: TaskData, backbone: str,
                  **info: Any) -> dict[str, Any]:
    """Turn a run's per-fold frames and records into ``predictions``, mean ``metrics`` and ``info``."""
    spec = data.spec
    frame = pd.concat(entry.pop("frames"), ignore_index=True)
    for col, val in (("seed", key.seed), ("ratio", key.ratio), ("backbone", backbone), ("task", spec.name)):
        frame.insert(0, col, val)
    entry["predictions"] = frame
    folds = entry["folds"]
    entry["metrics"] = {k: float(v) for k, v in pd.DataFrame([f["metrics"] for f in folds]).mean().items()}
    entry["info"] = {
        "task": spec.name, "backbone": backbone, "ratio": key.ratio, "seed": key.seed,
        "kind": spec.kind, "dataset": spec.dataset, "n_folds": len(folds),
        **{n: int(sum(f[n] for f in folds) / len(folds)) for n in ("n_train", "n_val", "n_test")},
        "excluded": data.excluded, **info,
    }
    return entry


def head_config_for(data: TaskData) -> tuple[HeadConfig, bool]:
    """The head bank's settings from the task's (already merged) head spec; whether to z-score targets."""
    spec = data.spec
    merged = spec.head.to_dict()
    standardize = bool(merged.pop("standardize_target")) and spec.kind == "regression"
    cfg = HeadConfig.from_dict({**merged, "loss": spec.loss, "n_out": spec.n_out, "loss_kwargs": spec.loss_kwargs})
    if spec.kind == "survival" and merged.get("batch_size") is not None:
        # the partial likelihood needs whole risk sets: train Cox heads on the full training set
        cfg = HeadConfig.from_dict({**cfg.__dict__, "batch_size": None})
    return cfg, standardize


def _head_seed(seed: int, fold: int) -> int:
    return zlib.crc32(f"head:{seed}:{fold}".encode())


def _smote(x: np.ndarray, y: np.ndarray, rows: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic minority samples from the *training* rows only (imbalanced-learn's SMOTE)."""
    from imblearn.over_sampling import SMOTE

    counts = np.bincount(y[rows].astype(int))
    k = int(min(5, counts[counts > 0].min() - 1))
    if k < 1:
        return np.empty((0, x.shape[1]), np.float32), np.empty(0, np.float32)
    xs, ys = SMOTE(random_state=seed, k_neighbors=k).fit_resample(x[rows], y[rows].astype(int))
    return xs[len(rows):].astype(np.float32), ys[len(rows):].astype(np.float32)


def run_grid(data: TaskData, *, backbone: str, ratios: Sequence[float], seeds: Sequence[int],
             pretrain_subjects: Iterable[str] | None = None,
             eval_sets: dict[Any, np.ndarray] | None = None) -> dict[RunKey, dict[str, Any]]:
    """Train every (fold, ratio, seed) head for one backbone; return predictions and metrics per run.

    ``eval_sets`` maps a name to another feature matrix aligned row by row with ``data.x`` (e.g.
    the same scans after a test-time perturbation); each run then also carries the heads'
    test predictions on those features under ``entry["eval"][name]``.
    """
    spec = data.spec
    if spec.kind == "knn":
        raise ConfigError(f"task {spec.name} is a kNN probe; use brainfm.analysis.knn")
    folds = checked_folds(data, pretrain_subjects)
    cfg, standardize = head_config_for(data)
    rows_of = subject_rows(data)
    labels = data.subject_labels

    x, y = data.x, data.y.astype(np.float32)
    extra_x, extra_y = [], []
    n_base = len(x)
    jobs: list[HeadJob] = []
    meta: list[tuple[float, int, Fold]] = []
    for fold in folds:
        val_rows = np.concatenate([rows_of[s] for s in fold.val]) if fold.val else np.empty(0, int)
        for seed in seeds:
            subsets = nested_ratio_subsets(fold.train, labels, ratios, seed=seed * 7919 + fold.fold)
            for ratio in ratios:
                train_rows = np.concatenate([rows_of[s] for s in subsets[float(ratio)]])
                if spec.smote:
                    sx, sy = _smote(x, y, train_rows, seed)
                    start = n_base + sum(len(e) for e in extra_x)
                    extra_x.append(sx)
                    extra_y.append(sy)
                    train_rows = np.concatenate([train_rows, np.arange(start, start + len(sx))])
                jobs.append(HeadJob(train_rows, val_rows, _head_seed(seed, fold.fold)))
                meta.append((float(ratio), int(seed), fold))
    if extra_x:
        x = np.concatenate([x, *extra_x])
        y = np.concatenate([y, *extra_y])

    xt = torch.from_numpy(np.ascontiguousarray(x))
    yt = torch.from_numpy(np.ascontiguousarray(y))
    mean = std = None
    if standardize or spec.target_transform == "log1p":
        yt = yt.clone()
        if spec.target_transform == "log1p":
            yt = torch.log1p(yt)
        if standardize:
            # z-score the target with the statistics of the largest training set so every head shares a scale
            ref = np.unique(np.concatenate([j.train for j in jobs]))
            mean, std = float(yt[ref].mean()), float(yt[ref].std().clamp(min=1e-6))
            yt = (yt - mean) / std

    t0 = time.perf_counter()
    fit: FitResult = fit_heads(xt, yt, jobs, cfg)
    seconds = time.perf_counter() - t0
    out = fit.predict(xt[:n_base]).numpy()
    eval_out = {name: fit.predict(torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32))).numpy()
                for name, m in (eval_sets or {}).items()}

    results: dict[RunKey, dict[str, Any]] = {}
    for h, (ratio, seed, fold) in enumerate(meta):
        test_rows = np.concatenate([rows_of[s] for s in fold.test])
        pred = _prediction_frame(data, test_rows, out[h, test_rows], mean, std)
        pred.insert(0, "fold", fold.fold)
        key = RunKey(ratio, seed)
        entry = results.setdefault(key, {"frames": [], "folds": [], "train_risk": [], "eval": {}})
        entry["frames"].append(pred)
        for name, eo in eval_out.items():
            ep = _prediction_frame(data, test_rows, eo[h, test_rows], mean, std)
            ep.insert(0, "fold", fold.fold)
            entry["eval"].setdefault(name, []).append(ep)
        if spec.kind == "survival":
            # the Kaplan-Meier threshold is the median *training* risk (paper §2.4)
            tr = jobs[h].train[jobs[h].train < n_base]
            entry["train_risk"].append(pd.DataFrame({"fold": fold.fold, "subject": data.table["subject"].iloc[tr].to_numpy(),
                                                     "risk": out[h, tr, 0].astype(float)}))
        entry["folds"].append({
            "fold": fold.fold,
            "n_train": int(np.isin(jobs[h].train, np.arange(n_base)).sum()),
            "n_train_synthetic": int((jobs[h].train >= n_base).sum()),
            "n_val": int(len(jobs[h].val)),
            "n_test": int(len(test_rows)),
            "best_epoch": int(fit.best_epoch[h]),
            "epochs_run": int(fit.epochs_run[h]),
            "metrics": _metrics(data, pred),
        })
    for key, entry in results.items():
        summarize_run(entry, key, data, backbone, head=cfg.__dict__ | {"standardize_target": standardize},
                      trainable_params_per_head=fit.n_params_per_head, bank_size=len(jobs), bank_seconds=seconds)
        entry["eval"] = {name: pd.concat(v, ignore_index=True).assign(seed=key.seed)
                         for name, v in entry["eval"].items()}
        risks = entry.pop("train_risk")
        if risks:
            tr = pd.concat(risks, ignore_index=True)
            tr.insert(0, "seed", key.seed)
            tr.insert(0, "ratio", key.ratio)
            tr.insert(0, "backbone", backbone)
            tr.insert(0, "task", spec.name)
            entry["train_risk"] = tr
    return results


def _prediction_frame(data: TaskData, rows: np.ndarray, out: np.ndarray, mean: float | None,
                      std: float | None) -> pd.DataFrame:
    spec = data.spec
    t = data.table.iloc[rows]
    frame = pd.DataFrame({"subject": t["subject"].astype(str).to_numpy(),
                          "session": t["session"].astype(str).to_numpy(), "kind": spec.kind})
    if spec.kind == "classification":
        logits = torch.from_numpy(out)
        prob = torch.softmax(logits, dim=-1).numpy()
        frame["y_true"] = data.y[rows].astype(float)
        frame["y_pred"] = prob.argmax(1).astype(float)
        for k in range(prob.shape[1]):
            frame[f"prob_{k}"] = prob[:, k]
    elif spec.kind == "regression":
        value = out[:, 0].astype(np.float64)
        if std is not None:
            value = value * std + mean
        if spec.target_transform == "log1p":
            value = np.expm1(value)
        frame["y_true"] = data.y[rows].astype(float)
        frame["y_pred"] = value
    else:
        frame["y_true"] = data.y[rows, 0].astype(float)
        frame["y_pred"] = out[:, 0].astype(float)
        frame["time"] = data.y[rows, 0].astype(float)
        frame["event"] = data.y[rows, 1].astype(int)
    frame["age"] = pd.to_numeric(t["age"], errors="coerce").to_numpy() if "age" in t.columns else np.nan
    return frame


def _metrics(data: TaskData, pred: pd.DataFrame) -> dict[str, float]:
    spec = data.spec
    if spec.kind == "classification":
        prob = pred[[f"prob_{k}" for k in range(spec.n_out)]].to_numpy()
        return classification_metrics(pred["y_true"].to_numpy(), prob, spec.class_names)
    if spec.kind == "regression":
        return regression_metrics(pred["y_true"].to_numpy(), pred["y_pred"].to_numpy())
    return survival_metrics(pred["time"].to_numpy(), pred["event"].to_numpy(), pred["y_pred"].to_numpy())


def write_run(root: str | Path, key: RunKey, entry: dict[str, Any]) -> Path:
    """Write predictions.parquet and metrics.json for one (task, backbone, ratio, seed)."""
    info = entry["info"]
    out = run_dir(root, key.ratio, key.seed)
    write_parquet(out / "predictions.parquet", entry["predictions"])
    if entry.get("train_risk") is not None:
        write_parquet(out / "train_risk.parquet", entry["train_risk"])
    write_json(out / "metrics.json", {**info, "metrics": entry["metrics"], "folds": entry["folds"]})
    return out
