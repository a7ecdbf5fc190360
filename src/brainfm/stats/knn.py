"""The kNN table (Fig. 6b left): accuracy per k with bootstrap CIs, exact McNemar with Holm across k.

Each backbone's queries are compared with the reference's on the same queries; McNemar p-values
form one Holm family per task x backbone (the paper's adjustment across neighbourhood sizes).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from brainfm.stats.bootstrap import bootstrap_distributions, percentile_ci
from brainfm.stats.hypothesis import holm_within, mcnemar_exact, stars
from brainfm.stats.kernels import WeightedMean
from brainfm.stats.predictions import DEFAULT_REFERENCE, check_columns, cluster_groups
from brainfm.stats.validate import StatsInputError, check_n_boot

__all__ = ["KNN_COLUMNS", "knn_table"]

KNN_COLUMNS = ["task", "k", "backbone", "reference", "is_reference", "n", "accuracy", "sd", "ci_low", "ci_high",
               "b", "c", "p_value", "p_holm", "stars", "majority_accuracy", "bank_majority_fraction",
               "bank_min_class_size", "k_reaches_min_class"]
#: memory-set columns of the kNN probe output (brainfm.analysis.knn.memory_summary); optional inputs
MEMORY_COLUMNS = ("majority_accuracy", "bank_majority_fraction", "bank_min_class_size")


def knn_table(knn: pd.DataFrame, reference: str = DEFAULT_REFERENCE, *, n_boot: int = 2000, seed: int = 42,
              alpha: float = 0.05) -> pd.DataFrame:
    """kNN accuracy per k with stratified bootstrap CI/sd, and exact McNemar vs the reference.

    ``knn`` columns: backbone, subject, y_true, k, y_pred, correct (+ optional task, session).
    McNemar p-values are Holm-adjusted across k within each task x backbone (paper §4.7).
    Beside each k the table carries the memory set's majority-class accuracy on the queries and its
    majority share, and ``k_reaches_min_class`` marks a k at or above the memory set's smallest
    class size (such a k can outvote that class everywhere; accuracy there tends to the majority's).
    """
    check_columns(knn, ["backbone", "subject", "y_true", "k", "correct"], "kNN")
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
        kernels = [WeightedMean(runs[b]["correct"].to_numpy(np.float64), strata=y) for b in names]
        dist = bootstrap_distributions(kernels, n_boot, seed, strata=y,
                                       groups=cluster_groups(base["subject"].to_numpy()))
        memory = {c: (float(df[c].iloc[0]) if c in df.columns else np.nan) for c in MEMORY_COLUMNS}
        memory["k_reaches_min_class"] = bool(np.isfinite(memory["bank_min_class_size"])
                                             and int(k) >= memory["bank_min_class_size"])
        for j, b in enumerate(names):
            lo, hi = percentile_ci(dist[:, j], alpha)
            row = {"task": task, "k": int(k), "backbone": b, "reference": reference, "is_reference": b == reference,
                   "n": len(y), "accuracy": kernels[j].point(), "sd": float(np.std(dist[:, j], ddof=1)),
                   "ci_low": lo, "ci_high": hi, "b": np.nan, "c": np.nan, "p_value": np.nan, **memory}
            if b != reference and reference in runs:
                mc = mcnemar_exact(runs[b]["correct"], runs[reference]["correct"])
                row.update(b=mc.b, c=mc.c, p_value=mc.p_value)
            rows.append(row)
    out = pd.DataFrame(rows, columns=[c for c in KNN_COLUMNS if c not in ("p_holm", "stars")])
    out["k_reaches_min_class"] = out["k_reaches_min_class"].astype(bool)
    out["p_holm"] = holm_within(out, ["task", "backbone"])
    out["stars"] = [stars(p) for p in out["p_holm"].to_numpy(float)]
    return out[KNN_COLUMNS]
