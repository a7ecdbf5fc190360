"""Statistics of the benchmark: metrics, bootstrap intervals, paired tests, survival analysis.

Plain arrays in, small frozen dataclasses with named fields out. Comparison tables built from
``predictions.parquet`` files live in :mod:`brainfm.stats.compare`; the benchmark of the
vectorised bootstrap in :mod:`brainfm.stats.bench`.
"""

from brainfm.stats._validate import StatsInputError
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
