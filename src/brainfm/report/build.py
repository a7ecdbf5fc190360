"""The report steps that compute nothing new: the headline table, the CKA figure, the composite Fig. 3.

Both read tidy frames written by earlier steps (the statistics runners of
:mod:`brainfm.stats.runners`, the CKA step of :mod:`brainfm.analysis.cka`) and only format them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainfm.atomic import write_text
from brainfm.frames import read_frame, read_frames
from brainfm.report import figures, tables
from brainfm.report.style import display_name, is_reference, order_backbones, ratio_label
from brainfm.tasks.runs import untrained_cells

__all__ = ["summary_table", "cka_figure", "FIG3_PANELS", "composite_panels", "composite_figure", "advantage",
           "advantage_tally"]

#: Paper Fig. 3 panels b-l drawn from the per-task comparisons, by task name of the paper config.
#: Panels k and m (age strata) stay in the strata figures; the 3-class ADNI task is Supp. Table 8.
FIG3_PANELS: dict[str, str] = {
    "adni_cn_ad": "b", "adni_cn_mci": "c", "abide": "d", "ppmi": "e", "idh": "f", "survival_1y": "g",
    "sequence": "h", "oasis": "i", "brain_age": "j", "atlas_dps": "l",
}


def advantage(tidy: pd.DataFrame, backbone: str, control: str, ratio: float | None = None) -> pd.DataFrame:
    """``backbone``'s advantage over ``control`` per task x metric at ``ratio``, in the better direction.

    ``ratio`` None: each task's smallest label ratio (the paper's 10%), where pretraining should help most.

    Reuses a comparison step's paired interval of ``control - backbone`` (rows of ``control``
    compared with ``backbone`` as the reference: ``delta`` and ``delta_ci_*`` of
    :func:`brainfm.stats.comparison.compare_predictions` / ``compare_controls``: paired bootstrap
    over test subjects with the seeds evaluated on each resample, a paired t-test on per-subject
    errors for MAE, Student t over folds for CV tasks), flipped so that a positive advantage is
    better for ``backbone``. ``verdict`` says "ahead" only when the whole interval is above zero.
    """
    cols = ["task", "metric", "ratio", "advantage", "low", "high", "interval", "verdict"]
    sel = tidy[(tidy["backbone"].astype(str) == control) & (tidy["reference"].astype(str) == backbone)]
    if ratio is None:
        sel = sel[sel["ratio"].astype(float) == sel.groupby("task")["ratio"].transform("min").astype(float)]
    else:
        sel = sel[np.isclose(sel["ratio"].astype(float), ratio)]
    rows = []
    for r in sel.itertuples():
        sign = -1.0 if bool(r.higher_is_better) else 1.0
        adv = sign * float(r.delta)
        lo, hi = sorted((sign * float(r.delta_ci_low), sign * float(r.delta_ci_high)))
        if not np.isfinite(adv):
            verdict = "no paired comparison"
        elif np.isfinite(lo) and lo > 0:
            verdict = "ahead"
        elif np.isfinite(hi) and hi < 0:
            verdict = "behind"
        else:
            verdict = "not ahead (interval includes 0)" if adv > 0 else "not ahead"
        rows.append({"task": r.task, "metric": r.metric, "ratio": float(r.ratio), "advantage": adv, "low": lo,
                     "high": hi, "interval": str(r.test), "verdict": verdict})
    return pd.DataFrame(rows, columns=cols)


def _format_advantage(metric: str, a: Mapping[str, Any]) -> str:
    d = 3 if metric not in ("mae", "mse") else 2
    if not np.isfinite(a["advantage"]):
        return tables.MISSING
    ci = f" [{a['low']:+.{d}f}, {a['high']:+.{d}f}]" if np.isfinite(a["low"]) and np.isfinite(a["high"]) else ""
    return f"{a['advantage']:+.{d}f}{ci}: {a['verdict']}"


def _control_cells(frames: Sequence[pd.DataFrame], controls: Mapping[str, str],
                   labels: Mapping[str, str] | None,
                   untrained: Set[tuple[str, str, float]] = frozenset()
                   ) -> dict[tuple[str, str, str], tuple[str, str]]:
    """(task, metric, backbone) -> ("vs <control> at <ratio>: advantage [interval]: verdict", verdict).

    ``frames`` are comparison tables; a pair compared in more than one (a task's controls table
    repeats its main comparison's reference pair) counts once. A cell ends with
    :data:`~brainfm.report.tables.FIRST_EPOCH_MARK` when either side's heads at that ratio are in
    ``untrained`` (:func:`brainfm.tasks.runs.untrained_cells`).
    """
    cells: dict[tuple[str, str, str], tuple[str, str]] = {}
    tidy = pd.concat(frames, ignore_index=True) if frames and controls else pd.DataFrame()
    if tidy.empty:
        return cells
    tidy = tidy.drop_duplicates(["task", "metric", "ratio", "backbone", "reference"])
    for b, c in controls.items():
        for a in advantage(tidy, b, c).to_dict("records"):
            stuck = any((a["task"], x, round(a["ratio"], 6)) in untrained for x in (b, c))
            text = (f"vs {display_name(c, labels)} at {ratio_label(a['ratio'])}: {_format_advantage(a['metric'], a)}"
                    + (tables.FIRST_EPOCH_MARK if stuck else ""))
            cells[(a["task"], a["metric"], b)] = (text, a["verdict"])
    return cells


def advantage_tally(verdicts: Mapping[str, Sequence[str]], controls: Mapping[str, str],
                    labels: Mapping[str, str] | None = None) -> str:
    """One sentence per pretrained backbone: on how many of its comparisons it is ahead of its control.

    ``verdicts``: backbone -> the :func:`advantage` verdicts of the comparisons the summary shows.
    Whether pretraining helped is the question a reader brings to the summary; the count answers it
    without reading every row.
    """
    parts = []
    for b, found in verdicts.items():
        found = [v for v in found if v != "no paired comparison"]
        if not found:
            continue
        ahead, behind = found.count("ahead"), found.count("behind")
        parts.append(f"{display_name(b, labels)} is ahead of {display_name(controls[b], labels)} on {ahead} of "
                     f"{len(found)} comparisons, behind on {behind}, and neither ahead nor behind on "
                     f"{len(found) - ahead - behind}")
    return ("At the fewest labels, " + "; ".join(parts) + ".") if parts else ""


def summary_table(comparison_files: Sequence[str | Path], knn_files: Sequence[str | Path],
                  out_path: str | Path, *, reference: str, labels: Mapping[str, str] | None = None,
                  control_files: Sequence[str | Path] = (), controls: Mapping[str, str] | None = None,
                  training_n_files: Sequence[str | Path] = ()) -> Path:
    """One row per task x backbone at full supervision: the headline numbers of the run.

    Reference rows (prior, image statistics, oracle) come after the encoders of each task, so a
    reader sees what chance, a crude baseline and (on phantom data) the ground truth achieve. Each
    pretrained backbone with a random-initialisation control (``controls``, compared in
    ``control_files`` by the statistics step) also states its advantage over that control at the
    task's fewest labels (10% in the paper's grid) with its paired interval, and says plainly where
    it is not ahead; ``training_n_files`` (the statistics step's ``training_n.parquet``) mark the
    comparisons where at least half of either side's heads kept their first epoch.
    """
    controls = dict(controls or {})
    adv_col = "advantage over own random init at the fewest labels"
    comparisons = [read_frame(f, "comparison table") for f in comparison_files]
    # a task without a controls table (segmentation) still has its reference's pair in the main comparison
    untrained = set().union(*(untrained_cells(read_frame(f, "training-n table")) for f in training_n_files))
    cells = _control_cells([read_frame(f, "random-init control comparison") for f in control_files] + comparisons,
                           controls, labels, untrained)
    rows, verdicts = [], {b: [] for b in controls}
    for tidy in comparisons:
        top = tidy[tidy["ratio"] == tidy["ratio"].max()]
        for (task, metric), grp in top.groupby(["task", "metric"], sort=False):
            for b in order_backbones(grp["backbone"], reference):
                r = grp[grp["backbone"] == b].iloc[0]
                cell = ""
                if b in controls:
                    cell, verdict = cells.get((task, metric, b), (f"no paired {display_name(controls[b], labels)} "
                                                                  "runs", "no paired comparison"))
                    verdicts[b].append(verdict)
                rows.append({"task": task, "metric": metric, "backbone": b,
                             "estimate": tables.format_estimate(metric, r.estimate, r.sd, r.ci_low, r.ci_high),
                             "p vs " + reference: tables.format_p(r.p_value), adv_col: cell})
    for f in knn_files:
        knn = read_frame(f, "kNN table")
        top = knn[knn["k"] == knn["k"].max()]
        for task, grp in top.groupby("task", sort=False):
            k = int(grp["k"].iloc[0])
            mark = tables.KNN_MIN_CLASS_MARK if bool(grp.get("k_reaches_min_class", pd.Series([False])).iloc[0]) else ""
            for b in order_backbones(grp["backbone"], reference):
                r = grp[grp["backbone"] == b].iloc[0]
                rows.append({"task": task, "metric": f"knn_accuracy@k={k}", "backbone": b,
                             "estimate": tables.format_estimate("accuracy", r.accuracy, r.sd, r.ci_low, r.ci_high)
                             + mark, "p vs " + reference: tables.format_p(r.p_holm), adv_col: ""})
            if "majority_accuracy" in grp.columns:
                rows.append({"task": task, "metric": f"knn_accuracy@k={k}", "backbone": tables.KNN_MAJORITY_ROW,
                             "estimate": tables.format_number(float(grp["majority_accuracy"].iloc[0]), 3),
                             "p vs " + reference: tables.MISSING, adv_col: ""})
    df = pd.DataFrame(rows)
    if len(df):
        # configured labels as given; reference rows always say that they are references
        df["backbone"] = df["backbone"].map(
            lambda b: display_name(b, labels) if is_reference(b) else (labels or {}).get(b, b))
    tally = advantage_tally(verdicts, controls, labels)
    pairs = "; ".join(f"{display_name(b, labels)} vs {display_name(c, labels)}" for b, c in controls.items())
    caption = ("Headline results at full supervision; rows marked reference are not encoders (prior: training "
               "class frequencies / mean; image statistics; on phantom data the generator's ground truth as an upper "
               "reference). Last column: each pretrained backbone's advantage over the same architecture at random "
               f"initialisation ({pairs or 'no controls configured: stats.controls'}) at the task's smallest label "
               "ratio (positive = better) with its paired 95% interval; 'ahead' only when the interval excludes 0. "
               "The interval covers the test subjects and head seeds (folds for cross-validated tasks), not a "
               "repeat of the pretraining run."
               + (f" {tally}" if tally else "")
               + tables.KNN_MIN_CLASS_MARK
               + ": k reaches the smallest class of the kNN memory set.")
    if any(str(c).endswith(tables.FIRST_EPOCH_MARK) for c in df.get(adv_col, [])):
        caption += (f"{tables.FIRST_EPOCH_MARK}: at that ratio at least half of the heads of the backbone or of its "
                    "control kept their first epoch's weights (see the task's table): a comparison with barely trained "
                    "heads.")
    tables.write_table(df, out_path, caption=caption, label="tab:summary")
    write_text(Path(out_path).with_suffix(".json"), df.to_json(orient="records", indent=1))
    return Path(out_path)


def cka_figure(cka_files: Sequence[str | Path], figure_path: str | Path, *, reference: str,
               labels: Mapping[str, str] | None = None) -> Path:
    """CKA heatmaps of the reference against every other backbone, one panel per cohort (Fig. 6b right)."""
    frames = []
    for f in cka_files:
        df = read_frame(f, "CKA table")
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
    tidy = read_frames(comparison_files, "comparison table")
    panels, titles = composite_panels(tidy, descriptions)
    figures.metric_vs_ratio(tidy, figure_path, reference=reference, panels=panels, titles=titles, ncols=ncols,
                            labels=labels, suptitle="Fig. 3: downstream tasks")
    return Path(figure_path)
