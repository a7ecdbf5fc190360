"""From run outputs to the paper's tables and figures, one task at a time.

The workflow's statistics rules call these functions: they read the ``predictions.parquet`` /
``knn.parquet`` files of every backbone of a task, run the comparisons of
:mod:`brainfm.stats.compare`, and write the tidy statistics, the formatted tables (CSV, Markdown,
LaTeX) and the figures (PNG, PDF).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from brainfm.atomic import write_parquet, write_text
from brainfm.errors import InputError
from brainfm.report import figures, tables
from brainfm.stats import compare

__all__ = ["collect_predictions", "task_report", "knn_report", "cka_report", "perturbation_report", "summary_report"]


def collect_predictions(run_dirs: Iterable[str | Path], name: str = "predictions.parquet") -> pd.DataFrame:
    """Concatenate ``<run_dir>/ratio~R/seed~S/<name>`` for every run directory."""
    paths = sorted(p for d in run_dirs for p in Path(d).glob(f"ratio~*/seed~*/{name}"))
    if not paths:
        raise InputError(", ".join(map(str, run_dirs)), f"no {name} files found")
    return compare.read_predictions(paths)


def _edges(strata: Mapping[str, Any]) -> list[float]:
    return [math.inf if (isinstance(e, str) and e.lower() in ("inf", ".inf")) else float(e)
            for e in strata["edges"]]


def task_report(task: str, spec: Mapping[str, Any], run_dirs: Sequence[str | Path], out_dir: str | Path,
                table_path: str | Path, figure_path: str | Path, *, reference: str, n_boot: int = 2000,
                seed: int = 42, labels: Mapping[str, str] | None = None) -> dict[str, Path]:
    """Statistics, table and figures of one head-trained task across backbones and ratios."""
    out_dir = Path(out_dir)
    preds = collect_predictions(run_dirs)
    tidy = compare.compare_predictions(preds, reference, n_boot=n_boot, seed=seed)
    write_parquet(out_dir / "comparison.parquet", tidy)
    title = spec.get("description") or task
    tables.write_table(tables.comparison_table(tidy, reference, labels=labels), table_path,
                       caption=f"{task}: {title}. Estimates per label ratio vs {reference}.", label=f"tab:{task}")
    figures.metric_vs_ratio(tidy, figure_path, reference=reference, labels=labels,
                            suptitle=spec.get("description") or None)
    return {"comparison": out_dir / "comparison.parquet", "table": Path(table_path), "figure": Path(figure_path)}


def strata_report(task: str, spec: Mapping[str, Any], run_dirs: Sequence[str | Path], out_dir: str | Path,
                  table_path: str | Path, figure_path: str | Path, *, reference: str, n_boot: int = 2000,
                  seed: int = 42, labels: Mapping[str, str] | None = None) -> Path:
    """Per age stratum at full supervision, Holm-adjusted within strata (Fig. 3k and 3m)."""
    if not spec.get("strata"):
        raise InputError(task, "the task declares no 'strata' (column and edges)")
    preds = collect_predictions(run_dirs)
    strata = compare.age_strata_table(preds, _edges(spec["strata"]), reference, n_boot=n_boot, seed=seed)
    write_parquet(Path(out_dir) / "strata.parquet", strata)
    tables.write_table(tables.strata_wide_table(strata, reference, labels=labels), table_path, label=f"tab:{task}-strata",
                       caption=f"{task}: age strata at full supervision (Holm-adjusted within strata)")
    figures.age_strata_bars(strata, figure_path, reference=reference, labels=labels)
    return Path(out_dir) / "strata.parquet"


def km_report(task: str, run_dirs: Sequence[str | Path], out_dir: str | Path, table_path: str | Path,
              figure_path: str | Path, *, reference: str, labels: Mapping[str, str] | None = None) -> Path:
    """Kaplan-Meier risk groups split at the median training risk, log-rank p per ratio (Fig. 4)."""
    preds = collect_predictions(run_dirs)
    km_stats, curves = compare.km_table(preds, collect_optional(run_dirs, "train_risk.parquet"))
    write_parquet(Path(out_dir) / "km.parquet", km_stats)
    tables.write_table(tables.km_summary_table(km_stats, reference, labels=labels), table_path, label=f"tab:{task}-km",
                       caption=f"{task}: Kaplan-Meier risk groups (median training risk), log-rank p")
    figures.km_grid(curves, km_stats, figure_path, task=task, reference=reference, labels=labels)
    return Path(out_dir) / "km.parquet"


def collect_optional(run_dirs: Sequence[str | Path], name: str) -> pd.DataFrame | None:
    paths = sorted(p for d in run_dirs for p in Path(d).glob(f"ratio~*/seed~*/{name}"))
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True) if paths else None


def knn_report(task: str, knn_files: Sequence[str | Path], out_dir: str | Path, table_path: str | Path,
               figure_path: str | Path, *, reference: str, n_boot: int = 2000, seed: int = 42,
               labels: Mapping[str, str] | None = None) -> dict[str, Path]:
    """kNN accuracy per k with bootstrap CIs and Holm-adjusted exact McNemar tests (Fig. 6b left)."""
    frames = []
    for f in knn_files:
        try:
            frames.append(pd.read_parquet(f))
        except Exception as exc:
            raise InputError(f, f"cannot read kNN results ({exc})") from exc
    knn = pd.concat(frames, ignore_index=True)
    table = compare.knn_table(knn, reference, n_boot=n_boot, seed=seed)
    out_dir = Path(out_dir)
    write_parquet(out_dir / "knn.parquet", table)
    tables.write_table(tables.knn_wide_table(table, reference, labels=labels), table_path,
                       caption=f"{task}: kNN accuracy [95% CI] by k; exact McNemar vs {reference}, Holm across k",
                       label=f"tab:{task}")
    figures.knn_accuracy(table, figure_path, reference=reference, labels=labels)
    return {"knn": out_dir / "knn.parquet", "table": Path(table_path), "figure": Path(figure_path)}


def cka_report(cka_files: Sequence[str | Path], figure_path: str | Path, *, reference: str,
               labels: Mapping[str, str] | None = None) -> Path:
    frames = []
    for f in cka_files:
        df = pd.read_parquet(f)
        df["cohort"] = Path(f).stem.removeprefix("cka_")
        frames.append(df)
    cka = pd.concat(frames, ignore_index=True)
    figures.cka_heatmap(cka, figure_path, reference=reference, cohort_col="cohort", labels=labels)
    return Path(figure_path)


def perturbation_report(files: Sequence[str | Path], table_path: str | Path, figure_path: str | Path, *,
                        reference: str, labels: Mapping[str, str] | None = None) -> Path:
    """Grouped bars of each task's metric by perturbation severity (Fig. 5) and its table."""
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
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


def finetune_report(pairs: Sequence[tuple[str | Path, str | Path]], table_path: str | Path, *, backbone: str,
                    n_boot: int = 2000, seed: int = 42, labels: Mapping[str, str] | None = None) -> pd.DataFrame:
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
        tidy_parts.append(compare.compare_predictions(both, frozen_name, n_boot=n_boot, seed=seed))
    tidy = pd.concat(tidy_parts, ignore_index=True)
    write_parquet(Path(table_path).with_suffix(".parquet"), tidy)
    tables.write_table(tables.comparison_table(tidy, frozen_name), table_path, label="tab:finetune",
                       caption=f"Frozen vs full fine-tuning of {name} (marks: fine-tuned vs frozen)")
    return tidy


def summary_report(comparison_files: Sequence[str | Path], knn_files: Sequence[str | Path],
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
