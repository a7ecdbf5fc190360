"""Supplementary-style tables from the tidy statistics frames, as CSV, Markdown and LaTeX.

Notation follows the paper (§4.7): AUC-type metrics (AUC, macro-AUC, C-index, accuracy) as
"point [low, high]" with the 95% CI; Dice and MAE as "mean ± sd"; significance against the
reference backbone as *, **, *** for p < .05/.01/.001 (Holm-adjusted where the table has
adjusted p-values). Cells are plain text; each writer escapes them for its format.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence, Set
from pathlib import Path

import numpy as np
import pandas as pd

from brainfm.atomic import atomic_open, write_text
from brainfm.report.style import display_name, metric_label, order_backbones, output_paths, ratio_label
from brainfm.stats.comparison import metric_sort_key
from brainfm.stats.predictions import DEFAULT_REFERENCE

__all__ = [
    "MEAN_SD_METRICS", "format_number", "format_p", "format_estimate", "comparison_table", "knn_wide_table", "knn_caption",
    "strata_wide_table", "km_summary_table", "to_markdown", "to_latex", "write_table",
]

MEAN_SD_METRICS = ("dice", "mae", "mse")  # reported as mean ± sd; everything else as point [CI]
MISSING = "–"
KNN_MAJORITY_ROW = "Majority class (memory set)"
KNN_MIN_CLASS_MARK = " †"
FIRST_EPOCH_MARK = " ‡"  # most of the cell's heads kept their first epoch's weights


def first_epoch_caption(share: float) -> str:
    """What :data:`FIRST_EPOCH_MARK` on a task table's cell means."""
    return (f"at least {share:.0%} of this cell's heads (seeds x folds) kept the weights of their first epoch: no "
            "later epoch lowered the validation loss, so the head barely left its initialisation (few training "
            "and validation subjects); read the estimate as an untrained head's.")


def _base(metric: str) -> str:
    return "dice" if metric.startswith("dice") else metric


def _decimals(metric: str, value: float) -> int:
    if _base(metric) in ("mae", "mse"):  # unbounded: about three significant digits
        a = abs(value) if np.isfinite(value) else 0.0
        return 0 if a >= 100 else 1 if a >= 10 else 2
    return 3


def format_number(value: float, decimals: int) -> str:
    if value is None or not np.isfinite(value):
        return MISSING
    return f"{value:.{decimals}f}"


def format_p(p: float) -> str:
    """p-value for tables: three decimals, '<0.001' below (a bootstrap p of 0 means p < 1/n_boot)."""
    if p is None or not np.isfinite(p):
        return MISSING
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def format_estimate(metric: str, estimate: float, sd: float = math.nan, low: float = math.nan,
                    high: float = math.nan, stars: str = "", decimals: int | None = None) -> str:
    """'0.850 [0.754, 0.947]**' for AUC-type metrics, '0.916 ± 0.015*' for Dice/MAE."""
    if estimate is None or not np.isfinite(estimate):
        return MISSING
    d = _decimals(metric, estimate) if decimals is None else decimals
    if _base(metric) in MEAN_SD_METRICS:
        body = f"{estimate:.{d}f} ± {sd:.{d}f}" if np.isfinite(sd) else f"{estimate:.{d}f}"
    else:
        body = f"{estimate:.{d}f} [{low:.{d}f}, {high:.{d}f}]" if np.isfinite(low) and np.isfinite(high) \
            else f"{estimate:.{d}f}"
    return body + (stars or "")


def _stars_col(df: pd.DataFrame) -> pd.Series:
    return df["stars"].fillna("") if "stars" in df.columns else pd.Series("", index=df.index)


def comparison_table(tidy: pd.DataFrame, reference: str | None = None, decimals: int | None = None,
                     labels: Mapping[str, str] | None = None,
                     marked: Set[tuple[str, float]] = frozenset()) -> pd.DataFrame:
    """Wide table of :func:`brainfm.stats.comparison.compare_predictions` output.

    One row per task x metric x backbone (reference first), one column per label ratio; cells
    carry the estimate, its uncertainty and the significance marks against the reference, and
    :data:`FIRST_EPOCH_MARK` where (backbone, ratio rounded to 6 decimals) is in ``marked``.
    """
    if tidy.empty:
        raise ValueError("empty comparison frame")
    reference = reference or (tidy["reference"].iloc[0] if "reference" in tidy.columns else DEFAULT_REFERENCE)
    ratios = sorted(tidy["ratio"].astype(float).unique())
    rows = []
    groups = sorted(tidy.groupby(["task", "metric"], sort=True), key=lambda g: (g[0][0], metric_sort_key(g[0][1])))
    for (task, metric), grp in groups:
        st = _stars_col(grp)
        for backbone in order_backbones(grp["backbone"], reference):
            row = {"Task": task, "Metric": metric_label(metric), "Backbone": display_name(backbone, labels)}
            for r in ratios:
                sel = grp[(grp["backbone"] == backbone) & np.isclose(grp["ratio"].astype(float), r)]
                if sel.empty:
                    row[ratio_label(r)] = MISSING
                    continue
                x = sel.iloc[0]
                mark = FIRST_EPOCH_MARK if (backbone, round(r, 6)) in marked else ""
                row[ratio_label(r)] = format_estimate(metric, x["estimate"], x["sd"], x["ci_low"], x["ci_high"],
                                                      st.loc[sel.index[0]], decimals) + mark
            rows.append(row)
    return pd.DataFrame(rows)


def knn_wide_table(knn: pd.DataFrame, reference: str | None = None,
                   labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """kNN accuracy per k: 'acc [low, high]' with Holm-adjusted McNemar marks vs the reference.

    Each task ends with a row of the majority-class accuracy (always predicting the memory set's
    most frequent class) under every k, and a cell is marked ``KNN_MIN_CLASS_MARK`` where k reaches
    the memory set's smallest class size (from :func:`brainfm.stats.knn.knn_table`'s columns).
    """
    reference = reference or (knn["reference"].iloc[0] if "reference" in knn.columns else DEFAULT_REFERENCE)
    ks = sorted(knn["k"].unique())
    rows = []
    for task, grp in knn.groupby("task", sort=True):
        st = _stars_col(grp)
        reaches = ({int(k): bool(v) for k, v in grp.groupby("k")["k_reaches_min_class"].first().items()}
                   if "k_reaches_min_class" in grp.columns else {})
        for backbone in order_backbones(grp["backbone"], reference):
            row = {"Task": task, "Backbone": display_name(backbone, labels)}
            for k in ks:
                sel = grp[(grp["backbone"] == backbone) & (grp["k"] == k)]
                row[f"k={k}"] = MISSING if sel.empty else format_estimate(
                    "accuracy", sel["accuracy"].iloc[0], low=sel["ci_low"].iloc[0], high=sel["ci_high"].iloc[0],
                    stars=st.loc[sel.index[0]]) + (KNN_MIN_CLASS_MARK if reaches.get(int(k)) else "")
            rows.append(row)
        if "majority_accuracy" in grp.columns:
            row = {"Task": task, "Backbone": KNN_MAJORITY_ROW}
            for k in ks:
                sel = grp[grp["k"] == k]
                row[f"k={k}"] = MISSING if sel.empty else format_number(float(sel["majority_accuracy"].iloc[0]), 3)
            rows.append(row)
    return pd.DataFrame(rows)


def knn_caption(knn: pd.DataFrame) -> str:
    """What the kNN table's extra row and marks mean, with the memory set's smallest class size."""
    sizes = (knn.groupby("task")["bank_min_class_size"].first().dropna().astype(int).to_dict()
             if "bank_min_class_size" in knn.columns else {})
    smallest = "; ".join(f"{t}: {n}" for t, n in sizes.items())
    return (f"'{KNN_MAJORITY_ROW}': accuracy of always predicting the memory set's most frequent class. "
            f"{KNN_MIN_CLASS_MARK.strip()}: k reaches the smallest class of the memory set"
            + (f" ({smallest})" if smallest else "") + ", where a vote can no longer pick that class by "
            "majority; accuracy there tends to the majority row.")


def strata_wide_table(strata: pd.DataFrame, reference: str | None = None,
                      labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Age-stratified metric per stratum with Holm-adjusted marks (Supplementary Tables 15/16 style)."""
    reference = reference or (strata["reference"].iloc[0] if "reference" in strata.columns else DEFAULT_REFERENCE)
    rows = []
    for (task, metric), grp in strata.groupby(["task", "metric"], sort=True):
        strata_labels = list(dict.fromkeys(grp.sort_values("age_low")["stratum"]))
        st = _stars_col(grp)
        for backbone in order_backbones(grp["backbone"], reference):
            row = {"Task": task, "Metric": metric_label(metric), "Backbone": display_name(backbone, labels)}
            for label in strata_labels:
                sel = grp[(grp["backbone"] == backbone) & (grp["stratum"] == label)]
                if sel.empty:
                    row[label] = MISSING
                    continue
                x = sel.iloc[0]
                row[label] = format_estimate(metric, x["estimate"], x["sd"], x["ci_low"], x["ci_high"],
                                             st.loc[sel.index[0]])
            rows.append(row)
        n_row = {"Task": task, "Metric": metric_label(metric), "Backbone": "n"}
        for label in strata_labels:
            n_row[label] = str(int(grp[grp["stratum"] == label]["n"].max()))
        rows.append(n_row)
    return pd.DataFrame(rows)


def km_summary_table(km_stats: pd.DataFrame, reference: str | None = None,
                     labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Kaplan-Meier stratification per backbone and ratio: group sizes, median survival, log-rank p."""
    rows = []
    for task, grp in km_stats.groupby("task", sort=True):
        for backbone in order_backbones(grp["backbone"], reference or DEFAULT_REFERENCE):
            for _, x in grp[grp["backbone"] == backbone].sort_values(["ratio", "seed"]).iterrows():
                rows.append({
                    "Task": task, "Backbone": display_name(backbone, labels), "Ratio": ratio_label(x["ratio"]),
                    "Seed": int(x["seed"]), "n low/high": f"{int(x['n_low'])}/{int(x['n_high'])}",
                    "Median low": _median(x["median_low"]), "Median high": _median(x["median_high"]),
                    "Log-rank χ²": format_number(x["statistic"], 2),
                    "p": format_p(x["p_value"]) + (x["stars"] if isinstance(x["stars"], str) else ""),
                })
    return pd.DataFrame(rows)


def _median(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return MISSING
    return "not reached" if math.isinf(v) else f"{v:.0f}"


# --------------------------------------------------------------------------------------------
# Writers.
# --------------------------------------------------------------------------------------------

def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("*", "\\*")


def to_markdown(df: pd.DataFrame, caption: str | None = None) -> str:
    """GitHub pipe table; stars are escaped so Markdown renders them literally."""
    cols = [str(c) for c in df.columns]
    lines = []
    if caption:
        lines += [f"**{caption}**", ""]
    lines.append("| " + " | ".join(_md_escape(c) for c in cols) + " |")
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_md_escape(_cell(v)) for v in row.tolist()) + " |")
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex_cell(text: str) -> str:
    text = str(text)
    m = re.match(r"^(.*?)(\*{1,3})$", text, flags=re.S)
    body, marks = (m.group(1), m.group(2)) if m else (text, "")
    out = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in body)
    out = (out.replace("±", r"$\pm$").replace("–", "--").replace("χ²", r"$\chi^2$").replace("<", r"$<$")
           .replace("≥", r"$\geq$"))
    return out + (f"$^{{{marks}}}$" if marks else "")


def to_latex(df: pd.DataFrame, caption: str | None = None, label: str | None = None) -> str:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    cols = [str(c) for c in df.columns]
    align = "l" * min(3, len(cols)) + "c" * max(0, len(cols) - 3)
    lines = [r"\begin{table}[ht]", r"\centering", r"\small"]
    if caption:
        lines.append(rf"\caption{{{_latex_cell(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(_latex_cell(c) for c in cols) + r" \\",
              r"\midrule"]
    for _, row in df.iterrows():
        lines.append(" & ".join(_latex_cell(_cell(v)) for v in row.tolist()) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines.append(r"\par\smallskip{\footnotesize $^{*}p<0.05$, $^{**}p<0.01$, $^{***}p<0.001$}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def _cell(v: object) -> str:
    if isinstance(v, float):
        return MISSING if math.isnan(v) else f"{v:g}"
    return str(v)


def write_table(df: pd.DataFrame, path: str | Path, caption: str | None = None, label: str | None = None,
                formats: Sequence[str] = ("csv", "md", "tex")) -> list[Path]:
    """Write ``df`` next to ``path`` (suffix replaced) as CSV, Markdown and LaTeX, each atomically."""
    written = []
    for fmt, target in zip(formats, output_paths(path, formats, (".csv", ".md", ".tex"))):
        if fmt == "csv":
            with atomic_open(target, "w") as fh:
                df.to_csv(fh, index=False)
        elif fmt == "md":
            write_text(target, to_markdown(df, caption))
        elif fmt == "tex":
            write_text(target, to_latex(df, caption, label))
        else:
            raise ValueError(f"unknown table format {fmt!r} (csv, md, tex)")
        written.append(target)
    return written
