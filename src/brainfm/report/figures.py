"""The paper's figure set, drawn from the tidy frames of the :mod:`brainfm.stats` table modules.

- :func:`metric_vs_ratio`: metric vs labelled-data ratio with CIs and significance marks (Fig. 3);
- :func:`age_strata_bars`: per-age-stratum metric with Holm-adjusted marks (Fig. 3k, 3m);
- :func:`km_grid`: Kaplan-Meier curves, ratios x backbones, with log-rank p (Fig. 4);
- :func:`perturbation_bars`: grouped bars by perturbation severity (Fig. 5);
- :func:`knn_accuracy`: kNN accuracy vs k with bootstrap error bars (Fig. 6b, left);
- :func:`cka_heatmap`: CKA of the reference against other backbones by depth (Fig. 6b, right);
- :func:`similarity_grid`: reference-point similarity maps, backbones x references (Fig. 6a).

Each ``draw_*`` function takes tidy data frames and returns a :class:`~matplotlib.figure.Figure`
(for notebooks and tests); the function of the same name without the prefix also takes an output
path (suffix ignored), writes PNG and PDF atomically, and returns the written paths.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from brainfm.report.style import (
    display_name,
    linestyle,
    marker,
    metric_label,
    new_figure,
    order_backbones,
    palette,
    ratio_label,
    save_figure,
    style,
)
from brainfm.stats.metrics import metric_info
from brainfm.stats.predictions import DEFAULT_REFERENCE

__all__ = [
    "metric_vs_ratio", "age_strata_bars", "km_grid", "perturbation_bars", "knn_accuracy", "cka_heatmap",
    "draw_metric_vs_ratio", "draw_age_strata_bars", "draw_km_grid", "draw_perturbation_bars", "draw_knn_accuracy",
    "draw_cka_heatmap", "similarity_grid", "draw_similarity_grid",
]

_SIG_NOTE = "* p<0.05, ** p<0.01, *** p<0.001 vs {ref}"
_RISK_COLORS = {"low": "#1f77b4", "high": "#d62728"}


def _require(df: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{what}: frame lacks columns {missing}")
    if df.empty:
        raise ValueError(f"{what}: frame is empty")


def _grid(n: int, ncols: int) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return math.ceil(n / ncols), ncols


def _hide_unused(axes: list, used: int) -> None:
    for ax in axes[used:]:
        ax.set_visible(False)


def _legend(fig: Figure, backbones: Sequence[str], colors: dict[str, str], note: str | None = None,
            kind: str = "line", labels: Mapping[str, str] | None = None) -> None:
    if kind == "line":
        handles = [Line2D([], [], color=colors[b], marker=marker(b), label=display_name(b, labels))
                   for b in backbones]
    else:
        handles = [Patch(facecolor=colors[b], label=display_name(b, labels)) for b in backbones]
    # never wider than the figure: at most ~3 entries per 3 inches of width
    ncol = max(1, min(len(handles), 6, int(fig.get_figwidth() // 1.6)))
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol, frameon=False,
               title=note, title_fontsize=7)


def _dodge(n: int, width: float) -> np.ndarray:
    return (np.arange(n) - (n - 1) / 2) * width


def _significance_strip(ax, marks: dict[str, dict[float, str]], colors: dict[str, str], d_low: pd.Series,
                        d_high: pd.Series, row_height: float = 0.065) -> None:
    """Significance marks in a band at the top of the panel: one row per marked backbone.

    Rows (in the backbone's colour, led by its marker) sit above the data, whose y-range is
    squeezed below the band, so marks never collide with each other or with error bars.
    """
    rows = [(b, m) for b, m in marks.items() if any(m.values())]
    lo = float(np.nanmin(d_low.to_numpy(float)))
    hi = float(np.nanmax(d_high.to_numpy(float)))
    span = hi - lo if hi > lo else max(abs(hi), 1.0) * 0.1
    bottom = lo - 0.08 * span
    top_frac = 1.0 - row_height * len(rows) - (0.05 if rows else 0.08)
    ax.set_ylim(bottom, bottom + (hi - bottom) / top_frac)
    if not rows:
        return
    ticks = ax.get_yticks()
    ax.set_yticks(ticks[(ticks >= bottom) & (ticks <= hi + 0.02 * span)])  # no ticks inside the band
    band = 1.0 - row_height * len(rows) - 0.02
    ax.plot([0, 1], [band, band], transform=ax.transAxes, color="#bbbbbb", lw=0.5)
    strip = ax.get_xaxis_transform()  # x in data, y in axes fraction
    for i, (b, m) in enumerate(rows):
        y = 1.0 - row_height * (i + 0.6)
        ax.plot([0.025], [y], transform=ax.transAxes, marker=marker(b), color=colors[b], markersize=3.5,
                linestyle="none")
        for x, s in m.items():
            if s:
                ax.text(x, y, s, transform=strip, ha="center", va="center", fontsize=7, fontweight="bold",
                        color=colors[b])


def _wrap(text: str, width: int = 38) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(str(text), width)) or str(text)


# --------------------------------------------------------------------------------------------

def draw_metric_vs_ratio(tidy: pd.DataFrame, *, reference: str | None = None,
                         panels: Sequence[tuple[str, str]] | None = None, ncols: int = 3,
                         titles: dict[tuple[str, str], str] | None = None, suptitle: str | None = None,
                         labels: Mapping[str, str] | None = None) -> Figure:
    """One panel per (task, metric): estimate vs ratio, CI error bars, marks vs the reference.

    ``tidy`` is :func:`~brainfm.stats.comparison.compare_predictions` / ``compare_dice`` output.
    Points of different backbones are slightly offset horizontally so intervals do not overlap.
    ``labels`` maps backbone names to display labels (every ``draw_*`` function takes it).
    """
    _require(tidy, ["task", "metric", "ratio", "backbone", "estimate", "ci_low", "ci_high"], "metric_vs_ratio")
    reference = reference or str(tidy.get("reference", pd.Series([DEFAULT_REFERENCE])).iloc[0])
    panels = list(panels) if panels else list(dict.fromkeys(zip(tidy["task"], tidy["metric"])))
    backbones = order_backbones(tidy["backbone"], reference)
    colors = palette(backbones)
    nrows, ncols = _grid(len(panels), ncols)
    with style():
        fig, axes = new_figure(nrows, ncols, panel=(3.3, 2.7), extra_height=0.5)
        for ax, (task, metric) in zip(axes, panels):
            df = tidy[(tidy["task"] == task) & (tidy["metric"] == metric)]
            ratios = sorted(df["ratio"].astype(float).unique())
            xpos = {r: i for i, r in enumerate(ratios)}
            present = [b for b in backbones if b in set(df["backbone"])]
            offsets = dict(zip(present, _dodge(len(present), min(0.15, 0.7 / max(len(present) - 1, 1)))))
            marks = {}
            for b in present:
                d = df[df["backbone"] == b].sort_values("ratio")
                x = np.array([xpos[float(r)] for r in d["ratio"]]) + offsets[b]
                y = d["estimate"].to_numpy(float)
                err = np.vstack([y - d["ci_low"].to_numpy(float), d["ci_high"].to_numpy(float) - y])
                ax.errorbar(x, y, yerr=np.clip(err, 0, None), color=colors[b], marker=marker(b), ls=linestyle(b),
                            lw=1.6 if b == reference else 1.1, zorder=3 if b == reference else 2)
                if "stars" in d.columns:
                    marks[b] = dict(zip(x - offsets[b], d["stars"].fillna("")))
            ax.set_xticks(range(len(ratios)), [ratio_label(r) for r in ratios])
            ax.set_xlim(-0.75, len(ratios) - 0.4)  # room on the left for the significance-row markers
            _significance_strip(ax, marks, colors, d_low=df["ci_low"], d_high=df["ci_high"])
            ax.set_xlabel("Labelled training data")
            hint = "" if metric_info(metric).higher_is_better else " (lower is better)"
            ax.set_ylabel(metric_label(metric) + hint)
            title = (titles or {}).get((task, metric), f"{task}: {metric_label(metric)}")
            ax.set_title(_wrap(title))
        _hide_unused(axes, len(panels))
        _legend(fig, backbones, colors, _SIG_NOTE.format(ref=display_name(reference, labels)), labels=labels)
        if suptitle:
            fig.suptitle(suptitle)
        return fig


def draw_age_strata_bars(strata: pd.DataFrame, *, reference: str | None = None,
                         ncols: int = 2, labels: Mapping[str, str] | None = None) -> Figure:
    """Grouped bars per age stratum (one panel per task), CI error bars, Holm-adjusted marks."""
    _require(strata, ["task", "metric", "stratum", "age_low", "backbone", "estimate", "ci_low", "ci_high"],
             "age_strata_bars")
    reference = reference or str(strata.get("reference", pd.Series([DEFAULT_REFERENCE])).iloc[0])
    panels = list(dict.fromkeys(zip(strata["task"], strata["metric"])))
    backbones = order_backbones(strata["backbone"], reference)
    colors = palette(backbones)
    nrows, ncols = _grid(len(panels), ncols)
    with style():
        fig, axes = new_figure(nrows, ncols, panel=(4.2, 2.8), extra_height=0.5)
        for ax, (task, metric) in zip(axes, panels):
            df = strata[(strata["task"] == task) & (strata["metric"] == metric)]
            bins = list(dict.fromkeys(df.sort_values("age_low")["stratum"]))
            present = [b for b in backbones if b in set(df["backbone"])]
            width = 0.8 / max(len(present), 1)
            for j, b in enumerate(present):
                d = df[df["backbone"] == b].set_index("stratum").reindex(bins)
                x = np.arange(len(bins)) + _dodge(len(present), width)[j]
                y = d["estimate"].to_numpy(float)
                err = np.vstack([y - d["ci_low"].to_numpy(float), d["ci_high"].to_numpy(float) - y])
                ax.bar(x, np.nan_to_num(y), width=width, color=colors[b], edgecolor="white", linewidth=0.3)
                ax.errorbar(x, y, yerr=np.clip(np.nan_to_num(err), 0, None), fmt="none", ecolor="#333333", lw=0.7)
                if "stars" in d.columns:
                    for xi, top, s in zip(x, d["ci_high"].to_numpy(float), d["stars"].fillna("")):
                        if s and np.isfinite(top):
                            ax.annotate(s, (xi, top), xytext=(0, 1.5), textcoords="offset points", ha="center",
                                        va="bottom", fontsize=7, fontweight="bold")
            ax.set_xticks(range(len(bins)), bins)
            ax.set_xlabel("Age (years)")
            hint = "" if metric_info(metric).higher_is_better else " (lower is better)"
            ax.set_ylabel(metric_label(metric) + hint)
            ax.set_title(_wrap(f"{task}: {metric_label(metric)} by age", 50))
            ax.margins(y=0.15)
        _hide_unused(axes, len(panels))
        _legend(fig, backbones, colors, "Holm-adjusted " + _SIG_NOTE.format(ref=display_name(reference, labels)),
                kind="bar", labels=labels)
        return fig


def draw_km_grid(curves: pd.DataFrame, stats: pd.DataFrame, *, task: str | None = None,
                 seed: int | None = None, reference: str | None = None, max_time: float | None = 2000.0,
                 time_unit: str = "days", labels: Mapping[str, str] | None = None) -> Figure:
    """Kaplan-Meier curves of low/high-risk groups, rows = ratios, columns = backbones (Fig. 4).

    ``curves``/``stats`` come from :func:`~brainfm.stats.km.km_table`; one task and one seed
    are drawn (the first of each by default). The time axis is cut at ``max_time``.
    """
    _require(curves, ["task", "backbone", "ratio", "seed", "group", "time", "survival"], "km_grid curves")
    _require(stats, ["task", "backbone", "ratio", "seed", "p_value"], "km_grid stats")
    task = task if task is not None else sorted(curves["task"].unique())[0]
    cur = curves[curves["task"] == task]
    seed = seed if seed is not None else int(cur["seed"].min())
    cur = cur[cur["seed"] == seed]
    st = stats[(stats["task"] == task) & (stats["seed"] == seed)]
    backbones = order_backbones(cur["backbone"], reference or DEFAULT_REFERENCE)
    ratios = sorted(cur["ratio"].astype(float).unique())
    with style():
        fig, axes = new_figure(len(ratios), len(backbones), panel=(2.5, 2.0), extra_height=0.4,
                               sharex=True, sharey=True)
        fig.get_layout_engine().set(wspace=0.06)  # keeps the last time tick clear of the next panel's first
        for i, r in enumerate(ratios):
            for j, b in enumerate(backbones):
                ax = axes[i * len(backbones) + j]
                d = cur[(cur["backbone"] == b) & np.isclose(cur["ratio"].astype(float), r)]
                for group in ("low", "high"):
                    g = d[d["group"] == group].sort_values("time")
                    if g.empty:
                        continue
                    t, s = g["time"].to_numpy(float), g["survival"].to_numpy(float)
                    ax.step(t, s, where="post", color=_RISK_COLORS[group], lw=1.2)
                    if {"ci_low", "ci_high"} <= set(g.columns):
                        ax.fill_between(t, g["ci_low"].to_numpy(float), g["ci_high"].to_numpy(float), step="post",
                                        color=_RISK_COLORS[group], alpha=0.15, lw=0)
                srow = st[(st["backbone"] == b) & np.isclose(st["ratio"].astype(float), r)]
                if not srow.empty:
                    p = float(srow["p_value"].iloc[0])
                    text = "log-rank p = n/a" if not np.isfinite(p) else (
                        "log-rank p < 0.001" if p < 0.001 else f"log-rank p = {p:.3f}")
                    ax.text(0.97, 0.95, text, transform=ax.transAxes, ha="right", va="top", fontsize=7,
                            color="#000000" if np.isfinite(p) and p < 0.05 else "#555555",
                            fontweight="bold" if np.isfinite(p) and p < 0.05 else "normal")
                if max_time is not None:
                    ax.set_xlim(0, max_time)
                ax.set_ylim(0, 1.05)
                if i == 0:
                    ax.set_title(display_name(b, labels))
                if j == 0:
                    ax.set_ylabel(f"{ratio_label(r)} data\nSurvival probability")
                if i == len(ratios) - 1:
                    ax.set_xlabel(f"Time ({time_unit})")
        handles = [Line2D([], [], color=_RISK_COLORS[g], label=f"{g.capitalize()} risk") for g in ("low", "high")]
        source = "training-set"
        if "threshold_source" in st.columns and st["threshold_source"].astype(str).str.startswith("test").any():
            source = "test-set (no training risks given)"
        fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False,
                   title=f"Groups split at the median {source} risk", title_fontsize=7)
        fig.suptitle(f"Kaplan-Meier risk stratification: {task}")
        return fig


def draw_perturbation_bars(frame: pd.DataFrame, *, reference: str | None = None,
                           row: str = "metric", labels: Mapping[str, str] | None = None) -> Figure:
    """Grouped bars by perturbation severity, one panel per (``row`` value, perturbation) (Fig. 5).

    ``frame`` columns: backbone, perturbation, severity, metric, value, err (+ optional task;
    use ``row="task"`` for one row per task; + optional ``stars``: significance marks against
    the reference, drawn above each bar). Severities are ordered numerically when possible.
    """
    _require(frame, ["backbone", "perturbation", "severity", "metric", "value", "err"], "perturbation_bars")
    rows_vals = list(dict.fromkeys(frame[row]))
    perts = list(dict.fromkeys(frame["perturbation"]))
    backbones = order_backbones(frame["backbone"], reference or DEFAULT_REFERENCE)
    colors = palette(backbones)
    with style():
        fig, axes = new_figure(len(rows_vals), len(perts), panel=(3.3, 2.5), extra_height=0.4)
        for i, rv in enumerate(rows_vals):
            for j, pert in enumerate(perts):
                ax = axes[i * len(perts) + j]
                df = frame[(frame[row] == rv) & (frame["perturbation"] == pert)]
                sev = _sorted_levels(df["severity"])
                present = [b for b in backbones if b in set(df["backbone"])]
                width = 0.8 / max(len(present), 1)
                for k, b in enumerate(present):
                    d = df[df["backbone"] == b].set_index("severity").reindex(sev)
                    x = np.arange(len(sev)) + _dodge(len(present), width)[k]
                    ax.bar(x, d["value"].to_numpy(float), width=width, color=colors[b], edgecolor="white",
                           linewidth=0.3, yerr=d["err"].to_numpy(float), error_kw={"lw": 0.7, "capsize": 1.5})
                    if "stars" in d.columns:
                        tops = (d["value"] + d["err"].fillna(0)).to_numpy(float)
                        for xi, top, mark in zip(x, tops, d["stars"].fillna("")):
                            if mark and np.isfinite(top):
                                ax.text(xi, top, mark, ha="center", va="bottom", fontsize=6, fontweight="bold",
                                        color=colors[b])
                ax.set_xticks(range(len(sev)), [str(s) for s in sev])
                ax.set_xlabel(f"{pert} severity")
                metric = str(df["metric"].iloc[0]) if not df.empty else str(rv)
                if j == 0:
                    ax.set_ylabel(metric_label(metric) if row == "metric" else f"{rv}\n{metric_label(metric)}")
                if i == 0:
                    ax.set_title(str(pert))
                ax.margins(y=0.1)
        note = "error bars: uncertainty estimates"
        if "stars" in frame.columns and frame["stars"].fillna("").astype(bool).any():
            note += "\n" + _SIG_NOTE.format(ref=display_name(reference or DEFAULT_REFERENCE, labels))
        _legend(fig, backbones, colors, note, kind="bar", labels=labels)
        return fig


def _sorted_levels(values: pd.Series) -> list:
    levels = list(dict.fromkeys(values))
    try:
        return sorted(levels, key=float)
    except (TypeError, ValueError):
        return levels


def draw_knn_accuracy(knn: pd.DataFrame, *, reference: str | None = None,
                      ncols: int = 1, labels: Mapping[str, str] | None = None) -> Figure:
    """kNN accuracy vs k per task, error bars = bootstrap standard deviation (Fig. 6b, left)."""
    _require(knn, ["task", "k", "backbone", "accuracy", "sd"], "knn_accuracy")
    reference = reference or str(knn.get("reference", pd.Series([DEFAULT_REFERENCE])).iloc[0])
    tasks = list(dict.fromkeys(knn["task"]))
    backbones = order_backbones(knn["backbone"], reference)
    colors = palette(backbones)
    nrows, ncols = _grid(len(tasks), ncols)
    with style():
        fig, axes = new_figure(nrows, ncols, panel=(4.0, 2.6), extra_height=0.5)
        for ax, task in zip(axes, tasks):
            df = knn[knn["task"] == task]
            ks = sorted(df["k"].unique())
            present = [b for b in backbones if b in set(df["backbone"])]
            offsets = dict(zip(present, _dodge(len(present), min(0.15, 0.7 / max(len(present) - 1, 1)))))
            marks = {}
            for b in present:
                d = df[df["backbone"] == b].sort_values("k")
                x = np.array([ks.index(k) for k in d["k"]]) + offsets[b]
                y = d["accuracy"].to_numpy(float)
                ax.errorbar(x, y, yerr=d["sd"].to_numpy(float), color=colors[b], marker=marker(b),
                            ls=linestyle(b), lw=1.6 if b == reference else 1.1)
                if "stars" in d.columns:
                    marks[b] = dict(zip(x - offsets[b], d["stars"].fillna("")))
            reaches = set()
            if "k_reaches_min_class" in df.columns:
                reaches = {int(k) for k, v in df.groupby("k")["k_reaches_min_class"].first().items() if bool(v)}
            if "majority_accuracy" in df.columns:
                maj = df.groupby("k")["majority_accuracy"].first().reindex(ks).to_numpy(float)
                ax.plot(range(len(ks)), maj, color="black", ls=":", lw=1.0, zorder=1)
                ax.annotate("majority class", (len(ks) - 1, maj[-1]), textcoords="offset points", xytext=(0, 3),
                            ha="right", va="bottom", fontsize=6.5, color="#333333")
            ax.set_xticks(range(len(ks)), [f"{k}†" if int(k) in reaches else str(k) for k in ks])
            ax.set_xlim(-0.75, len(ks) - 0.4)
            ax.set_xlabel("Neighbourhood size k" + (" († ≥ smallest class of the memory set)" if reaches else ""))
            ax.set_ylabel("kNN accuracy")
            ax.set_title(str(task))
            _significance_strip(ax, marks, colors, d_low=df["accuracy"] - df["sd"], d_high=df["accuracy"] + df["sd"])
        _hide_unused(axes, len(tasks))
        _legend(fig, backbones, colors,
                "Holm-adjusted exact McNemar: " + _SIG_NOTE.format(ref=display_name(reference, labels)),
                labels=labels)
        return fig


def draw_cka_heatmap(cka: pd.DataFrame, *, reference: str | None = None,
                     cohort_col: str | None = None, decimals: int = 2,
                     labels: Mapping[str, str] | None = None) -> Figure:
    """Heatmap of CKA(reference layer, backbone layer) by depth, one panel per cohort (Fig. 6b, right).

    ``cka`` columns: backbone, depth, cka (+ optional reference; cohort column autodetected as
    ``cohort`` or ``dataset``), as written by :func:`brainfm.analysis.cka.cka_table` per cohort.
    """
    _require(cka, ["backbone", "depth", "cka"], "cka_heatmap")
    if cohort_col is None:
        cohort_col = next((c for c in ("cohort", "dataset") if c in cka.columns), None)
    cohorts = list(dict.fromkeys(cka[cohort_col])) if cohort_col else [None]
    reference = reference or (str(cka["reference"].iloc[0]) if "reference" in cka.columns else DEFAULT_REFERENCE)
    backbones = order_backbones(cka["backbone"], None)
    depths = list(dict.fromkeys(cka["depth"]))
    with style():
        fig, axes = new_figure(1, len(cohorts), panel=(0.9 * len(depths) + 2.0, 0.45 * len(backbones) + 1.3))
        image = None
        for ax, cohort in zip(axes, cohorts):
            df = cka if cohort is None else cka[cka[cohort_col] == cohort]
            mat = df.pivot_table(index="backbone", columns="depth", values="cka", aggfunc="mean")
            mat = mat.reindex(index=backbones, columns=depths)
            image = ax.imshow(mat.to_numpy(float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
            for (r, c), v in np.ndenumerate(mat.to_numpy(float)):
                if np.isfinite(v):
                    ax.text(c, r, f"{v:.{decimals}f}", ha="center", va="center", fontsize=8,
                            color="black" if v > 0.6 else "white")
            ax.set_xticks(range(len(depths)), [str(d) for d in depths])
            ax.set_yticks(range(len(backbones)), [display_name(b, labels) for b in backbones])
            ax.set_xlabel(f"{display_name(reference, labels)} depth")
            ax.grid(False)
            ax.set_title(f"CKA with {display_name(reference, labels)}" + (f": {cohort}" if cohort is not None else ""))
        if image is not None:
            fig.colorbar(image, ax=axes, shrink=0.9, label="linear CKA")
        return fig


# --------------------------------------------------------------------------------------------
# Drawing + saving: each figure as PNG and PDF, written atomically.
# --------------------------------------------------------------------------------------------

def _save(fig: Figure, path: str | Path, dpi: int | None) -> list[Path]:
    with style():
        return save_figure(fig, path, dpi=dpi)


def metric_vs_ratio(tidy: pd.DataFrame, path: str | Path, *, dpi: int | None = None, **kwargs) -> list[Path]:
    """Fig. 3 panels (see :func:`draw_metric_vs_ratio`), saved as ``path``.png/.pdf."""
    return _save(draw_metric_vs_ratio(tidy, **kwargs), path, dpi)


def age_strata_bars(strata: pd.DataFrame, path: str | Path, *, dpi: int | None = None, **kwargs) -> list[Path]:
    """Fig. 3k/3m (see :func:`draw_age_strata_bars`), saved as ``path``.png/.pdf."""
    return _save(draw_age_strata_bars(strata, **kwargs), path, dpi)


def km_grid(curves: pd.DataFrame, stats: pd.DataFrame, path: str | Path, *, dpi: int | None = None,
            **kwargs) -> list[Path]:
    """Fig. 4 (see :func:`draw_km_grid`), saved as ``path``.png/.pdf."""
    return _save(draw_km_grid(curves, stats, **kwargs), path, dpi)


def perturbation_bars(frame: pd.DataFrame, path: str | Path, *, dpi: int | None = None, **kwargs) -> list[Path]:
    """Fig. 5 (see :func:`draw_perturbation_bars`), saved as ``path``.png/.pdf."""
    return _save(draw_perturbation_bars(frame, **kwargs), path, dpi)


def knn_accuracy(knn: pd.DataFrame, path: str | Path, *, dpi: int | None = None, **kwargs) -> list[Path]:
    """Fig. 6b left (see :func:`draw_knn_accuracy`), saved as ``path``.png/.pdf."""
    return _save(draw_knn_accuracy(knn, **kwargs), path, dpi)


def cka_heatmap(cka: pd.DataFrame, path: str | Path, *, dpi: int | None = None, **kwargs) -> list[Path]:
    """Fig. 6b right (see :func:`draw_cka_heatmap`), saved as ``path``.png/.pdf."""
    return _save(draw_cka_heatmap(cka, **kwargs), path, dpi)


def draw_similarity_grid(panels: Mapping[str, Mapping[str, np.ndarray]], references: Sequence[str],
                         aucs: Mapping[tuple[str, str], float] | None = None, *,
                         labels: Mapping[str, str] | None = None, title: str | None = None) -> Figure:
    """Reference-point similarity maps (Fig. 6a): rows = backbones, columns = references.

    ``panels[backbone]`` holds the slice (``image``, (H, W)), one similarity map per reference
    (``maps``, (R, H, W), NaN where the reference is absent) and the reference tissues
    (``tissues``, (R, H, W)), outlined on each map, and optionally the reference points (``points``,
    (y, x) per reference); ``aucs`` adds each map's separation AUC. All maps share one colour scale
    (no per-encoder rescaling, as in the paper).
    """
    backbones = list(panels)
    if not backbones:
        raise ValueError("similarity_grid: no backbones")
    with style():
        fig, axes = new_figure(len(backbones), len(references), panel=(2.0, 2.0), extra_height=0.3)
        im = None
        finite = [np.asarray(p["maps"], float) for p in panels.values()]
        lo = min((float(np.nanmin(m)) for m in finite if np.isfinite(m).any()), default=-1.0)
        for i, b in enumerate(backbones):
            p = panels[b]
            for j, ref in enumerate(references):
                ax = axes[i * len(references) + j]
                ax.imshow(p["image"], cmap="gray", interpolation="nearest")
                m = np.asarray(p["maps"][j], dtype=float)
                if np.isfinite(m).any():
                    im = ax.imshow(m, cmap="jet", alpha=0.5, vmin=min(lo, 0.99), vmax=1.0, interpolation="bilinear")
                    pts = p.get("points")
                    y, x = pts[j] if pts is not None else np.unravel_index(int(np.nanargmax(m)), m.shape)
                    ax.plot([x], [y], marker="*", color="white", markeredgecolor="black", markersize=7,
                            markeredgewidth=0.4)
                    if np.asarray(p["tissues"][j]).any():
                        ax.contour(np.asarray(p["tissues"][j], float), levels=[0.5], colors="white", linewidths=0.5)
                ax.set_xticks([])
                ax.set_yticks([])
                auc_v = (aucs or {}).get((b, ref), float("nan"))
                label = ref.replace("_", " ")
                ax.set_title(f"{label}: AUC {auc_v:.2f}" if np.isfinite(auc_v) else f"{label}: n/a", fontsize=7)
                if j == 0:
                    ax.set_ylabel(display_name(b, labels))
        if im is not None:
            fig.colorbar(im, ax=axes, shrink=0.6, label="cosine similarity to the reference (\u2605)")
        if title:
            fig.suptitle(title, fontsize=8)
        return fig


def similarity_grid(panels: Mapping[str, Mapping[str, np.ndarray]], references: Sequence[str],
                    aucs: Mapping[tuple[str, str], float] | None, path: str | Path, *, dpi: int | None = None,
                    **kwargs) -> list[Path]:
    """Fig. 6a (see :func:`draw_similarity_grid`), saved as ``path``.png/.pdf."""
    return _save(draw_similarity_grid(panels, references, aucs, **kwargs), path, dpi)
