"""Classical paired tests and multiplicity correction used by the paper (§4.7).

- exact McNemar: kNN accuracy of two backbones on the same queries;
- paired t-test: per-subject absolute errors (regression) and per-fold metrics (CV tasks);
- sign-flip permutation test: age-stratified brain-age errors, where strata are small and
  errors skewed, so no normality is assumed;
- Holm step-down: families of such tests (across kNN neighbourhood sizes, across backbones in
  an age stratum), :func:`holm_within` for the families of a table;
- the paper's significance marks (:func:`stars`);
- Student-t interval: the mean of a metric over cross-validation splits;
- DeLong: paired comparison of two correlated ROC AUCs (BrainIAC's test), fast midrank form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from brainfm.stats.validate import StatsInputError, as_1d, as_labels, check_same_length

__all__ = [
    "McNemarResult", "mcnemar_exact", "holm", "holm_within", "stars", "TTestResult", "paired_ttest", "SignFlipResult",
    "sign_flip_test", "TInterval", "t_interval", "DeLongResult", "delong_test",
]


@dataclass(frozen=True)
class McNemarResult:
    b: int  # A correct, B wrong
    c: int  # A wrong, B correct
    n_discordant: int
    statistic: int  # min(b, c), the binomial test statistic
    p_value: float


def _as_binary(x: Any, name: str) -> np.ndarray:
    arr = as_1d(x, name)
    if not np.all((arr == 0) | (arr == 1)):
        raise StatsInputError(f"{name} must be boolean or 0/1")
    return arr.astype(bool)


def mcnemar_exact(correct_a: Any, correct_b: Any) -> McNemarResult:
    """Exact McNemar test: two-sided binomial test of b vs c discordant pairs at p = 1/2."""
    a = _as_binary(correct_a, "correct_a")
    b_ = _as_binary(correct_b, "correct_b")
    check_same_length(correct_a=a, correct_b=b_)
    b = int(np.sum(a & ~b_))
    c = int(np.sum(~a & b_))
    n = b + c
    p = 1.0 if n == 0 else float(min(1.0, 2.0 * sps.binom.cdf(min(b, c), n, 0.5)))
    return McNemarResult(b, c, n, min(b, c), p)


def holm(p_values: Any) -> np.ndarray:
    """Holm step-down adjusted p-values (same order as input; NaN entries ignored and kept NaN).

    adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)) over the ascending p-values, so the result is
    monotone in the raw p, never below it, and at most 1.
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise StatsInputError(f"p_values must be 1-D, got shape {p.shape}")
    ok = np.isfinite(p)
    if np.any((p[ok] < 0) | (p[ok] > 1)):
        raise StatsInputError("p-values must lie in [0, 1]")
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(ok)
    m = idx.size
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="mergesort")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def holm_within(table: pd.DataFrame, family: list[str], column: str = "p_value") -> np.ndarray:
    """Holm-adjusted ``column`` of ``table``, each family (rows sharing the ``family`` columns) on its own."""
    out = np.full(len(table), np.nan)
    for rows in table.groupby(family, sort=False).indices.values():
        out[rows] = holm(table[column].to_numpy(float)[rows])
    return out


def stars(p: float) -> str:
    """Tiered significance marks of the paper: * p<.05, ** p<.01, *** p<.001 ('' otherwise or NaN)."""
    if p is None or not np.isfinite(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""


@dataclass(frozen=True)
class TTestResult:
    mean_diff: float  # mean of a - b
    statistic: float
    df: int
    p_value: float
    ci_low: float  # 95% (1 - alpha) CI of the mean difference
    ci_high: float
    n: int


def paired_ttest(err_a: Any, err_b: Any, alpha: float = 0.05) -> TTestResult:
    """Two-sided paired t-test of mean(a - b) = 0, with the t-interval of the mean difference.

    All-zero differences give t = 0, p = 1; constant non-zero differences give |t| = inf, p = 0.
    """
    a = as_1d(err_a, "err_a")
    b = as_1d(err_b, "err_b")
    n = check_same_length(err_a=a, err_b=b)
    if n < 2:
        raise StatsInputError(f"a paired t-test needs at least 2 pairs, got {n}")
    d = a - b
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    df = n - 1
    if sd == 0:
        t = 0.0 if mean == 0 else float(np.copysign(np.inf, mean))
        p = 1.0 if mean == 0 else 0.0
        return TTestResult(mean, t, df, p, mean, mean, n)
    se = sd / np.sqrt(n)
    t = mean / se
    p = float(2 * sps.t.sf(abs(t), df))
    q = sps.t.ppf(1 - alpha / 2, df)
    return TTestResult(mean, float(t), df, p, mean - q * se, mean + q * se, n)


@dataclass(frozen=True)
class SignFlipResult:
    mean_diff: float
    p_value: float
    n: int
    exact: bool  # all 2^n sign patterns enumerated
    n_perm: int  # sign patterns evaluated (2^n when exact)


def sign_flip_test(diffs: Any, n_perm: int = 10000, seed: int = 42, exact_max_n: int = 16) -> SignFlipResult:
    """Paired sign-flip permutation test of mean(diffs) = 0 (two-sided, statistic |mean|).

    Under H0 each paired difference is symmetric around 0, so flipping its sign is as likely as
    not. With n <= ``exact_max_n`` all 2^n patterns are enumerated and p = #{|mean*| >= |mean|} / 2^n;
    otherwise ``n_perm`` random patterns give p = (1 + #{|mean*| >= |mean|}) / (1 + n_perm), which
    is never zero and valid for a finite number of permutations.
    """
    d = as_1d(diffs, "diffs")
    n = d.size
    if not isinstance(n_perm, (int, np.integer)) or n_perm < 1:
        raise StatsInputError(f"n_perm must be a positive integer, got {n_perm!r}")
    obs = abs(d.mean())
    tol = 1e-12 * max(1.0, float(np.abs(d).mean()))
    if n <= exact_max_n:
        patterns = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1
        stats = np.abs(patterns @ d) / n
        count = int(np.count_nonzero(stats >= obs - tol))
        return SignFlipResult(float(d.mean()), count / 2**n, n, True, 2**n)
    rng = np.random.default_rng(seed)
    count = 0
    chunk = max(1, min(n_perm, 2_000_000 // n))
    done = 0
    while done < n_perm:
        b = min(chunk, n_perm - done)
        signs = rng.integers(0, 2, size=(b, n), dtype=np.int8) * 2 - 1
        count += int(np.count_nonzero(np.abs(signs @ d) / n >= obs - tol))
        done += b
    return SignFlipResult(float(d.mean()), (1 + count) / (1 + n_perm), n, False, int(n_perm))


@dataclass(frozen=True)
class TInterval:
    mean: float
    low: float
    high: float
    sd: float
    n: int
    df: int


def t_interval(values: Any, alpha: float = 0.05) -> TInterval:
    """Student-t interval of the mean of a few values (e.g. a metric over 5 CV splits)."""
    v = as_1d(values, "values")
    n = v.size
    if n < 2:
        raise StatsInputError(f"a t-interval needs at least 2 values, got {n}")
    if not 0 < alpha < 1:
        raise StatsInputError(f"alpha must be in (0, 1), got {alpha}")
    mean = float(v.mean())
    sd = float(v.std(ddof=1))
    half = float(sps.t.ppf(1 - alpha / 2, n - 1) * sd / np.sqrt(n))
    return TInterval(mean, mean - half, mean + half, sd, n, n - 1)


@dataclass(frozen=True)
class DeLongResult:
    auc_a: float
    auc_b: float
    delta: float  # auc_a - auc_b
    se: float  # standard error of the difference
    z: float
    p_value: float


def _midranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank, per row of a 2-D array."""
    return sps.rankdata(x, method="average", axis=1)


def delong_test(y_true: Any, score_a: Any, score_b: Any) -> DeLongResult:
    """DeLong et al. (1988) test of two correlated AUCs on the same subjects (two-sided z).

    Uses the midrank form of the structural components (Sun & Xu, 2014): for positive i the
    placement V10_i = P(score_i > negative), for negative j V01_j = P(positive > score_j); the
    AUC covariance is S10/m + S01/n.
    """
    y = as_labels(y_true)
    a = as_1d(score_a, "score_a")
    b = as_1d(score_b, "score_b")
    check_same_length(y_true=y, score_a=a, score_b=b)
    classes = np.unique(y)
    if len(classes) != 2:
        raise StatsInputError(f"DeLong needs a binary y_true, got classes {classes.tolist()}")
    pos = y == classes[1]
    m, n = int(pos.sum()), int((~pos).sum())
    scores = np.vstack([a, b])
    x, z = scores[:, pos], scores[:, ~pos]
    tz = _midranks(np.hstack([x, z]))
    tx, tzn = _midranks(x), _midranks(z)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - tzn) / m
    aucs = v10.mean(1)
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((2, 2))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((2, 2))
    cov = s10 / m + s01 / n
    var = float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    delta = float(aucs[0] - aucs[1])
    if var <= 1e-300:
        zval = 0.0 if delta == 0 else float(np.copysign(np.inf, delta))
        return DeLongResult(float(aucs[0]), float(aucs[1]), delta, 0.0, zval, 1.0 if delta == 0 else 0.0)
    se = float(np.sqrt(var))
    zval = delta / se
    return DeLongResult(float(aucs[0]), float(aucs[1]), delta, se, zval, float(2 * sps.norm.sf(abs(zval))))
