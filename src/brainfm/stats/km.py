"""Kaplan-Meier risk stratification of every survival run (Fig. 4): median-risk split, log-rank test.

The split is the median *training* risk of the run's heads (paper §2.4), per fold when the run has
several, with the test subjects pooled over folds for the curves and the test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from brainfm.stats.hypothesis import stars
from brainfm.stats.predictions import ITEM_KEY, PREDICTION_COLUMNS, check_columns
from brainfm.stats.survival import km_groups
from brainfm.stats.validate import StatsInputError

__all__ = ["KM_COLUMNS", "km_table"]

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
    check_columns(preds, list(PREDICTION_COLUMNS) + ["time", "event"], "survival predictions")
    surv = preds[preds["kind"] == "survival"]
    if surv.empty:
        raise StatsInputError("no survival predictions (kind == 'survival')")
    if train_risk is not None:
        check_columns(train_risk, ["task", "backbone", "ratio", "seed", "risk"], "train_risk")
    stats_rows, curves = [], []
    for (task, backbone, ratio, seed), run in surv.groupby(["task", "backbone", "ratio", "seed"], sort=True):
        run = run.sort_values(ITEM_KEY, kind="mergesort")
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
