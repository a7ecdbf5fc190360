"""The age-strata table (Fig. 3k, 3m): the headline metric per age bin, Holm-adjusted within each bin.

The bins are the task's own (its ``strata`` edges in the config): nothing here assumes a cohort's
age range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from brainfm.stats.bootstrap import bootstrap_distributions, bootstrap_p_value, percentile_ci
from brainfm.stats.hypothesis import holm_within, sign_flip_test, stars
from brainfm.stats.metrics import metric_info
from brainfm.stats.predictions import (DEFAULT_REFERENCE, PREDICTION_COLUMNS, Block, align,
                                        check_columns, cluster_groups, default_metrics, prob_columns, subject_means)
from brainfm.stats.validate import StatsInputError

__all__ = ["STRATA_COLUMNS", "age_bin_labels", "age_strata_table"]

STRATA_COLUMNS = ["task", "kind", "metric", "ratio", "stratum", "age_low", "age_high", "backbone", "reference",
                  "is_reference", "n", "estimate", "sd", "ci_low", "ci_high", "delta", "test", "p_value", "p_holm",
                  "stars", "note"]


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


def age_strata_table(preds: pd.DataFrame, edges: Sequence[float] | None, reference: str = DEFAULT_REFERENCE, *,
                     labels: Sequence[str] | None = None, ratio: float | None = None, n_boot: int = 2000,
                     seed: int = 42, alpha: float = 0.05, n_perm: int = 10000) -> pd.DataFrame:
    """Per age stratum metric and Holm-adjusted pairwise tests within each stratum (Fig. 3k/m).

    ``edges`` are the bin edges of the task's ``strata`` config (half-open bins [lo, hi); ``inf``
    closes the last one). Test predictions are pooled over CV folds (each subject is tested once).
    Classification uses the (macro-)AUC with a paired bootstrap stratified by class; regression
    uses the MAE with a paired sign-flip test on per-subject absolute-error differences.
    ``ratio`` defaults to the largest ratio of each task (full supervision). Items without an age
    or outside the bins are left out. A stratum where the metric is undefined (one class) gets
    NaN and a ``note``.
    """
    if not edges:
        raise StatsInputError("age strata need bin edges (the task's 'strata: {column, edges}' config); none given")
    check_columns(preds, list(PREDICTION_COLUMNS) + ["age"], "predictions")
    edges = [_edge(e) for e in edges]
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
        block = align(tdf, str(task), r)
        if block.kind not in ("classification", "regression"):
            continue
        metric = default_metrics(block.kind, len(prob_columns(tdf)) if block.kind == "classification" else 0)[0]
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
        out["p_holm"] = holm_within(out, ["task", "stratum"])
    out["stars"] = [stars(p) for p in out["p_holm"].to_numpy(float)]
    return out


def _edge(value: Any) -> float:
    """A bin edge as a float; YAML's '.inf' (or 'inf') written as a string closes the last bin."""
    if isinstance(value, str) and value.strip().lower() in ("inf", ".inf", "+inf", "+.inf"):
        return math.inf
    try:
        return float(value)
    except (TypeError, ValueError):
        raise StatsInputError(f"age edge {value!r} is not a number") from None


def _stratum_rows(block: Block, metric: str, rows: np.ndarray, subjects: np.ndarray, reference: str,
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
                                   groups=cluster_groups(subj))
    points = [k.point() for k in kernels]
    r = block.backbones.index(reference) if reference in block.backbones else -1
    for j, row in enumerate(out):
        lo, hi = percentile_ci(dist[:, j], alpha)
        row.update(estimate=points[j], sd=float(np.nanstd(dist[:, j], ddof=1)) if len(dist) > 1 else np.nan,
                   ci_low=lo, ci_high=hi)
        if r < 0 or j == r:
            continue
        row["delta"] = points[j] - points[r]
        if metric in ("mae", "mse"):
            ea = subject_means(block.errors(block.backbones[j], metric, rows), subj)
            eb = subject_means(block.errors(reference, metric, rows), subj)
            sf = sign_flip_test(ea - eb, n_perm=n_perm, seed=seed)
            row.update(test="sign-flip" + (" (exact)" if sf.exact else ""), p_value=sf.p_value)
        else:
            row.update(test="paired bootstrap", p_value=bootstrap_p_value(dist[:, j] - dist[:, r]))
    return out
