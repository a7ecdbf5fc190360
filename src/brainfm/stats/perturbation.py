"""Pairwise tests against the reference at each perturbation severity (Supp. Table 18).

Input is the per-item prediction frame written by ``evaluate_perturbed`` beside its scores: one
row per test item, backbone and (perturbation, severity), seeds already averaged and CV folds
pooled (each scan is tested once), in the predictions contract of
:mod:`brainfm.stats.predictions` plus ``perturbation`` and ``severity`` columns. Each setting is
one comparison block, tested with the task's own procedure (:func:`compare_predictions`):

- classification / survival: paired bootstrap of the test set (stratified as the task's table);
- regression: paired t-test on per-subject absolute errors;
- repeated visits (ADNI): the bootstrap resamples subjects, not visits, and the t-test uses each
  subject's mean error, so a subject with many visits counts once.

The paper does not say it corrects across severities, so p-values are raw by default;
``adjust="holm"`` adjusts across backbones within each setting (the table family of the paper's
main comparisons), never across severities.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from brainfm.stats.comparison import COMPARISON_COLUMNS, compare_predictions
from brainfm.stats.predictions import PREDICTION_COLUMNS, check_columns
from brainfm.stats.validate import StatsInputError

__all__ = ["PERTURBATION_COMPARISON_COLUMNS", "perturbation_comparison"]

PERTURBATION_COMPARISON_COLUMNS = ["perturbation", "severity", *COMPARISON_COLUMNS]


def perturbation_comparison(preds: pd.DataFrame, reference: str, *, n_boot: int = 2000, seed: int = 42,
                            alpha: float = 0.05, adjust: str | None = None) -> pd.DataFrame:
    """Every backbone vs ``reference`` per task x perturbation x severity (columns PERTURBATION_COMPARISON_COLUMNS).

    A setting the reference was not evaluated on has nothing to be compared with and is left out.
    """
    check_columns(preds, [*PREDICTION_COLUMNS, "perturbation", "severity"], "perturbed predictions")
    if preds.empty:
        raise StatsInputError("no perturbed predictions")
    parts = []
    for (task, pert, sev), block in preds.groupby(["task", "perturbation", "severity"], sort=True):
        if reference not in set(block["backbone"].astype(str)):
            continue
        block = block.drop(columns=["perturbation", "severity"]).assign(ratio=1.0)
        tidy = compare_predictions(block, reference, n_boot=n_boot, seed=seed, alpha=alpha, adjust=adjust)
        tidy.insert(0, "severity", float(sev))
        tidy.insert(0, "perturbation", str(pert))
        parts.append(tidy)
    if not parts:
        return pd.DataFrame(columns=PERTURBATION_COMPARISON_COLUMNS)
    out = pd.concat(parts, ignore_index=True)
    out["severity"] = out["severity"].astype(np.float64)
    return out[PERTURBATION_COMPARISON_COLUMNS]
