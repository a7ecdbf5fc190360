"""Backbone-vs-reference comparison tables from predictions (paper §4.7).

Input is the concatenation of ``predictions.parquet`` files (columns in the project contracts).
For every task x ratio, each backbone is compared with a reference backbone (BrainDINO by
default) with the test the paper prescribes for that kind of task:

================  ===========================  ==========================================
task kind         estimate and uncertainty      test vs reference
================  ===========================  ==========================================
classification    (macro-)AUC, percentile CI    paired bootstrap of the test set
survival (Cox)    C-index, percentile CI        paired bootstrap (stratified by event)
regression        MAE, bootstrap CI / sd        paired t-test on per-subject absolute errors
segmentation      mean Dice, bootstrap CI / sd  paired bootstrap of per-case Dice
CV (> 1 fold)     mean over folds, Student-t    paired t-test of per-fold metrics
================  ===========================  ==========================================

Choices made here (the paper does not spell them out):
- Seeds. With several seeds per run the estimand is the *mean over seeds of the per-seed
  metric*. Its bootstrap resamples the test subjects once and evaluates every seed on the same
  resample, so the CI and the paired test refer to exactly the reported number. ``seed_sd`` is
  the spread of the per-seed metric. For regression the per-subject errors are averaged over
  seeds before the t-test (MAE is linear, so their mean is the seed-mean MAE).
- ``sd`` (the "±" of Dice and MAE) is the bootstrap standard deviation of the estimate for a
  single test split (as the paper's kNN error bars) and the standard deviation across folds for
  CV tasks; ``sd_source`` says which.
- Repeated sessions: if a subject has several test items (ADNI visits), the bootstrap resamples
  subjects (cluster bootstrap) and the regression t-test uses per-subject mean errors.
- Holm adjustment is applied where the paper applies it (kNN across k, age strata); for the
  main tables ``adjust="holm"`` optionally adjusts across backbones within a task x ratio.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from brainfm.errors import InputError
from brainfm.stats._validate import StatsInputError, check_n_boot
from brainfm.stats.bootstrap import bootstrap_distributions, bootstrap_p_value, percentile_ci
from brainfm.stats.hypothesis import holm, mcnemar_exact, paired_ttest, sign_flip_test, t_interval
from brainfm.stats.metrics import Prepared, _MeanOf, _WeightedMean, metric_info, prepare_metric
from brainfm.stats.survival import km_groups

__all__ = [
    "DEFAULT_REFERENCE", "ADNI_AGE_EDGES", "BRAIN_AGE_EDGES", "COMPARISON_COLUMNS", "PREDICTION_COLUMNS",
    "stars", "metric_sort_key", "read_predictions", "default_metrics", "compare_predictions", "compare_dice",
    "knn_table", "age_bin_labels", "age_strata_table", "km_table", "KNN_COLUMNS", "STRATA_COLUMNS", "KM_COLUMNS",
]

DEFAULT_REFERENCE = "braindino"
ADNI_AGE_EDGES: tuple[float, ...] = (55, 65, 75, 85, math.inf)
BRAIN_AGE_EDGES: tuple[float, ...] = (0, 10, 30, 50, 70, math.inf)
PREDICTION_COLUMNS = ("task", "backbone", "ratio", "seed", "fold", "subject", "session", "kind", "y_true", "y_pred")
COMPARISON_COLUMNS = [
    "task", "kind", "metric", "ratio", "backbone", "reference", "is_reference", "n", "n_subjects", "n_seeds",
    "n_folds", "estimate", "sd", "sd_source", "ci_low", "ci_high", "ci_method", "seed_sd", "delta",
    "delta_ci_low", "delta_ci_high", "test", "p_value", "p_adjusted", "stars", "higher_is_better",
]
_KEY = ["fold", "subject", "session"]


def stars(p: float) -> str:
    """Tiered significance marks of the paper: * p<.05, ** p<.01, *** p<.001 ('' otherwise or NaN)."""
    if p is None or not np.isfinite(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


def read_predictions(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate predictions.parquet files, checking each has the contract's columns."""
    frames = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise InputError(path, "predictions file does not exist")
        try:
            df = pd.read_parquet(path)
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise InputError(path, f"cannot read predictions parquet: {exc}") from None
        missing = [c for c in PREDICTION_COLUMNS if c not in df.columns]
        if missing:
            raise InputError(path, f"missing prediction columns {missing}")
        frames.append(df)
    if not frames:
        raise StatsInputError("no predictions files given")
    return pd.concat(frames, ignore_index=True)


def _check_columns(df: pd.DataFrame, needed: Sequence[str], what: str) -> None:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise StatsInputError(f"{what} frame lacks columns {missing}")


def _prob_columns(df: pd.DataFrame) -> list[str]:
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


# --------------------------------------------------------------------------------------------
# Aligning backbones and seeds on the same test items.
# --------------------------------------------------------------------------------------------

@dataclass
class _Block:
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
        return parts[0] if len(parts) == 1 else _MeanOf(parts, strata=parts[0].strata)

    def errors(self, backbone: str, metric: str, rows: np.ndarray | None = None) -> np.ndarray:
        """Per-item absolute (mae) or squared (mse) errors averaged over seeds."""
        sel = slice(None) if rows is None else rows
        errs = [np.abs(p[sel] - self.y[sel]) if metric == "mae" else (p[sel] - self.y[sel]) ** 2
                for p in self.preds[backbone]]
        return np.mean(errs, axis=0)


def _align(df: pd.DataFrame, task: str, ratio: float) -> _Block:
    kinds = df["kind"].unique()
    if len(kinds) != 1:
        raise StatsInputError(f"task {task}: mixed kinds {kinds.tolist()}")
    kind = str(kinds[0])
    probs = _prob_columns(df) if kind == "classification" else []
    if kind == "classification" and not probs:
        raise StatsInputError(f"task {task}: classification predictions have no prob_* columns")
    if kind == "survival":
        _check_columns(df, ["time", "event"], f"task {task} survival predictions")
    df = df.assign(session=df["session"].astype(str), subject=df["subject"].astype(str))
    items: pd.DataFrame | None = None
    block: _Block | None = None
    for (backbone, seed), run in df.groupby(["backbone", "seed"], sort=True):
        run = run.sort_values(_KEY, kind="mergesort")
        dup = run.duplicated(_KEY)
        if dup.any():
            first = run.loc[dup, _KEY].iloc[0].tolist()
            raise StatsInputError(f"task {task} ratio {ratio:g} backbone {backbone} seed {seed}: "
                                  f"{int(dup.sum())} duplicated test item(s), e.g. (fold, subject, session)={first}")
        keys = run[_KEY].reset_index(drop=True)
        if items is None:
            items = keys
            y = run["time" if kind == "survival" else "y_true"].to_numpy(np.float64)
            block = _Block(task=task, kind=kind, ratio=ratio, items=items, y=y,
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


# --------------------------------------------------------------------------------------------
# Main comparison table.
# --------------------------------------------------------------------------------------------

def _groups_if_repeated(subjects: np.ndarray) -> np.ndarray | None:
    return subjects if len(np.unique(subjects)) < len(subjects) else None


def _per_subject(values: np.ndarray, subjects: np.ndarray) -> np.ndarray:
    return pd.Series(values).groupby(subjects, sort=True).mean().to_numpy()


def _seed_sd(block: _Block, backbone: str, metric: str) -> float:
    if block.n_seeds(backbone) < 2:
        return float("nan")
    per_seed = []
    folds = block.items["fold"].to_numpy()
    for s in range(block.n_seeds(backbone)):
        sub = _Block(block.task, block.kind, block.ratio, block.items, block.y, block.event, block.age,
                     [backbone], {backbone: [block.preds[backbone][s]]}, {backbone: [block.labels[backbone][s]]})
        vals = [_point(sub.kernel(backbone, metric, np.flatnonzero(folds == f))) for f in np.unique(folds)]
        per_seed.append(np.mean(vals))
    return float(np.std(per_seed, ddof=1))


def _point(kern: Prepared) -> float:
    return float(kern(np.ones((1, kern.n)))[0])


def _row(block: _Block, metric: str, backbone: str, reference: str, **values: Any) -> dict[str, Any]:
    info = metric_info(metric)
    row = {
        "task": block.task, "kind": block.kind, "metric": metric, "ratio": block.ratio, "backbone": backbone,
        "reference": reference, "is_reference": backbone == reference, "n": len(block.items),
        "n_subjects": int(block.items["subject"].nunique()), "n_seeds": block.n_seeds(backbone),
        "n_folds": block.n_folds, "higher_is_better": info.higher_is_better,
        "delta": np.nan, "delta_ci_low": np.nan, "delta_ci_high": np.nan, "test": "", "p_value": np.nan,
        "p_adjusted": np.nan, "seed_sd": _seed_sd(block, backbone, metric),
    }
    row.update(values)
    return row


def _compare_single(block: _Block, metric: str, reference: str, n_boot: int, seed: int,
                    alpha: float) -> list[dict[str, Any]]:
    subjects = block.items["subject"].to_numpy()
    groups = _groups_if_repeated(subjects)
    kernels = [block.kernel(b, metric) for b in block.backbones]
    info = metric_info(metric)
    strata = kernels[0].strata if info.strata else None
    dist = bootstrap_distributions(kernels, n_boot, seed, strata=strata, groups=groups)
    points = [_point(k) for k in kernels]
    has_ref = reference in block.backbones
    r = block.backbones.index(reference) if has_ref else -1
    rows = []
    for j, backbone in enumerate(block.backbones):
        col = dist[:, j]
        lo, hi = percentile_ci(col, alpha)
        vals: dict[str, Any] = {"estimate": points[j], "sd": float(np.nanstd(col, ddof=1)), "sd_source": "bootstrap",
                                "ci_low": lo, "ci_high": hi, "ci_method": "percentile bootstrap"}
        if has_ref and j != r:
            if metric in ("mae", "mse"):
                ea = _per_subject(block.errors(backbone, metric), subjects)
                eb = _per_subject(block.errors(reference, metric), subjects)
                tt = paired_ttest(ea, eb, alpha)
                vals.update(delta=points[j] - points[r], delta_ci_low=tt.ci_low, delta_ci_high=tt.ci_high,
                            test="paired t-test (per-subject errors)", p_value=tt.p_value)
            else:
                d = col - dist[:, r]
                dlo, dhi = percentile_ci(d, alpha)
                vals.update(delta=points[j] - points[r], delta_ci_low=dlo, delta_ci_high=dhi,
                            test="paired bootstrap", p_value=bootstrap_p_value(d))
        rows.append(_row(block, metric, backbone, reference, **vals))
    return rows


def _compare_cv(block: _Block, metric: str, reference: str, alpha: float) -> list[dict[str, Any]]:
    folds = block.items["fold"].to_numpy()
    fold_ids = np.unique(folds)
    per_fold = {}
    for b in block.backbones:
        vals = np.array([_point(block.kernel(b, metric, np.flatnonzero(folds == f))) for f in fold_ids])
        if not np.all(np.isfinite(vals)):
            raise StatsInputError(f"task {block.task} ratio {block.ratio:g} backbone {b}: {metric} is undefined "
                                  "in at least one fold (e.g. a fold with a single class)")
        per_fold[b] = vals
    rows = []
    has_ref = reference in block.backbones
    for b in block.backbones:
        ti = t_interval(per_fold[b], alpha)
        vals: dict[str, Any] = {"estimate": ti.mean, "sd": ti.sd, "sd_source": "folds", "ci_low": ti.low,
                                "ci_high": ti.high, "ci_method": "Student t over folds"}
        if has_ref and b != reference:
            tt = paired_ttest(per_fold[b], per_fold[reference], alpha)
            vals.update(delta=tt.mean_diff, delta_ci_low=tt.ci_low, delta_ci_high=tt.ci_high,
                        test="paired t-test (folds)", p_value=tt.p_value)
        rows.append(_row(block, metric, b, reference, **vals))
    return rows


def _finish(rows: list[dict[str, Any]], adjust: str | None, family: Sequence[str]) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=COMPARISON_COLUMNS) if rows else pd.DataFrame(columns=COMPARISON_COLUMNS)
    if adjust not in (None, "holm"):
        raise StatsInputError(f"adjust must be None or 'holm', got {adjust!r}")
    if adjust == "holm" and len(out):
        for _, idx in out.groupby(list(family), sort=False).groups.items():
            out.loc[idx, "p_adjusted"] = holm(out.loc[idx, "p_value"].to_numpy(float))
    p = out["p_adjusted"].where(out["p_adjusted"].notna(), out["p_value"])
    out["stars"] = [stars(v) for v in p.to_numpy(float)]
    # reference first within each task x metric x ratio, then the other backbones by name
    out = out.assign(_ref=~out["is_reference"].astype(bool), _metric=out["metric"].map(metric_sort_key))
    out = out.sort_values(["task", "_metric", "ratio", "_ref", "backbone"], kind="mergesort")
    return out.drop(columns=["_ref", "_metric"]).reset_index(drop=True)


_REGION_ORDER = {"WT": 0, "TC": 1, "ET": 2}


def metric_sort_key(metric: str) -> str:
    """Sort key listing BraTS regions as the paper does (WT, TC, ET), other metrics by name."""
    if metric.startswith("dice_"):
        region = metric[5:]
        return f"dice_{_REGION_ORDER.get(region, 9)}_{region}"
    return metric


def compare_predictions(preds: pd.DataFrame, reference: str = DEFAULT_REFERENCE, *, n_boot: int = 2000,
                        seed: int = 42, alpha: float = 0.05, metrics: Sequence[str] | None = None,
                        adjust: str | None = None) -> pd.DataFrame:
    """Tidy comparison table: one row per task x ratio x metric x backbone (columns COMPARISON_COLUMNS).

    ``metrics`` overrides the per-kind default (e.g. ``["macro_auc", "balanced_accuracy"]``);
    metrics that do not fit a task's kind are skipped for that task.
    """
    _check_columns(preds, PREDICTION_COLUMNS, "predictions")
    check_n_boot(n_boot)
    if reference not in set(preds["backbone"].astype(str)):
        raise StatsInputError(f"reference backbone {reference!r} is not in the predictions "
                              f"(backbones: {sorted(preds['backbone'].astype(str).unique())})")
    rows: list[dict[str, Any]] = []
    groups = list(preds.groupby(["task", "ratio"], sort=True))
    for (task, ratio), block_df in tqdm(groups, desc="compare", disable=None, leave=False):
        block = _align(block_df, str(task), float(ratio))
        n_classes = len(_prob_columns(block_df)) if block.kind == "classification" else 0
        wanted = list(metrics) if metrics else default_metrics(block.kind, n_classes)
        for metric in wanted:
            if not _fits(metric, block.kind):
                continue
            if block.n_folds > 1:
                rows.extend(_compare_cv(block, metric, reference, alpha))
            else:
                rows.extend(_compare_single(block, metric, reference, n_boot, seed, alpha))
    return _finish(rows, adjust, ["task", "metric", "ratio"])


def _fits(metric: str, kind: str) -> bool:
    info = metric_info(metric)
    if kind == "classification":
        return info.name in ("auc", "macro_auc", "accuracy", "balanced_accuracy")
    if kind == "regression":
        return info.name in ("mae", "mse")
    return info.name == "cindex"


def compare_dice(frame: pd.DataFrame, reference: str = DEFAULT_REFERENCE, *, n_boot: int = 2000, seed: int = 42,
                 alpha: float = 0.05, adjust: str | None = None) -> pd.DataFrame:
    """Segmentation: mean per-case Dice per region (WT/TC/ET) with paired bootstrap vs the reference.

    ``frame`` columns: task, backbone, ratio, seed, subject, region, dice (one row per case and
    region). Metric names are ``dice_<region>``; seeds are averaged as in :func:`compare_predictions`.
    """
    _check_columns(frame, ["task", "backbone", "ratio", "seed", "subject", "region", "dice"], "Dice")
    check_n_boot(n_boot)
    rows: list[dict[str, Any]] = []
    for (task, region, ratio), df in frame.groupby(["task", "region", "ratio"], sort=True):
        df = df.assign(fold=0, session="0", kind="segmentation", y_true=0.0, y_pred=df["dice"].astype(float))
        block = _align(df, str(task), float(ratio))
        metric = f"dice_{region}"
        kernels = {b: _MeanOf([_WeightedMean(p) for p in block.preds[b]]) for b in block.backbones}
        block_rows = _compare_values(block, kernels, metric, reference, n_boot, seed, alpha)
        rows.extend(block_rows)
    return _finish(rows, adjust, ["task", "metric", "ratio"])


def _compare_values(block: _Block, kernels: dict[str, Prepared], metric: str, reference: str, n_boot: int,
                    seed: int, alpha: float) -> list[dict[str, Any]]:
    names = list(kernels)
    subjects = block.items["subject"].to_numpy()
    dist = bootstrap_distributions([kernels[b] for b in names], n_boot, seed, groups=_groups_if_repeated(subjects))
    rows = []
    for j, b in enumerate(names):
        lo, hi = percentile_ci(dist[:, j], alpha)
        est = _point(kernels[b])
        seeds = block.preds[b]
        seed_sd = float(np.std([p.mean() for p in seeds], ddof=1)) if len(seeds) > 1 else np.nan
        vals: dict[str, Any] = {"estimate": est, "sd": float(np.nanstd(dist[:, j], ddof=1)),
                                "sd_source": "bootstrap", "ci_low": lo, "ci_high": hi,
                                "ci_method": "percentile bootstrap", "seed_sd": seed_sd}
        if reference in kernels and b != reference:
            r = names.index(reference)
            d = dist[:, j] - dist[:, r]
            dlo, dhi = percentile_ci(d, alpha)
            vals.update(delta=est - _point(kernels[reference]), delta_ci_low=dlo, delta_ci_high=dhi,
                        test="paired bootstrap", p_value=bootstrap_p_value(d))
        info = metric_info(metric)
        rows.append({
            "task": block.task, "kind": block.kind, "metric": metric, "ratio": block.ratio, "backbone": b,
            "reference": reference, "is_reference": b == reference, "n": len(block.items),
            "n_subjects": int(block.items["subject"].nunique()), "n_seeds": len(seeds), "n_folds": 1,
            "higher_is_better": info.higher_is_better, "delta": np.nan, "delta_ci_low": np.nan,
            "delta_ci_high": np.nan, "test": "", "p_value": np.nan, "p_adjusted": np.nan, **vals,
        })
    return rows


# --------------------------------------------------------------------------------------------
# kNN table (accuracy per k, exact McNemar with Holm across k).
# --------------------------------------------------------------------------------------------

KNN_COLUMNS = ["task", "k", "backbone", "reference", "is_reference", "n", "accuracy", "sd", "ci_low", "ci_high",
               "b", "c", "p_value", "p_holm", "stars"]


def knn_table(knn: pd.DataFrame, reference: str = DEFAULT_REFERENCE, *, n_boot: int = 2000, seed: int = 42,
              alpha: float = 0.05) -> pd.DataFrame:
    """kNN accuracy per k with stratified bootstrap CI/sd, and exact McNemar vs the reference.

    ``knn`` columns: backbone, subject, y_true, k, y_pred, correct (+ optional task, session).
    McNemar p-values are Holm-adjusted across k within each task x backbone (paper §4.7).
    """
    _check_columns(knn, ["backbone", "subject", "y_true", "k", "correct"], "kNN")
    check_n_boot(n_boot)
    knn = knn.copy()
    if "task" not in knn.columns:
        knn["task"] = "knn"
    if "session" not in knn.columns:
        knn["session"] = "0"
    knn["subject"] = knn["subject"].astype(str)
    knn["session"] = knn["session"].astype(str)
    if reference not in set(knn["backbone"].astype(str)):
        raise StatsInputError(f"reference backbone {reference!r} is not in the kNN results")
    rows = []
    for (task, k), df in knn.groupby(["task", "k"], sort=True):
        runs = {}
        for b, run in df.groupby("backbone", sort=True):
            run = run.sort_values(["subject", "session"], kind="mergesort")
            if run.duplicated(["subject", "session"]).any():
                raise StatsInputError(f"kNN task {task} k={k} backbone {b}: duplicated queries")
            runs[str(b)] = run.reset_index(drop=True)
        names = list(runs)
        base = runs[names[0]][["subject", "session"]]
        for b in names[1:]:
            if not runs[b][["subject", "session"]].equals(base):
                raise StatsInputError(f"kNN task {task} k={k}: backbone {b} has different queries than {names[0]}")
        y = runs[names[0]]["y_true"].to_numpy(np.float64)
        kernels = [_WeightedMean(runs[b]["correct"].to_numpy(np.float64), strata=y) for b in names]
        dist = bootstrap_distributions(kernels, n_boot, seed, strata=y,
                                       groups=_groups_if_repeated(base["subject"].to_numpy()))
        for j, b in enumerate(names):
            lo, hi = percentile_ci(dist[:, j], alpha)
            row = {"task": task, "k": int(k), "backbone": b, "reference": reference, "is_reference": b == reference,
                   "n": len(y), "accuracy": _point(kernels[j]), "sd": float(np.std(dist[:, j], ddof=1)),
                   "ci_low": lo, "ci_high": hi, "b": np.nan, "c": np.nan, "p_value": np.nan}
            if b != reference and reference in runs:
                mc = mcnemar_exact(runs[b]["correct"], runs[reference]["correct"])
                row.update(b=mc.b, c=mc.c, p_value=mc.p_value)
            rows.append(row)
    out = pd.DataFrame(rows, columns=[c for c in KNN_COLUMNS if c not in ("p_holm", "stars")])
    out["p_holm"] = np.nan
    for _, idx in out.groupby(["task", "backbone"], sort=False).groups.items():
        out.loc[idx, "p_holm"] = holm(out.loc[idx, "p_value"].to_numpy(float))
    out["stars"] = [stars(p) for p in out["p_holm"].to_numpy(float)]
    return out[KNN_COLUMNS]


# --------------------------------------------------------------------------------------------
# Age strata.
# --------------------------------------------------------------------------------------------

def age_bin_labels(edges: Sequence[float]) -> list[str]:
    """Human labels of half-open age bins [lo, hi): integer edges give '55–64', open end '85+'."""
    labels = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        if math.isinf(hi):
            labels.append(f"{lo:g}+")
        elif float(lo).is_integer() and float(hi).is_integer():
            labels.append(f"{lo:g}–{hi - 1:g}")
        else:
            labels.append(f"[{lo:g}, {hi:g})")
    return labels


STRATA_COLUMNS = ["task", "kind", "metric", "ratio", "stratum", "age_low", "age_high", "backbone", "reference",
                  "is_reference", "n", "estimate", "sd", "ci_low", "ci_high", "delta", "test", "p_value", "p_holm",
                  "stars", "note"]


def age_strata_table(preds: pd.DataFrame, edges: Sequence[float] = ADNI_AGE_EDGES,
                     reference: str = DEFAULT_REFERENCE, *, labels: Sequence[str] | None = None,
                     ratio: float | None = None, n_boot: int = 2000, seed: int = 42, alpha: float = 0.05,
                     n_perm: int = 10000) -> pd.DataFrame:
    """Per age stratum metric and Holm-adjusted pairwise tests within each stratum (Fig. 3k/m).

    Test predictions are pooled over CV folds (each subject is tested once). Classification uses
    the (macro-)AUC with a paired bootstrap stratified by class; regression uses the MAE with a
    paired sign-flip test on per-subject absolute-error differences. ``ratio`` defaults to the
    largest ratio of each task (full supervision). Items without an age or outside the bins are
    left out. A stratum where the metric is undefined (one class) gets NaN and a ``note``.
    """
    _check_columns(preds, list(PREDICTION_COLUMNS) + ["age"], "predictions")
    edges = [float(e) for e in edges]
    if len(edges) < 2 or any(b <= a for a, b in zip(edges[:-1], edges[1:])):
        raise StatsInputError(f"age edges must be increasing with at least two values, got {edges}")
    labels = list(labels) if labels is not None else age_bin_labels(edges)
    if len(labels) != len(edges) - 1:
        raise StatsInputError(f"{len(labels)} labels for {len(edges) - 1} age bins")
    rows = []
    for task, tdf in preds.groupby("task", sort=True):
        r = float(tdf["ratio"].max()) if ratio is None else float(ratio)
        tdf = tdf[np.isclose(tdf["ratio"].astype(float), r)]
        if tdf.empty:
            continue
        block = _align(tdf, str(task), r)
        if block.kind not in ("classification", "regression"):
            continue
        metric = default_metrics(block.kind, len(_prob_columns(tdf)) if block.kind == "classification" else 0)[0]
        bins = pd.cut(block.age, bins=edges, right=False, labels=False)
        subjects = block.items["subject"].to_numpy()
        for s_idx, label in enumerate(labels):
            rows_s = np.flatnonzero(bins == s_idx)
            stratum_rows = _stratum_rows(block, metric, rows_s, subjects, reference, n_boot, seed, alpha, n_perm)
            for row in stratum_rows:
                row.update(task=task, kind=block.kind, metric=metric, ratio=r, stratum=label,
                           age_low=edges[s_idx], age_high=edges[s_idx + 1], reference=reference)
            rows.extend(stratum_rows)
    out = pd.DataFrame(rows, columns=STRATA_COLUMNS)
    if len(out):
        for _, idx in out.groupby(["task", "stratum"], sort=False).groups.items():
            out.loc[idx, "p_holm"] = holm(out.loc[idx, "p_value"].to_numpy(float))
    out["stars"] = [stars(p) for p in out["p_holm"].to_numpy(float)]
    return out


def _stratum_rows(block: _Block, metric: str, rows: np.ndarray, subjects: np.ndarray, reference: str,
                  n_boot: int, seed: int, alpha: float, n_perm: int) -> list[dict[str, Any]]:
    base = {"n": len(rows), "estimate": np.nan, "sd": np.nan, "ci_low": np.nan, "ci_high": np.nan, "delta": np.nan,
            "test": "", "p_value": np.nan, "p_holm": np.nan, "note": ""}
    out = [{**base, "backbone": b, "is_reference": b == reference} for b in block.backbones]
    if len(rows) == 0:
        for row in out:
            row["note"] = "empty stratum"
        return out
    try:
        kernels = [block.kernel(b, metric, rows) for b in block.backbones]
    except StatsInputError as exc:  # e.g. a stratum with a single diagnostic class
        for row in out:
            row["note"] = f"undefined: {exc}"
        return out
    subj = subjects[rows]
    info = metric_info(metric)
    dist = bootstrap_distributions(kernels, n_boot, seed, strata=kernels[0].strata if info.strata else None,
                                   groups=_groups_if_repeated(subj))
    points = [_point(k) for k in kernels]
    r = block.backbones.index(reference) if reference in block.backbones else -1
    for j, row in enumerate(out):
        lo, hi = percentile_ci(dist[:, j], alpha)
        row.update(estimate=points[j], sd=float(np.nanstd(dist[:, j], ddof=1)) if len(dist) > 1 else np.nan,
                   ci_low=lo, ci_high=hi)
        if r < 0 or j == r:
            continue
        row["delta"] = points[j] - points[r]
        if metric in ("mae", "mse"):
            ea = _per_subject(block.errors(block.backbones[j], metric, rows), subj)
            eb = _per_subject(block.errors(reference, metric, rows), subj)
            sf = sign_flip_test(ea - eb, n_perm=n_perm, seed=seed)
            row.update(test="sign-flip" + (" (exact)" if sf.exact else ""), p_value=sf.p_value)
        else:
            row.update(test="paired bootstrap", p_value=bootstrap_p_value(dist[:, j] - dist[:, r]))
    return out


# --------------------------------------------------------------------------------------------
# Kaplan-Meier risk stratification per run (Fig. 4).
# --------------------------------------------------------------------------------------------

KM_COLUMNS = ["task", "backbone", "ratio", "seed", "threshold", "threshold_source", "n_low", "n_high", "events_low",
              "events_high", "median_low", "median_high", "statistic", "p_value", "stars"]


def km_table(preds: pd.DataFrame, train_risk: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Kaplan-Meier stratification of every survival run at the median training risk.

    ``train_risk``: rows of training-set predicted risks with columns task, backbone, ratio, seed,
    risk (optional fold: thresholds per fold, groups pooled over folds). Without it the median of
    the *test* risks is used and ``threshold_source`` says so; the paper's protocol needs the
    training risks. Returns (stats, curves); curves have task, backbone, ratio, seed, group, time,
    survival, ci_low, ci_high, at_risk.
    """
    _check_columns(preds, list(PREDICTION_COLUMNS) + ["time", "event"], "survival predictions")
    surv = preds[preds["kind"] == "survival"]
    if surv.empty:
        raise StatsInputError("no survival predictions (kind == 'survival')")
    if train_risk is not None:
        _check_columns(train_risk, ["task", "backbone", "ratio", "seed", "risk"], "train_risk")
    stats_rows, curves = [], []
    for (task, backbone, ratio, seed), run in surv.groupby(["task", "backbone", "ratio", "seed"], sort=True):
        run = run.sort_values(_KEY, kind="mergesort")
        high = np.zeros(len(run), dtype=bool)
        thresholds = []
        source = "train"
        for fold, fr in run.groupby("fold", sort=True):
            pos = run.index.get_indexer(fr.index)
            if train_risk is not None:
                tr = train_risk[(train_risk["task"] == task) & (train_risk["backbone"] == backbone)
                                & np.isclose(train_risk["ratio"].astype(float), float(ratio))
                                & (train_risk["seed"] == seed)]
                if "fold" in tr.columns:
                    tr = tr[tr["fold"] == fold]
                if tr.empty:
                    raise StatsInputError(f"no training risks for task {task} backbone {backbone} ratio {ratio:g} "
                                          f"seed {seed} fold {fold}")
                thr = float(np.median(tr["risk"].to_numpy(float)))
            else:
                thr = float(np.median(fr["y_pred"].to_numpy(float)))
                source = "test (no training risks given)"
            thresholds.append(thr)
            high[pos] = fr["y_pred"].to_numpy(float) > thr
        res = km_groups(run["time"].to_numpy(float), run["event"].to_numpy(float), high,
                        thresholds[0] if len(thresholds) == 1 else float("nan"))
        stats_rows.append({"task": task, "backbone": backbone, "ratio": float(ratio), "seed": int(seed),
                           "threshold": res.threshold, "threshold_source": source, "n_low": res.n_low,
                           "n_high": res.n_high, "events_low": res.events_low, "events_high": res.events_high,
                           "median_low": res.median_low, "median_high": res.median_high,
                           "statistic": res.statistic, "p_value": res.p_value, "stars": stars(res.p_value)})
        curves.append(res.curves.assign(task=task, backbone=backbone, ratio=float(ratio), seed=int(seed)))
    curve_cols = ["task", "backbone", "ratio", "seed", "group", "time", "survival", "ci_low", "ci_high", "at_risk"]
    return pd.DataFrame(stats_rows, columns=KM_COLUMNS), pd.concat(curves, ignore_index=True)[curve_cols]
