"""Statistics of the benchmark: metrics, bootstrap intervals, paired tests, survival analysis.

Plain arrays in, small frozen dataclasses with named fields out. The paper's tables are built
from ``predictions.parquet`` files, one module per table family on a shared base:
:mod:`~brainfm.stats.predictions` (the contract, reading, aligning runs on the same items),
:mod:`~brainfm.stats.comparison` (main table, Dice), :mod:`~brainfm.stats.knn`,
:mod:`~brainfm.stats.strata` (age strata), :mod:`~brainfm.stats.km` (Kaplan-Meier); the
workflow's statistics steps that write them are in :mod:`~brainfm.stats.runners`.
"""

from brainfm.stats.bootstrap import (
    BootstrapCI,
    PairedBootstrap,
    Resampler,
    bootstrap_ci,
    bootstrap_distributions,
    bootstrap_p_value,
    paired_bootstrap,
    percentile_ci,
)
from brainfm.stats.hypothesis import (
    DeLongResult,
    McNemarResult,
    SignFlipResult,
    TInterval,
    TTestResult,
    delong_test,
    holm,
    mcnemar_exact,
    paired_ttest,
    sign_flip_test,
    t_interval,
)
from brainfm.stats.metrics import (
    METRICS,
    MetricInfo,
    accuracy,
    auc,
    balanced_accuracy,
    davies_bouldin,
    dice,
    mae,
    metric_info,
    mse,
)
from brainfm.stats.survival import (
    KMStratification,
    LogRankResult,
    cindex,
    km_groups,
    km_risk_stratification,
    logrank,
)
from brainfm.stats.validate import StatsInputError

__all__ = [
    "StatsInputError",
    "auc", "accuracy", "balanced_accuracy", "mae", "mse", "dice", "davies_bouldin", "cindex",
    "METRICS", "MetricInfo", "metric_info",
    "bootstrap_ci", "paired_bootstrap", "bootstrap_distributions", "percentile_ci", "bootstrap_p_value",
    "Resampler", "BootstrapCI", "PairedBootstrap",
    "mcnemar_exact", "McNemarResult", "holm", "paired_ttest", "TTestResult", "sign_flip_test", "SignFlipResult",
    "t_interval", "TInterval", "delong_test", "DeLongResult",
    "logrank", "LogRankResult", "km_risk_stratification", "km_groups", "KMStratification",
]
