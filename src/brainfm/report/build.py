"""The report steps that compute nothing new: the headline table, the CKA figure, the composite Fig. 3.

Both read tidy frames written by earlier steps (the statistics runners of
:mod:`brainfm.stats.runners`, the CKA step of :mod:`brainfm.analysis.cka`) and only format them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from brainfm.atomic import write_text
from brainfm.report import figures, tables

__all__ = ["summary_table", "cka_figure", "FIG3_PANELS", "composite_panels", "composite_figure"]

#: Paper Fig. 3 panels b-l drawn from the per-task comparisons, by task name of the paper config.
#: Panels k and m (age strata) stay in the strata figures; the 3-class ADNI task is Supp. Table 8.
FIG3_PANELS: dict[str, str] = {
    "adni_cn_ad": "b", "adni_cn_mci": "c", "abide": "d", "ppmi": "e", "idh": "f", "survival_1y": "g",
    "sequence": "h", "oasis": "i", "brain_age": "j", "atlas_dps": "l",
}


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


def composite_panels(tidy: pd.DataFrame, descriptions: Mapping[str, str] | None = None
                     ) -> tuple[list[tuple[str, str]], dict[tuple[str, str], str]]:
    """The (task, headline metric) panels of Fig. 3 in the paper's order, and their lettered titles.

    Tasks of :data:`FIG3_PANELS` come in the paper's order; a run with none of them shows all its tasks.
    """
    tasks = list(dict.fromkeys(tidy["task"]))
    chosen = sorted((t for t in tasks if t in FIG3_PANELS), key=lambda t: FIG3_PANELS[t]) or tasks
    panels, titles = [], {}
    for t in chosen:
        metric = str(tidy.loc[tidy["task"] == t, "metric"].iloc[0])  # the first (headline) metric of the task
        panels.append((t, metric))
        letter = FIG3_PANELS.get(t)
        title = (descriptions or {}).get(t) or t
        titles[(t, metric)] = f"({letter}) {title}" if letter else title
    return panels, titles


def composite_figure(comparison_files: Sequence[str | Path], figure_path: str | Path, *, reference: str,
                     labels: Mapping[str, str] | None = None, descriptions: Mapping[str, str] | None = None,
                     ncols: int = 4) -> Path:
    """The ``composite_figure`` step: Fig. 3 as one figure (see :func:`composite_panels`)."""
    tidy = pd.concat([pd.read_parquet(f) for f in comparison_files], ignore_index=True)
    panels, titles = composite_panels(tidy, descriptions)
    figures.metric_vs_ratio(tidy, figure_path, reference=reference, panels=panels, titles=titles, ncols=ncols,
                            labels=labels, suptitle="Fig. 3: downstream tasks")
    return Path(figure_path)
