"""Running a task for one backbone across label ratios, seeds and folds.

All (fold, ratio, seed) heads of a backbone are trained in one :class:`HeadBank`, so a whole
ratio sweep costs one vectorised training loop instead of dozens of Python loops. Results are
identical to training each head alone (see ``tests/tasks/test_heads.py``), so the workflow may
split the grid into jobs any way it likes. Folds, ratio subsets, head seeds and run folders
come from :mod:`brainfm.tasks.runs`; predictions follow the contract of
:mod:`brainfm.stats.predictions`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from brainfm.data.splits import Fold
from brainfm.config import TaskSpec
from brainfm.errors import ConfigError
from brainfm.tasks.data import TaskData
from brainfm.tasks.metrics import classification_metrics, regression_metrics, survival_metrics
from brainfm.tasks.runs import RunKey, checked_folds, head_seed, ratio_subsets, subject_rows, summarize_run
from brainfm.tasks.train import FitResult, HeadConfig, HeadJob, train_head_bank

__all__ = ["fit_heads", "head_config_for", "run_grid", "prediction_frame", "fold_metrics", "training_targets",
           "TARGET_UNIT_LOSSES", "prior_outputs", "PREDICTORS"]

#: losses whose parameters are in the units of the (transformed) target, e.g. the ATLAS Huber δ = 1
#: in log1p-days (paper eq. 9): their targets are never z-scored, whatever ``standardize_target``
TARGET_UNIT_LOSSES = frozenset({"atlas_mixed"})

#: "head": the task's trained head bank; "prior": the closed-form prior of each training subset
#: (the ``prior`` reference encoder; see brainfm.models.reference)
PREDICTORS = ("head", "prior")

def head_config_for(data: TaskData) -> tuple[HeadConfig, bool]:
    """The task's head settings over the global defaults, and whether the regression target is z-scored."""
    spec = data.spec
    merged = spec.head.to_dict()  # the run's head merged with the task's overrides (brainfm.config)
    standardize = (bool(merged.pop("standardize_target")) and spec.kind == "regression"
                   and spec.loss not in TARGET_UNIT_LOSSES)
    cfg = HeadConfig.from_dict({**merged, "loss": spec.loss, "n_out": spec.n_out, "loss_kwargs": spec.loss_kwargs})
    if spec.kind == "survival" and merged.get("batch_size") is not None:
        # the partial likelihood needs whole risk sets: train Cox heads on the full training set
        cfg = HeadConfig.from_dict({**cfg.__dict__, "batch_size": None})
    return cfg, standardize


def _smote(x: np.ndarray, y: np.ndarray, rows: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic minority samples from the *training* rows only (imbalanced-learn's SMOTE)."""
    from imblearn.over_sampling import SMOTE

    counts = np.bincount(y[rows].astype(int))
    k = int(min(5, counts[counts > 0].min() - 1))
    if k < 1:
        return np.empty((0, x.shape[1]), np.float32), np.empty(0, np.float32)
    xs, ys = SMOTE(random_state=seed, k_neighbors=k).fit_resample(x[rows], y[rows].astype(int))
    return xs[len(rows):].astype(np.float32), ys[len(rows):].astype(np.float32)


class _PriorFit:
    """The closed-form prior of every job, with the attributes of a trained :class:`FitResult`."""

    def __init__(self, out: torch.Tensor):
        self.out = out  # (H, N, K): the same output for every row
        h = out.shape[0]
        self.best_epoch = np.zeros(h, int)
        self.epochs_run = np.zeros(h, int)
        self.n_params_per_head = 0

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.out[:, :1, :].expand(-1, len(x), -1).clone()


def prior_outputs(y: torch.Tensor, jobs: Sequence[HeadJob], kind: str, n_out: int, n_base: int) -> torch.Tensor:
    """What a head on constant inputs converges to, per job: (H, 1, n_out) outputs.

    Classification: log class frequencies of the job's real training rows (softmax gives the
    frequencies: sklearn's ``DummyClassifier(strategy="prior")``); regression: the training mean on
    the head's target scale (``DummyRegressor()``); survival: a constant risk (C-index 0.5).
    """
    out = torch.zeros(len(jobs), 1, n_out, dtype=torch.float32)
    for h, job in enumerate(jobs):
        rows = torch.as_tensor(job.train[job.train < n_base], dtype=torch.long)
        if kind == "classification":
            counts = torch.bincount(y[rows].long(), minlength=n_out).double()
            freq = counts / counts.sum().clamp(min=1)
            out[h, 0] = torch.log(freq.clamp(min=1e-12)).float()
        elif kind == "regression":
            out[h, 0, 0] = y[rows].double().mean().float()
    return out


def run_grid(data: TaskData, *, backbone: str, ratios: Sequence[float], seeds: Sequence[int],
             pretrain_subjects: Iterable[str] | None = None,
             eval_sets: dict[Any, np.ndarray] | None = None, predictor: str = "head") -> dict[RunKey, dict[str, Any]]:
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
    meta: list[tuple[float, int, Fold, int]] = []
    for fold in folds:
        val_rows = np.concatenate([rows_of[s] for s in fold.val]) if fold.val else np.empty(0, int)
        for seed in seeds:
            subsets = ratio_subsets(fold, labels, ratios, seed)
            for ratio in ratios:
                train_rows = np.concatenate([rows_of[s] for s in subsets[float(ratio)]])
                if spec.smote:
                    sx, sy = _smote(x, y, train_rows, seed)
                    start = n_base + sum(len(e) for e in extra_x)
                    extra_x.append(sx)
                    extra_y.append(sy)
                    train_rows = np.concatenate([train_rows, np.arange(start, start + len(sx))])
                jobs.append(HeadJob(train_rows, val_rows, head_seed(seed, fold.fold)))
                meta.append((float(ratio), int(seed), fold, len(subsets[float(ratio)])))
    if extra_x:
        x = np.concatenate([x, *extra_x])
        y = np.concatenate([y, *extra_y])

    xt = torch.from_numpy(np.ascontiguousarray(x))
    yt, mean, std = training_targets(y, spec.target_transform, standardize, jobs)

    if predictor not in PREDICTORS:
        raise ConfigError(f"unknown predictor {predictor!r}; known: {PREDICTORS}")
    t0 = time.perf_counter()
    fit: FitResult | _PriorFit
    if predictor == "prior":
        fit = _PriorFit(prior_outputs(yt, jobs, spec.kind, cfg.n_out, n_base))
    else:
        fit = train_head_bank(xt, yt, jobs, cfg)
    seconds = time.perf_counter() - t0
    out = fit.predict(xt[:n_base]).numpy()
    eval_out = {name: fit.predict(torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32))).numpy()
                for name, m in (eval_sets or {}).items()}

    results: dict[RunKey, dict[str, Any]] = {}
    for h, (ratio, seed, fold, n_subjects) in enumerate(meta):
        test_rows = np.concatenate([rows_of[s] for s in fold.test])
        pred = prediction_frame(data, test_rows, out[h, test_rows], mean, std)
        pred.insert(0, "fold", fold.fold)
        key = RunKey(ratio, seed)
        entry = results.setdefault(key, {"frames": [], "folds": [], "train_risk": [], "eval": {}})
        entry["frames"].append(pred)
        for name, eo in eval_out.items():
            ep = prediction_frame(data, test_rows, eo[h, test_rows], mean, std)
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
            "n_train_subjects": int(n_subjects),
            "n_test_subjects": len(fold.test),
            "n_train_synthetic": int((jobs[h].train >= n_base).sum()),
            "n_val": int(len(jobs[h].val)),
            "n_test": int(len(test_rows)),
            "best_epoch": int(fit.best_epoch[h]),
            "epochs_run": int(fit.epochs_run[h]),
            "metrics": fold_metrics(data, pred),
        })
    for key, entry in results.items():
        summarize_run(entry, key, data, backbone, head=cfg.__dict__ | {"standardize_target": standardize},
                      target_scale={"mean": mean, "std": std},
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


def frozen_training_rows(data: TaskData, folds: Sequence[Fold]) -> np.ndarray:
    """Every row some frozen head of the task trains on (all folds, the task's seeds and ratios).

    The z-score of regression targets is taken over these rows (:func:`training_targets`), so the
    fine-tuning runs, which draw from the same plan, scale targets exactly as the frozen heads do.
    """
    rows_of = subject_rows(data)
    subjects = {s for fold in folds for seed in data.spec.seeds
                for sub in ratio_subsets(fold, data.subject_labels, data.spec.ratios, seed).values() for s in sub}
    return np.sort(np.concatenate([rows_of[s] for s in sorted(subjects)]))


def training_targets(y: np.ndarray, transform: str, standardize: bool,
                     jobs: Sequence[HeadJob]) -> tuple[torch.Tensor, float | None, float | None]:
    """The targets the heads fit: ``log1p`` if the task says so, then (optionally) z-scored.

    Returns ``(targets, mean, std)``; ``mean``/``std`` are None without z-scoring. The z-score uses
    the statistics of the union of the heads' training rows so every head shares one scale.
    """
    yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))
    mean = std = None
    if standardize or transform == "log1p":
        yt = yt.clone()
        if transform == "log1p":
            yt = torch.log1p(yt)
        if standardize:
            ref = np.unique(np.concatenate([j.train for j in jobs]))
            mean, std = float(yt[ref].mean()), float(yt[ref].std().clamp(min=1e-6))
            yt = (yt - mean) / std
    return yt, mean, std


def prediction_frame(data: TaskData, rows: np.ndarray, out: np.ndarray, mean: float | None,
                      std: float | None) -> pd.DataFrame:
    """Test predictions of one head in the predictions contract (targets back on their own scale)."""
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


def fold_metrics(data: TaskData, pred: pd.DataFrame) -> dict[str, float]:
    """The point metrics of one fold's test predictions (written to ``metrics.json``)."""
    spec = data.spec
    if spec.kind == "classification":
        prob = pred[[f"prob_{k}" for k in range(spec.n_out)]].to_numpy()
        return classification_metrics(pred["y_true"].to_numpy(), prob, spec.class_names)
    if spec.kind == "regression":
        return regression_metrics(pred["y_true"].to_numpy(), pred["y_pred"].to_numpy())
    return survival_metrics(pred["time"].to_numpy(), pred["event"].to_numpy(), pred["y_pred"].to_numpy())


def predictor_of(store: Any) -> str:
    """"prior" for the features of the ``prior`` reference encoder, else "head"."""
    config = (getattr(store, "meta", None) or {}).get("encoder_config") or {}
    return "prior" if config.get("reference") == "prior" else "head"


def fit_heads(task: TaskSpec, features: str | Path, manifest: str | Path, backbone: str, out: str | Path, *,
              pretrain_manifests: Sequence[str | Path] = ()) -> dict[RunKey, dict[str, Any]]:
    """The ``fit_heads`` step: every (ratio, seed, fold) head of one (task, backbone) cell -> ``out``.

    Reads the backbone's feature store and the dataset manifest, refuses test subjects seen in
    ``pretrain_manifests``, and writes ``out/ratio~R/seed~S/{predictions.parquet,metrics.json}``.
    """
    from brainfm.data.manifest import read_manifest
    from brainfm.features import FeatureStore
    from brainfm.tasks.data import build_task_data
    from brainfm.tasks.runs import pretraining_subjects, write_runs

    store = FeatureStore(features)
    data = build_task_data(task, store, read_manifest(manifest, check_files=False))
    results = run_grid(data, backbone=backbone, ratios=task.ratios, seeds=task.seeds,
                       pretrain_subjects=pretraining_subjects(pretrain_manifests), predictor=predictor_of(store))
    write_runs(out, results)
    return results
