"""The predictions contract and the alignment every comparison table starts from.

A ``predictions.parquet`` file holds one row per test item of one (task, backbone, ratio, seed)
run (columns :data:`PREDICTION_COLUMNS`, plus ``prob_<k>`` for classification, ``time``/``event``
for survival and an optional ``age``). Paired statistics need every backbone and seed scored on
the same items, so :func:`align` puts one task x ratio into a :class:`Block`: the shared, ordered
item list and every run's predictions on it, refusing runs tested on different items.

Repeated sessions: when a subject has several test items (ADNI visits), the bootstrap resamples
subjects (:func:`cluster_groups`) and per-item errors are averaged per subject
(:func:`subject_means`) before a paired test.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainfm.frames import read_frames
from brainfm.stats.kernels import MeanOf, Prepared
from brainfm.stats.metrics import prepare_metric
from brainfm.stats.validate import StatsInputError

__all__ = [
    "DEFAULT_REFERENCE", "PREDICTION_COLUMNS", "ITEM_KEY", "read_predictions", "check_columns", "prob_columns",
    "default_metrics", "Block", "align", "cluster_groups", "subject_means",
]

DEFAULT_REFERENCE = "braindino"
PREDICTION_COLUMNS = ("task", "backbone", "ratio", "seed", "fold", "subject", "session", "kind", "y_true", "y_pred")
ITEM_KEY = ["fold", "subject", "session"]  # one test item of a run


def read_predictions(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate predictions.parquet files, checking each has the contract's columns."""
    paths = list(paths)
    if not paths:
        raise StatsInputError("no predictions files given")
    return read_frames(paths, "predictions table", PREDICTION_COLUMNS)


def check_columns(df: pd.DataFrame, needed: Sequence[str], what: str) -> None:
    """Fail with the missing column names when ``df`` lacks any of ``needed``."""
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise StatsInputError(f"{what} frame lacks columns {missing}")


def prob_columns(df: pd.DataFrame) -> list[str]:
    """The ``prob_<k>`` columns in class order, leaving out classes no row has a value for."""
    cols = sorted((c for c in df.columns if c.startswith("prob_")), key=lambda c: int(c.split("_")[1]))
    return [c for c in cols if df[c].notna().any()]


def default_metrics(kind: str, n_classes: int = 2) -> list[str]:
    """The paper's headline metric per task kind."""
    if kind == "classification":
        return ["auc" if n_classes <= 2 else "macro_auc"]
    if kind == "regression":
        return ["mae"]
    if kind == "survival":
        return ["cindex"]
    raise StatsInputError(f"no default metric for task kind {kind!r}")


def cluster_groups(subjects: np.ndarray) -> np.ndarray | None:
    """Resampling clusters: the subjects when some have several items, else None (plain bootstrap)."""
    return subjects if len(np.unique(subjects)) < len(subjects) else None


def subject_means(values: np.ndarray, subjects: np.ndarray) -> np.ndarray:
    """Per-subject means of per-item values, in sorted subject order."""
    return pd.Series(values).groupby(subjects, sort=True).mean().to_numpy()


@dataclass
class Block:
    """One task x ratio: every backbone's and seed's predictions on one shared, ordered item list."""

    task: str
    kind: str
    ratio: float
    items: pd.DataFrame  # fold, subject, session (sorted)
    y: np.ndarray  # labels / targets / survival time
    event: np.ndarray | None
    age: np.ndarray
    backbones: list[str]
    preds: dict[str, list[np.ndarray]] = field(default_factory=dict)  # per backbone, one array per seed
    labels: dict[str, list[np.ndarray]] = field(default_factory=dict)  # predicted labels (classification)

    @property
    def n_folds(self) -> int:
        return int(self.items["fold"].nunique())

    def n_seeds(self, backbone: str) -> int:
        return len(self.preds[backbone])

    def seed_only(self, backbone: str, s: int) -> Block:
        """The same items with only ``backbone``'s seed number ``s`` (for spreads across seeds)."""
        return Block(self.task, self.kind, self.ratio, self.items, self.y, self.event, self.age, [backbone],
                     {backbone: [self.preds[backbone][s]]}, {backbone: [self.labels[backbone][s]]})

    def kernel(self, backbone: str, metric: str, rows: np.ndarray | None = None) -> Prepared:
        """The metric of ``backbone`` averaged over its seeds, on all items or the given rows."""
        sel = slice(None) if rows is None else rows
        parts = []
        for s, pred in enumerate(self.preds[backbone]):
            if metric in ("accuracy", "balanced_accuracy"):
                p = self.labels[backbone][s][sel]
            else:
                p = pred[sel]
            y: Any = (self.y[sel], self.event[sel]) if metric == "cindex" else self.y[sel]
            try:
                parts.append(prepare_metric(metric, y, p))
            except StatsInputError as exc:
                raise StatsInputError(f"task {self.task} ratio {self.ratio:g} backbone {backbone} "
                                      f"(seed #{s}): {exc}") from None
        return parts[0] if len(parts) == 1 else MeanOf(parts, strata=parts[0].strata)

    def fold_values(self, backbone: str, metric: str) -> np.ndarray:
        """The seed-averaged metric of ``backbone`` on each fold's items, in fold order."""
        folds = self.items["fold"].to_numpy()
        return np.array([self.kernel(backbone, metric, np.flatnonzero(folds == f)).point() for f in np.unique(folds)])

    def errors(self, backbone: str, metric: str, rows: np.ndarray | None = None) -> np.ndarray:
        """Per-item absolute (mae) or squared (mse) errors averaged over seeds."""
        sel = slice(None) if rows is None else rows
        errs = [np.abs(p[sel] - self.y[sel]) if metric == "mae" else (p[sel] - self.y[sel]) ** 2
                for p in self.preds[backbone]]
        return np.mean(errs, axis=0)


def align(df: pd.DataFrame, task: str, ratio: float) -> Block:
    """Every (backbone, seed) run of one task x ratio on the same sorted items, or a clear error."""
    kinds = df["kind"].unique()
    if len(kinds) != 1:
        raise StatsInputError(f"task {task}: mixed kinds {kinds.tolist()}")
    kind = str(kinds[0])
    probs = prob_columns(df) if kind == "classification" else []
    if kind == "classification" and not probs:
        raise StatsInputError(f"task {task}: classification predictions have no prob_* columns")
    if kind == "survival":
        check_columns(df, ["time", "event"], f"task {task} survival predictions")
    df = df.assign(session=df["session"].astype(str), subject=df["subject"].astype(str))
    items: pd.DataFrame | None = None
    block: Block | None = None
    for (backbone, seed), run in df.groupby(["backbone", "seed"], sort=True):
        run = run.sort_values(ITEM_KEY, kind="mergesort")
        dup = run.duplicated(ITEM_KEY)
        if dup.any():
            first = run.loc[dup, ITEM_KEY].iloc[0].tolist()
            raise StatsInputError(f"task {task} ratio {ratio:g} backbone {backbone} seed {seed}: "
                                  f"{int(dup.sum())} duplicated test item(s), e.g. (fold, subject, session)={first}")
        keys = run[ITEM_KEY].reset_index(drop=True)
        if items is None:
            items = keys
            y = run["time" if kind == "survival" else "y_true"].to_numpy(np.float64)
            block = Block(task=task, kind=kind, ratio=ratio, items=items, y=y,
                          event=run["event"].to_numpy(np.float64) if kind == "survival" else None,
                          age=pd.to_numeric(run["age"], errors="coerce").to_numpy(np.float64)
                          if "age" in run.columns else np.full(len(run), np.nan),
                          backbones=[])
            ref_y = run["y_true"].to_numpy(np.float64)
            first_run = f"{backbone} seed {seed}"
        elif not keys.equals(items):
            a = set(map(tuple, items.to_numpy().tolist()))
            b = set(map(tuple, keys.to_numpy().tolist()))
            only_a, only_b = sorted(a - b)[:3], sorted(b - a)[:3]
            raise StatsInputError(
                f"task {task} ratio {ratio:g}: backbone {backbone} seed {seed} was tested on different items "
                f"than {first_run} ({len(a - b)} missing, e.g. {only_a}; {len(b - a)} extra, e.g. {only_b}); "
                "paired comparisons need the same test subjects")
        elif not np.allclose(run["y_true"].to_numpy(np.float64), ref_y, equal_nan=True):
            raise StatsInputError(f"task {task} ratio {ratio:g}: backbone {backbone} seed {seed} has different "
                                  f"y_true than {first_run} for the same items")
        assert block is not None
        if backbone not in block.backbones:
            block.backbones.append(str(backbone))
            block.preds[str(backbone)] = []
            block.labels[str(backbone)] = []
        if kind == "classification":
            block.preds[str(backbone)].append(run[probs].to_numpy(np.float64))
        else:
            block.preds[str(backbone)].append(run["y_pred"].to_numpy(np.float64))
        block.labels[str(backbone)].append(run["y_pred"].to_numpy(np.float64))
    assert block is not None
    return block
