"""Figures and tables of the benchmark, drawn from the tidy frames of the :mod:`brainfm.stats` tables."""

from brainfm.report.figures import (
    age_strata_bars,
    cka_heatmap,
    draw_age_strata_bars,
    draw_cka_heatmap,
    draw_km_grid,
    draw_knn_accuracy,
    draw_metric_vs_ratio,
    draw_perturbation_bars,
    km_grid,
    knn_accuracy,
    metric_vs_ratio,
    perturbation_bars,
)
from brainfm.report.style import backbone_color, display_name, palette, save_figure
from brainfm.report.tables import (
    comparison_table,
    format_estimate,
    format_p,
    km_summary_table,
    knn_wide_table,
    strata_wide_table,
    write_table,
)

__all__ = [
    "metric_vs_ratio", "age_strata_bars", "km_grid", "perturbation_bars", "knn_accuracy", "cka_heatmap",
    "draw_metric_vs_ratio", "draw_age_strata_bars", "draw_km_grid", "draw_perturbation_bars", "draw_knn_accuracy",
    "draw_cka_heatmap",
    "backbone_color", "palette", "display_name", "save_figure",
    "comparison_table", "knn_wide_table", "strata_wide_table", "km_summary_table", "format_estimate", "format_p",
    "write_table",
]
