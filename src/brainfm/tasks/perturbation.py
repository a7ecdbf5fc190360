"""Test-time robustness (paper §4.5): full-data heads trained on clean features, evaluated on
features of perturbed scans.

The heads are the ratio-1.0 heads of the clean protocol (same splits, seeds and training), so
the only thing that changes between a clean and a perturbed score is the input images. Scores
use seed-averaged test predictions pooled over CV folds (each scan is tested once, as the paper
pools ADNI's subject-disjoint test splits); the error bar is the bootstrap standard deviation.
The same pooled, seed-averaged predictions are kept per item (:func:`pooled_predictions`) so
:mod:`brainfm.stats.perturbation` can test every backbone against the reference at each
severity (Supp. Table 18).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainfm.config import IDENTITY, PerturbationSetting, StatsSpec, TaskSpec
from brainfm.errors import ManifestError
from brainfm.stats import bootstrap_ci
from brainfm.stats.predictions import ITEM_KEY, cluster_groups
from brainfm.tasks.data import build_task_data
from brainfm.tasks.runner import run_grid

__all__ = ["evaluate_perturbed", "evaluate_perturbations", "pooled_predictions", "PRIMARY_METRIC"]

PRIMARY_METRIC = {"classification": "auc", "regression": "mae", "survival": "cindex"}


def _score(spec: TaskSpec, pred: pd.DataFrame, n_boot: int, seed: int) -> dict[str, float]:
    key = ITEM_KEY  # one test item; seeds are averaged per item
    # repeated visits (ADNI): resample subjects, not visits, as the pairwise tests do
    if spec.kind == "classification":
        cols = [c for c in pred.columns if c.startswith("prob_")]
        avg = pred.groupby(key, sort=True)[cols + ["y_true"]].mean()
        groups = cluster_groups(avg.index.get_level_values("subject").to_numpy())
        y, scores = avg["y_true"].to_numpy().astype(int), avg[cols].to_numpy()
        if scores.shape[1] == 2:
            scores = scores[:, 1]
        res = bootstrap_ci(y, scores, "auc", n_boot=n_boot, seed=seed, groups=groups)
    elif spec.kind == "regression":
        avg = pred.groupby(key, sort=True)[["y_true", "y_pred"]].mean()
        groups = cluster_groups(avg.index.get_level_values("subject").to_numpy())
        res = bootstrap_ci(avg["y_true"].to_numpy(), avg["y_pred"].to_numpy(), "mae", n_boot=n_boot, seed=seed,
                           stratify=False, groups=groups)
    else:
        avg = pred.groupby(key, sort=True)[["time", "event", "y_pred"]].mean()
        groups = cluster_groups(avg.index.get_level_values("subject").to_numpy())
        yt = np.stack([avg["time"].to_numpy(), avg["event"].to_numpy()], 1)
        res = bootstrap_ci(yt, avg["y_pred"].to_numpy(), "cindex", n_boot=n_boot, seed=seed, groups=groups)
    return {"value": float(res.estimate), "err": float(res.sd), "ci_low": float(res.low), "ci_high": float(res.high)}


def pooled_predictions(spec: TaskSpec, pred: pd.DataFrame, *, backbone: str) -> pd.DataFrame:
    """Seed-averaged test predictions pooled over folds, one row per scan, in the predictions contract.

    The rows are what :func:`_score` scores (seed 0, fold 0, ratio 1): classification keeps the
    mean class probabilities and their arg-max as the label, regression and survival the mean
    prediction. A scan tested in two folds would be ambiguous and is refused.
    """
    keys = ["subject", "session"]
    numeric = [c for c in pred.columns if c.startswith("prob_")] + \
        [c for c in ("y_true", "y_pred", "time", "event", "age") if c in pred.columns]
    folds = pred.groupby(keys, sort=True)["fold"].nunique()
    if (folds > 1).any():
        s, ses = folds[folds > 1].index[0]
        raise ManifestError(f"task {spec.name}: scan {s}/{ses} is tested in several folds; perturbation "
                            "scores pool folds and need each scan tested once")
    avg = pred.groupby(keys, sort=True)[numeric].mean().reset_index()
    probs = [c for c in avg.columns if c.startswith("prob_")]
    if spec.kind == "classification" and probs:
        order = sorted(probs, key=lambda c: int(c.split("_")[1]))
        avg["y_pred"] = np.array([int(c.split("_")[1]) for c in order])[avg[order].to_numpy().argmax(1)].astype(float)
    if "event" in avg.columns:
        avg["event"] = avg["event"].round().astype(int)
    avg.insert(0, "kind", spec.kind)
    avg.insert(0, "fold", 0)
    avg.insert(0, "seed", 0)
    avg.insert(0, "ratio", 1.0)
    avg.insert(0, "backbone", backbone)
    avg.insert(0, "task", spec.name)
    return avg


def evaluate_perturbations(spec: TaskSpec, clean, perturbed: Mapping[tuple[str, float], Any],
                           manifest: pd.DataFrame, *, backbone: str,
                           n_boot: int = 2000, seed: int = 42) -> pd.DataFrame:
    """One row per (perturbation, severity), the clean setting included at each family's identity."""
    return _evaluate(spec, clean, perturbed, manifest, backbone=backbone, n_boot=n_boot, seed=seed)[0]


def _evaluate(spec: TaskSpec, clean, perturbed: Mapping[tuple[str, float], Any], manifest: pd.DataFrame, *,
              backbone: str, n_boot: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(scores, per-item pooled predictions) of every setting, the clean one at each family's identity."""
    data = build_task_data(spec, clean, manifest)
    eval_sets = {}
    for setting, store in perturbed.items():
        other = build_task_data(spec, store, manifest)
        same = (other.table[["subject", "session"]].to_numpy() == data.table[["subject", "session"]].to_numpy())
        if other.x.shape[0] != data.x.shape[0] or not same.all():
            raise ManifestError(f"perturbed features {store.path} do not cover the same scans as {clean.path}")
        eval_sets[setting] = other.x
    seeds = list(spec.seeds)
    from brainfm.tasks.runner import predictor_of

    results = run_grid(data, backbone=backbone, ratios=[1.0], seeds=seeds, eval_sets=eval_sets,
                       predictor=predictor_of(clean))
    clean_pred = pd.concat([e["predictions"] for e in results.values()], ignore_index=True)
    rows, items = [], []
    metric = PRIMARY_METRIC[spec.kind]
    kinds = sorted({k for k, _ in perturbed})
    clean_items = pooled_predictions(spec, clean_pred, backbone=backbone)
    for kind in kinds:
        rows.append({"perturbation": kind, "severity": float(IDENTITY[kind]),
                     **_score(spec, clean_pred, n_boot, seed)})
        items.append(clean_items.assign(perturbation=kind, severity=float(IDENTITY[kind])))
    for setting in perturbed:
        pred = pd.concat([e["eval"][setting] for e in results.values()], ignore_index=True)
        rows.append({"perturbation": setting[0], "severity": float(setting[1]), **_score(spec, pred, n_boot, seed)})
        items.append(pooled_predictions(spec, pred, backbone=backbone)
                     .assign(perturbation=setting[0], severity=float(setting[1])))
    out = pd.DataFrame(rows)
    out.insert(0, "metric", metric)
    out.insert(0, "backbone", backbone)
    out.insert(0, "task", spec.name)
    scores = out.sort_values(["perturbation", "severity"]).reset_index(drop=True)
    return scores, pd.concat(items, ignore_index=True)


def evaluate_perturbed(task: TaskSpec, features: str | Path, perturbed: Mapping[str, str | Path],
                       manifest: str | Path, backbone: str, out: str | Path, *, stats: StatsSpec,
                       predictions: str | Path | None = None) -> pd.DataFrame:
    """The ``evaluate_perturbed`` step: clean full-data heads scored on each perturbed feature store.

    ``perturbed`` maps a setting tag (``gamma~2``, see :class:`brainfm.config.PerturbationSetting`)
    to the feature store of the perturbed scans; one row per setting is written to ``out``, and
    the per-item predictions behind the scores to ``predictions`` (for the pairwise tests).
    """
    from brainfm.atomic import write_parquet
    from brainfm.data.manifest import read_manifest
    from brainfm.features import FeatureStore

    settings = {}
    for tag, path in perturbed.items():
        s = PerturbationSetting.parse(tag)
        settings[(s.kind, s.severity)] = FeatureStore(path)
    frame, items = _evaluate(task, FeatureStore(features), settings, read_manifest(manifest, check_files=False),
                             backbone=backbone, n_boot=stats.n_boot, seed=stats.seed)
    write_parquet(out, frame)
    if predictions is not None:
        write_parquet(predictions, items)
    return frame
