"""The main comparison table: every backbone against the reference per task x ratio (paper §4.7).

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
- Holm adjustment is applied where the paper applies it (kNN across k, age strata: their own
  modules); here ``adjust="holm"`` optionally adjusts across backbones within a task x ratio.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from brainfm.stats.bootstrap import bootstrap_distributions, bootstrap_p_value, percentile_ci
from brainfm.stats.hypothesis import holm_within, paired_ttest, stars, t_interval
from brainfm.stats.kernels import MeanOf, Prepared, WeightedMean
from brainfm.stats.metrics import metric_info
from brainfm.stats.predictions import (DEFAULT_REFERENCE, PREDICTION_COLUMNS, Block, align,
                                        check_columns, cluster_groups, default_metrics, prob_columns, subject_means)
from brainfm.stats.validate import StatsInputError, check_n_boot

__all__ = ["COMPARISON_COLUMNS", "metric_sort_key", "compare_predictions", "compare_controls", "compare_dice"]

COMPARISON_COLUMNS = [
    "task", "kind", "metric", "ratio", "backbone", "reference", "is_reference", "n", "n_subjects", "n_seeds",
    "n_folds", "estimate", "sd", "sd_source", "ci_low", "ci_high", "ci_method", "seed_sd", "delta",
    "delta_ci_low", "delta_ci_high", "test", "p_value", "p_adjusted", "stars", "higher_is_better",
]


def _seed_sd(block: Block, backbone: str, metric: str) -> float:
    if block.n_seeds(backbone) < 2:
        return float("nan")
    per_seed = [np.mean(block.seed_only(backbone, s).fold_values(backbone, metric))
                for s in range(block.n_seeds(backbone))]
    return float(np.std(per_seed, ddof=1))


def _row(block: Block, metric: str, backbone: str, reference: str, **values: Any) -> dict[str, Any]:
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


def _compare_single(block: Block, metric: str, reference: str, n_boot: int, seed: int,
                    alpha: float) -> list[dict[str, Any]]:
    subjects = block.items["subject"].to_numpy()
    groups = cluster_groups(subjects)
    kernels = [block.kernel(b, metric) for b in block.backbones]
    info = metric_info(metric)
    strata = kernels[0].strata if info.strata else None
    dist = bootstrap_distributions(kernels, n_boot, seed, strata=strata, groups=groups)
    points = [k.point() for k in kernels]
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
                ea = subject_means(block.errors(backbone, metric), subjects)
                eb = subject_means(block.errors(reference, metric), subjects)
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


def _compare_cv(block: Block, metric: str, reference: str, alpha: float) -> list[dict[str, Any]]:
    per_fold = {}
    for b in block.backbones:
        vals = block.fold_values(b, metric)
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
        out["p_adjusted"] = holm_within(out, list(family))
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
    check_columns(preds, PREDICTION_COLUMNS, "predictions")
    check_n_boot(n_boot)
    if reference not in set(preds["backbone"].astype(str)):
        raise StatsInputError(f"reference backbone {reference!r} is not in the predictions "
                              f"(backbones: {sorted(preds['backbone'].astype(str).unique())})")
    rows: list[dict[str, Any]] = []
    groups = list(preds.groupby(["task", "ratio"], sort=True))
    for (task, ratio), block_df in tqdm(groups, desc="compare", disable=None, leave=False):
        block = align(block_df, str(task), float(ratio))
        n_classes = len(prob_columns(block_df)) if block.kind == "classification" else 0
        wanted = list(metrics) if metrics else default_metrics(block.kind, n_classes)
        for metric in wanted:
            if not _fits(metric, block.kind):
                continue
            if block.n_folds > 1:
                rows.extend(_compare_cv(block, metric, reference, alpha))
            else:
                rows.extend(_compare_single(block, metric, reference, n_boot, seed, alpha))
    return _finish(rows, adjust, ["task", "metric", "ratio"])


def compare_controls(preds: pd.DataFrame, controls: Mapping[str, str], *, n_boot: int = 2000, seed: int = 42,
                     alpha: float = 0.05, metrics: Sequence[str] | None = None,
                     comparison: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each pretrained backbone against its own random-initialisation control (``controls``: backbone -> control).

    One :func:`compare_predictions` per pair, with the pretrained backbone as the reference, so the
    rows (COMPARISON_COLUMNS) are the controls' and their ``delta`` is ``control - pretrained``
    with the same paired interval and test as the main table. Pairs with a side missing from the
    predictions are skipped (a task that runs on part of the backbones). ``comparison``, the main
    table of the same predictions and settings, already holds the pair of its own reference: those
    rows are taken from it (a backbone's paired test against the reference does not depend on the
    other backbones compared beside it).
    """
    present = set(preds["backbone"].astype(str))
    frames = []
    for b, c in controls.items():
        if b not in present or c not in present:
            continue
        if comparison is not None and (comparison["reference"].astype(str) == b).all():
            frames.append(comparison[comparison["backbone"].astype(str) == c])
            continue
        pair = compare_predictions(preds[preds["backbone"].astype(str).isin([b, c])], b, n_boot=n_boot,
                                   seed=seed, alpha=alpha, metrics=metrics)
        frames.append(pair[pair["backbone"].astype(str) == c])
    if not frames:
        return pd.DataFrame(columns=COMPARISON_COLUMNS)
    return pd.concat(frames, ignore_index=True)


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
    check_columns(frame, ["task", "backbone", "ratio", "seed", "subject", "region", "dice"], "Dice")
    check_n_boot(n_boot)
    rows: list[dict[str, Any]] = []
    for (task, region, ratio), df in frame.groupby(["task", "region", "ratio"], sort=True):
        df = df.assign(fold=0, session="0", kind="segmentation", y_true=0.0, y_pred=df["dice"].astype(float))
        block = align(df, str(task), float(ratio))
        metric = f"dice_{region}"
        kernels = {b: MeanOf([WeightedMean(p) for p in block.preds[b]]) for b in block.backbones}
        block_rows = _compare_values(block, kernels, metric, reference, n_boot, seed, alpha)
        rows.extend(block_rows)
    return _finish(rows, adjust, ["task", "metric", "ratio"])


def _compare_values(block: Block, kernels: dict[str, Prepared], metric: str, reference: str, n_boot: int,
                    seed: int, alpha: float) -> list[dict[str, Any]]:
    names = list(kernels)
    subjects = block.items["subject"].to_numpy()
    dist = bootstrap_distributions([kernels[b] for b in names], n_boot, seed, groups=cluster_groups(subjects))
    rows = []
    for j, b in enumerate(names):
        lo, hi = percentile_ci(dist[:, j], alpha)
        est = kernels[b].point()
        seeds = block.preds[b]
        seed_sd = float(np.std([p.mean() for p in seeds], ddof=1)) if len(seeds) > 1 else np.nan
        vals: dict[str, Any] = {"estimate": est, "sd": float(np.nanstd(dist[:, j], ddof=1)),
                                "sd_source": "bootstrap", "ci_low": lo, "ci_high": hi,
                                "ci_method": "percentile bootstrap", "seed_sd": seed_sd}
        if reference in kernels and b != reference:
            r = names.index(reference)
            d = dist[:, j] - dist[:, r]
            dlo, dhi = percentile_ci(d, alpha)
            vals.update(delta=est - kernels[reference].point(), delta_ci_low=dlo, delta_ci_high=dhi,
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
