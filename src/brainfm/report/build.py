"""The report steps that compute nothing new: the headline table and the CKA figure.

Both read tidy frames written by earlier steps (the statistics runners of
:mod:`brainfm.stats.runners`, the CKA step of :mod:`brainfm.analysis.cka`) and only format them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from brainfm.atomic import write_text
from brainfm.report import figures, tables

__all__ = ["summary_table", "cka_figure"]


def summary_table(comparison_files: Sequence[str | Path], knn_files: Sequence[str | Path],
                  out_path: str | Path, *, reference: str, labels: Mapping[str, str] | None = None) -> Path:
    """One row per task x backbone at full supervision: the headline numbers of the run."""
    rows = []
    for f in comparison_files:
        tidy = pd.read_parquet(f)
        top = tidy[tidy["ratio"] == tidy["ratio"].max()]
        for r in top.itertuples():
            rows.append({"task": r.task, "metric": r.metric, "backbone": r.backbone,
                         "estimate": tables.format_estimate(r.metric, r.estimate, r.sd, r.ci_low, r.ci_high),
                         "p vs " + reference: tables.format_p(r.p_value)})
    for f in knn_files:
        knn = pd.read_parquet(f)
        top = knn[knn["k"] == knn["k"].max()]
        for r in top.itertuples():
            rows.append({"task": r.task, "metric": f"knn_accuracy@k={r.k}", "backbone": r.backbone,
                         "estimate": tables.format_estimate("accuracy", r.accuracy, r.sd, r.ci_low, r.ci_high),
                         "p vs " + reference: tables.format_p(r.p_holm)})
    df = pd.DataFrame(rows)
    if labels:
        df["backbone"] = df["backbone"].map(lambda b: labels.get(b, b))
    tables.write_table(df, out_path, caption="Headline results at full supervision", label="tab:summary")
    write_text(Path(out_path).with_suffix(".json"), df.to_json(orient="records", indent=1))
    return Path(out_path)


def cka_figure(cka_files: Sequence[str | Path], figure_path: str | Path, *, reference: str,
               labels: Mapping[str, str] | None = None) -> Path:
    """CKA heatmaps of the reference against every other backbone, one panel per cohort (Fig. 6b right)."""
    frames = []
    for f in cka_files:
        df = pd.read_parquet(f)
        df["cohort"] = Path(f).stem.removeprefix("cka_")
        frames.append(df)
    cka = pd.concat(frames, ignore_index=True)
    figures.cka_heatmap(cka, figure_path, reference=reference, cohort_col="cohort", labels=labels)
    return Path(figure_path)
