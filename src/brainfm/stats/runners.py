"""The statistics steps of the workflow: run outputs in, tidy statistics, tables and figures out.

One function per step, named as the step (workflow rule and ``brainfm`` subcommand):

=====================  =====================================================================
step                   what it computes (module)
=====================  =====================================================================
``task_stats``         every backbone vs the reference per ratio, each pretrained backbone vs its
                       random-init control (:mod:`~brainfm.stats.comparison`)
``knn_stats``          kNN accuracy per k, McNemar with Holm across k (:mod:`~brainfm.stats.knn`)
``strata_stats``       age strata at full supervision (:mod:`~brainfm.stats.strata`)
``km_stats``           Kaplan-Meier risk groups, log-rank test (:mod:`~brainfm.stats.km`)
``finetune_table``     frozen vs fine-tuned encoder, paired tests (:mod:`~brainfm.stats.comparison`)
``perturbation_stats`` metric by perturbation severity (scored by :mod:`brainfm.tasks.perturbation`),
                       tests vs the reference per severity (:mod:`~brainfm.stats.perturbation`)
``segmentation_stats`` Dice per benchmark x region vs the reference (:mod:`~brainfm.stats.segmentation`)
=====================  =====================================================================

They take plain arguments (paths and the few task fields they need), read runs through
:mod:`brainfm.tasks.runs`, write the tidy frame as parquet and hand the formatting to
:mod:`brainfm.report` (tables in Markdown/CSV/LaTeX, figures in PNG/PDF).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from brainfm.atomic import write_parquet
from brainfm.errors import InputError
from brainfm.frames import read_frames
from brainfm.report import figures, tables
from brainfm.stats.comparison import compare_controls, compare_dice, compare_predictions
from brainfm.stats.km import km_table
from brainfm.stats.knn import knn_table
from brainfm.stats.strata import age_strata_table
from brainfm.tasks.runs import (EPOCH_COLUMNS, FIRST_EPOCH_MARK_SHARE, collect_optional, collect_predictions,
                                collect_training_n, untrained_cells)

__all__ = ["task_metrics", "task_stats", "knn_stats", "strata_stats", "km_stats", "finetune_table", "perturbation_stats",
           "segmentation_stats"]

Labels = Mapping[str, str] | None


def task_metrics(kind: str, target: str) -> list[str] | None:
    """The metrics the paper reports for a task when they differ from its kind's default (None: the default).

    MRI sequence classification (the task predicting ``modality``, §4.3.6) is reported with
    accuracy beside the macro-AUC.
    """
    if kind == "classification" and target == "modality":
        return ["macro_auc", "accuracy"]
    return None


def task_stats(task: str, run_dirs: Sequence[str | Path], out_dir: str | Path, table_path: str | Path,
               figure_path: str | Path, *, reference: str, description: str = "", n_boot: int = 2000,
               seed: int = 42, labels: Labels = None, metrics: Sequence[str] | None = None,
               controls: Mapping[str, str] | None = None) -> dict[str, Path]:
    """Statistics, table and figure of one head-trained task across backbones and ratios (Fig. 3).

    ``metrics`` overrides the kind's default metric (see :func:`task_metrics`). ``controls``
    (pretrained backbone -> its random-init control) adds one paired comparison per pair
    (``controls.parquet``, :func:`~brainfm.stats.comparison.compare_controls`).
    """
    out = Path(out_dir) / "comparison.parquet"
    preds = collect_predictions(run_dirs)
    tidy = compare_predictions(preds, reference, n_boot=n_boot, seed=seed, metrics=metrics)
    write_parquet(out, tidy)
    controls_out = Path(out_dir) / "controls.parquet"
    write_parquet(controls_out, compare_controls(preds, controls or {}, n_boot=n_boot, seed=seed, metrics=metrics,
                                                 comparison=tidy))
    n_out, n_table = training_n_outputs(task, out_dir, table_path)
    n = collect_training_n(run_dirs)
    write_parquet(n_out, n)
    untrained = {(b, r) for _, b, r in untrained_cells(n)}
    counts = [c for c in n.columns if c.startswith(("n_", "paper_n_")) or c in EPOCH_COLUMNS]
    n[counts] = n[counts].apply(pd.to_numeric, errors="coerce")
    wide = n.drop(columns=["seed"]).groupby(["task", "backbone", "ratio", "validation"], dropna=False)[counts].mean(
    ).round(2).reset_index()
    wide[counts] = wide[counts].astype(object).where(wide[counts].notna(), "-")  # the paper gives no n
    tables.write_table(wide, n_table, label=f"tab:{task}-n",
                       caption=f"{task}: subjects the heads trained and were tested on (mean over seeds and folds) "
                               "beside the paper's n (Supp. Table 2 / text; at a ratio: round(ratio x n)); "
                               "best_epoch: the epoch early stopping kept (median over folds, mean over seeds); "
                               "first_epoch_share: share of heads that kept their first epoch's weights")
    caption = f"{task}: {description or task}. Estimates per label ratio vs {reference}."
    if untrained:
        caption += f"{tables.FIRST_EPOCH_MARK}: {tables.first_epoch_caption(FIRST_EPOCH_MARK_SHARE)}"
    tables.write_table(tables.comparison_table(tidy, reference, labels=labels, marked=untrained), table_path,
                       caption=caption, label=f"tab:{task}")
    figures.metric_vs_ratio(tidy, figure_path, reference=reference, labels=labels, suptitle=description or None)
    return {"comparison": out, "controls": controls_out, "table": Path(table_path), "figure": Path(figure_path),
            "training_n": n_out, "training_n_table": n_table}


def training_n_outputs(task: str, out_dir: str | Path, table_path: str | Path) -> tuple[Path, Path]:
    """Where ``task_stats`` writes the training-n parquet (beside comparison.parquet) and table (beside the task's)."""
    return Path(out_dir) / "training_n.parquet", Path(table_path).with_name(f"training_n_{task}.md")


def knn_stats(task: str, knn_files: Sequence[str | Path], out_dir: str | Path, table_path: str | Path,
              figure_path: str | Path, *, reference: str, n_boot: int = 2000, seed: int = 42,
              labels: Labels = None) -> dict[str, Path]:
    """kNN accuracy per k with bootstrap CIs and Holm-adjusted exact McNemar tests (Fig. 6b left)."""
    out = Path(out_dir) / "knn.parquet"
    table = knn_table(read_frames(knn_files, "kNN results"), reference, n_boot=n_boot, seed=seed)
    write_parquet(out, table)
    tables.write_table(tables.knn_wide_table(table, reference, labels=labels), table_path,
                       caption=f"{task}: kNN accuracy [95% CI] by k; exact McNemar vs {reference}, Holm across k. "
                       + tables.knn_caption(table),
                       label=f"tab:{task}")
    figures.knn_accuracy(table, figure_path, reference=reference, labels=labels)
    return {"knn": out, "table": Path(table_path), "figure": Path(figure_path)}


def strata_stats(task: str, run_dirs: Sequence[str | Path], out_dir: str | Path, table_path: str | Path,
                 figure_path: str | Path, *, edges: Sequence[float] | None, reference: str, n_boot: int = 2000,
                 seed: int = 42, labels: Labels = None) -> Path:
    """Per age stratum at full supervision, Holm-adjusted within strata (Fig. 3k and 3m).

    ``edges`` are the task's ``strata`` bin edges; a task without them has no strata table.
    """
    if not edges:
        raise InputError(task, "the task declares no 'strata' (column and edges)")
    out = Path(out_dir) / "strata.parquet"
    strata = age_strata_table(collect_predictions(run_dirs), edges, reference, n_boot=n_boot, seed=seed)
    write_parquet(out, strata)
    tables.write_table(tables.strata_wide_table(strata, reference, labels=labels), table_path,
                       label=f"tab:{task}-strata",
                       caption=f"{task}: age strata at full supervision (Holm-adjusted within strata)")
    figures.age_strata_bars(strata, figure_path, reference=reference, labels=labels)
    return out


def km_stats(task: str, run_dirs: Sequence[str | Path], out_dir: str | Path, table_path: str | Path,
             figure_path: str | Path, *, reference: str, labels: Labels = None) -> Path:
    """Kaplan-Meier risk groups split at the median training risk, log-rank p per ratio (Fig. 4)."""
    out = Path(out_dir) / "km.parquet"
    stats, curves = km_table(collect_predictions(run_dirs), collect_optional(run_dirs, "train_risk.parquet"))
    write_parquet(out, stats)
    tables.write_table(tables.km_summary_table(stats, reference, labels=labels), table_path, label=f"tab:{task}-km",
                       caption=f"{task}: Kaplan-Meier risk groups (median training risk), log-rank p")
    figures.km_grid(curves, stats, figure_path, task=task, reference=reference, labels=labels)
    return out


def finetune_table(pairs: Sequence[tuple[str | Path, str | Path]], table_path: str | Path, *, backbone: str,
                   n_boot: int = 2000, seed: int = 42, labels: Labels = None,
                   segmentation: Sequence[tuple[str | Path, str | Path]] = ()) -> pd.DataFrame:
    """Frozen vs fully fine-tuned encoder per task and ratio (Supplementary Table 6).

    ``pairs`` holds (frozen run dir, fine-tuned run dir) per task. Only the (ratio, seed) runs
    present in both are compared, with the task's usual test (paired bootstrap, paired t-test on
    absolute errors, or a paired test across CV splits), frozen as the reference.
    ``segmentation`` holds (frozen job, fine-tuned job) folders of segmentation cells: per-case
    Dice per region, paired bootstrap over the test cases (:func:`compare_dice`).
    """
    name = labels.get(backbone, backbone) if labels else backbone
    frozen_name, tuned_name = f"{name} (frozen)", f"{name} (fine-tuned)"
    if not pairs and not segmentation:
        raise InputError(str(table_path), "no fine-tuned runs to compare")
    tidy_parts = []
    if segmentation:
        from brainfm.stats.segmentation import read_dice

        frozen_dirs, tuned_dirs = zip(*segmentation)
        both = pd.concat([read_dice(frozen_dirs).assign(backbone=frozen_name),
                          read_dice(tuned_dirs).assign(backbone=tuned_name)], ignore_index=True)
        tidy_parts.append(compare_dice(both, frozen_name, n_boot=n_boot, seed=seed))
    for frozen_dir, tuned_dir in pairs:
        tuned = collect_predictions([tuned_dir])
        frozen = collect_predictions([frozen_dir])
        runs = tuned[["ratio", "seed"]].drop_duplicates()
        frozen = frozen.merge(runs, on=["ratio", "seed"])
        if frozen.empty:
            raise InputError(str(frozen_dir), "no frozen run matches the fine-tuned ratios and seeds")
        both = pd.concat([frozen.assign(backbone=frozen_name), tuned.assign(backbone=tuned_name)], ignore_index=True)
        tidy_parts.append(compare_predictions(both, frozen_name, n_boot=n_boot, seed=seed))
    tidy = pd.concat(tidy_parts, ignore_index=True)
    write_parquet(Path(table_path).with_suffix(".parquet"), tidy)
    tables.write_table(tables.comparison_table(tidy, frozen_name), table_path, label="tab:finetune",
                       caption=f"Frozen vs full fine-tuning of {name} (marks: fine-tuned vs frozen)")
    return tidy


def perturbation_stats(files: Sequence[str | Path], table_path: str | Path, figure_path: str | Path, *,
                       reference: str, labels: Labels = None, predictions: Sequence[str | Path] = (),
                       comparison_path: str | Path | None = None, n_boot: int = 2000, seed: int = 42,
                       alpha: float = 0.05) -> Path:
    """Each task's metric (± bootstrap sd) by perturbation severity: table and grouped bars (Fig. 5).

    With the per-item ``predictions`` of ``evaluate_perturbed``, every backbone is also tested
    against ``reference`` at each severity with its task's test (Supp. Table 18,
    :func:`~brainfm.stats.perturbation.perturbation_comparison`); the marks go into the table
    cells and above the bars, the tidy tests to ``comparison_path``.
    """
    frame = read_frames(files, "perturbation results")
    caption = "Test-time perturbations: metric (± bootstrap sd) by severity"
    frame["stars"] = ""
    if predictions:
        from brainfm.stats.perturbation import perturbation_comparison

        tests = perturbation_comparison(read_frames(predictions, "perturbed predictions"), reference,
                                        n_boot=n_boot, seed=seed, alpha=alpha)
        if comparison_path is not None:
            write_parquet(comparison_path, tests)
        marks = tests.loc[~tests["is_reference"].astype(bool),
                          ["task", "backbone", "perturbation", "severity", "stars", "p_value", "test"]]
        frame = frame.drop(columns="stars").merge(marks, on=["task", "backbone", "perturbation", "severity"],
                                                  how="left")
        frame["stars"] = frame["stars"].fillna("")
        caption += (f"; * p<0.05, ** p<0.01, *** p<0.001 vs {tables.display_name(reference, labels)} at the same "
                    "severity (paired bootstrap for AUC/C-index, paired t-test on per-subject absolute errors for "
                    "MAE; subjects resampled; not adjusted across severities)")
    wide = frame.assign(cell=[tables.format_estimate(m, v, e, stars=st) for m, v, e, st in
                              zip(frame["metric"], frame["value"], frame["err"], frame["stars"])])
    wide = wide.pivot_table(index=["task", "metric", "backbone"], columns=["perturbation", "severity"],
                            values="cell", aggfunc="first")
    wide.columns = [f"{p} {s:g}" for p, s in wide.columns]
    wide = wide.reset_index()
    wide["backbone"] = [tables.display_name(b, labels) for b in wide["backbone"]]
    wide["metric"] = [tables.metric_label(m) for m in wide["metric"]]
    tables.write_table(wide, table_path, caption=caption, label="tab:perturb")
    figures.perturbation_bars(frame, figure_path, reference=reference, row="task", labels=labels)
    return Path(figure_path)


def segmentation_stats(run_dirs: Sequence[str | Path], out_path: str | Path, table_path: str | Path,
                       figure_path: str | Path, *, reference: str, all_background: bool = True,
                       adjust: str | None = None, n_boot: int = 2000, seed: int = 42, alpha: float = 0.05,
                       labels: Labels = None) -> pd.DataFrame:
    """Dice vs label ratio, a panel per benchmark x region (Fig. 3a), and its table (Supp. Table 7).

    ``run_dirs`` are the segmentation jobs' folders (``dice.parquet`` inside). The table gives
    mean ± bootstrap sd per ratio with marks from the paired bootstrap against ``reference``.
    """
    from brainfm.stats.segmentation import ALL_BACKGROUND, read_dice, segmentation_comparison

    tidy = segmentation_comparison(read_dice(run_dirs), reference, all_background=all_background, adjust=adjust,
                                   n_boot=n_boot, seed=seed, alpha=alpha)
    write_parquet(Path(out_path), tidy)
    names = {ALL_BACKGROUND: "All background", **dict(labels or {})}
    adjusted = " (Holm-adjusted across backbones)" if adjust == "holm" else ""
    tables.write_table(tables.comparison_table(tidy, reference, labels=names), table_path, label="tab:segmentation",
                       caption=f"Tumour segmentation: Dice (mean ± bootstrap sd) per label ratio; paired bootstrap "
                               f"vs {names.get(reference, reference)} at matched ratios{adjusted}")
    panels = list(dict.fromkeys(zip(tidy["task"], tidy["metric"])))
    regions = tidy["metric"].nunique()
    figures.metric_vs_ratio(tidy, figure_path, reference=reference, labels=names, panels=panels, ncols=regions,
                            titles={(t, m): f"{t}: {m.removeprefix('dice_')}" for t, m in panels})
    return tidy

