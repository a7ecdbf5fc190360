"""The statistics steps of the workflow: run outputs in, tidy statistics, tables and figures out.

One function per step, named as the step (workflow rule and ``brainfm`` subcommand):

=====================  =====================================================================
step                   what it computes (module)
=====================  =====================================================================
``task_stats``         every backbone vs the reference per ratio (:mod:`~brainfm.stats.comparison`)
``knn_stats``          kNN accuracy per k, McNemar with Holm across k (:mod:`~brainfm.stats.knn`)
``strata_stats``       age strata at full supervision (:mod:`~brainfm.stats.strata`)
``km_stats``           Kaplan-Meier risk groups, log-rank test (:mod:`~brainfm.stats.km`)
``finetune_table``     frozen vs fine-tuned encoder, paired tests (:mod:`~brainfm.stats.comparison`)
``perturbation_stats`` metric by perturbation severity (scored by :mod:`brainfm.tasks.perturbation`)
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
from brainfm.report import figures, tables
from brainfm.stats.comparison import compare_predictions
from brainfm.stats.km import km_table
from brainfm.stats.knn import knn_table
from brainfm.stats.strata import age_strata_table
from brainfm.tasks.runs import collect_optional, collect_predictions

__all__ = ["task_stats", "knn_stats", "strata_stats", "km_stats", "finetune_table", "perturbation_stats"]

Labels = Mapping[str, str] | None


def task_stats(task: str, run_dirs: Sequence[str | Path], out_dir: str | Path, table_path: str | Path,
               figure_path: str | Path, *, reference: str, description: str = "", n_boot: int = 2000,
               seed: int = 42, labels: Labels = None) -> dict[str, Path]:
    """Statistics, table and figure of one head-trained task across backbones and ratios (Fig. 3)."""
    out = Path(out_dir) / "comparison.parquet"
    tidy = compare_predictions(collect_predictions(run_dirs), reference, n_boot=n_boot, seed=seed)
    write_parquet(out, tidy)
    tables.write_table(tables.comparison_table(tidy, reference, labels=labels), table_path,
                       caption=f"{task}: {description or task}. Estimates per label ratio vs {reference}.",
                       label=f"tab:{task}")
    figures.metric_vs_ratio(tidy, figure_path, reference=reference, labels=labels, suptitle=description or None)
    return {"comparison": out, "table": Path(table_path), "figure": Path(figure_path)}


def knn_stats(task: str, knn_files: Sequence[str | Path], out_dir: str | Path, table_path: str | Path,
              figure_path: str | Path, *, reference: str, n_boot: int = 2000, seed: int = 42,
              labels: Labels = None) -> dict[str, Path]:
    """kNN accuracy per k with bootstrap CIs and Holm-adjusted exact McNemar tests (Fig. 6b left)."""
    out = Path(out_dir) / "knn.parquet"
    table = knn_table(_read_frames(knn_files, "kNN results"), reference, n_boot=n_boot, seed=seed)
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
                   n_boot: int = 2000, seed: int = 42, labels: Labels = None) -> pd.DataFrame:
    """Frozen vs fully fine-tuned encoder per task and ratio (Supplementary Table 6).

    ``pairs`` holds (frozen run dir, fine-tuned run dir) per task. Only the (ratio, seed) runs
    present in both are compared, with the task's usual test (paired bootstrap, paired t-test on
    absolute errors, or a paired test across CV splits), frozen as the reference.
    """
    name = labels.get(backbone, backbone) if labels else backbone
    frozen_name, tuned_name = f"{name} (frozen)", f"{name} (fine-tuned)"
    tidy_parts = []
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
                       reference: str, labels: Labels = None) -> Path:
    """Each task's metric (± bootstrap sd) by perturbation severity: table and grouped bars (Fig. 5)."""
    frame = _read_frames(files, "perturbation results")
    wide = frame.assign(cell=[tables.format_estimate(m, v, e) for m, v, e in
                              zip(frame["metric"], frame["value"], frame["err"])])
    wide = wide.pivot_table(index=["task", "metric", "backbone"], columns=["perturbation", "severity"],
                            values="cell", aggfunc="first")
    wide.columns = [f"{p} {s:g}" for p, s in wide.columns]
    wide = wide.reset_index()
    wide["backbone"] = [tables.display_name(b, labels) for b in wide["backbone"]]
    wide["metric"] = [tables.metric_label(m) for m in wide["metric"]]
    tables.write_table(wide, table_path,
                       caption="Test-time perturbations: metric (± bootstrap sd) by severity", label="tab:perturb")
    figures.perturbation_bars(frame, figure_path, reference=reference, row="task", labels=labels)
    return Path(figure_path)


def _read_frames(files: Sequence[str | Path], what: str) -> pd.DataFrame:
    frames = []
    for f in files:
        try:
            frames.append(pd.read_parquet(f))
        except Exception as exc:
            raise InputError(f, f"cannot read {what} ({exc})") from exc
    return pd.concat(frames, ignore_index=True)
