"""Subject-disjoint splits, nested label-ratio subsets and leakage checks.

Every partition here is made over *subjects*, never over images, so the longitudinal visits and
the several modalities of one subject always travel together. The label-ratio subsets are
nested (the 10% subset is inside the 20% subset, and so on) and stratified, so a curve over
ratios measures the effect of more labels rather than of a different sample.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from brainfm.data.manifest import check_disjoint
from brainfm.errors import ConfigError, LeakageError

__all__ = [
    "Fold",
    "subject_table",
    "holdout_split",
    "cv_folds",
    "validation_split",
    "VALIDATION_MODES",
    "nested_ratio_subsets",
    "check_against_pretraining",
    "stratum_labels",
]


@dataclass(frozen=True)
class Fold:
    """One train/val/test partition of subject ids (plus the fold number for CV).

    ``val_in_train`` marks the ``separate`` validation mode: the validation subjects are a fixed
    draw that stays inside the counted training set (so the heads train on the paper's n), and
    only train/test and validation/test must be disjoint.
    """

    fold: int
    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    val_in_train: bool = False

    def check(self) -> None:
        check_disjoint(self.train, self.test, f"fold {self.fold}: train and test")
        if not self.val_in_train:
            check_disjoint(self.train, self.val, f"fold {self.fold}: train and validation")
        check_disjoint(self.val, self.test, f"fold {self.fold}: validation and test")


def subject_table(df: pd.DataFrame, stratify: str | None) -> pd.DataFrame:
    """One row per subject with its fixed split and (optional) stratification label.

    A subject whose label differs across its rows cannot be stratified consistently; the most
    frequent label is used (ADNI diagnosis is essentially constant per subject).
    """
    cols = {"split": ("split", "first")}
    if stratify:
        if stratify not in df.columns:
            raise ConfigError(f"stratification column '{stratify}' is not in the manifest")
        cols["strat"] = (stratify, lambda s: s.mode().iloc[0] if s.notna().any() else np.nan)
    out = df.groupby("subject", sort=True).agg(**cols).reset_index()
    return out


def _stratified_permutation(labels: np.ndarray | None, n: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation interleaving classes so every prefix is (nearly) stratified."""
    if labels is None:
        return rng.permutation(n)
    keys = np.empty(n)
    for value in pd.unique(labels):
        idx = np.flatnonzero(labels == value)
        order = rng.permutation(len(idx))
        # position within class scaled to [0, 1): prefixes take each class proportionally
        keys[idx[order]] = (np.arange(len(idx)) + rng.random()) / len(idx)
    return np.argsort(keys, kind="stable")


def holdout_split(subjects: pd.DataFrame, test_fraction: float, seed: int,
                  n_test: int | None = None) -> tuple[list[str], list[str]]:
    """Split subjects into train/test, honouring a fixed ``split`` column where it is set.

    ``n_test`` (a count, e.g. the paper's 240 ABIDE test subjects) replaces ``test_fraction`` of
    the free subjects when given, so a cohort of the paper's size gets the paper's split sizes.
    """
    fixed_train = subjects.loc[subjects["split"] == "train", "subject"].tolist()
    fixed_test = subjects.loc[subjects["split"] == "test", "subject"].tolist()
    free = subjects[~subjects["split"].isin(["train", "test"])]
    if len(free):
        rng = np.random.default_rng(seed)
        labels = free["strat"].to_numpy() if "strat" in free.columns else None
        order = _stratified_permutation(labels, len(free), rng)
        n_test = int(round(test_fraction * len(free))) if n_test is None else min(int(n_test), len(free) - 1)
        ids = free["subject"].to_numpy()[order]
        fixed_test += ids[:n_test].tolist()
        fixed_train += ids[n_test:].tolist()
    return sorted(fixed_train), sorted(fixed_test)


VALIDATION_MODES = ("carve_out", "separate")


def validation_split(train: Sequence[str], labels: pd.Series | None, fraction: float,
                     seed: int, mode: str = "carve_out") -> tuple[list[str], list[str]]:
    """A fixed, stratified validation set drawn from the training subjects.

    It is drawn once per fold and kept constant across label ratios, as in the paper.
    ``carve_out`` removes it from the training subjects (every ratio's n shrinks by it);
    ``separate`` leaves the training subjects whole, so the counted training set at each ratio is
    the paper's n. The paper's cohorts are exactly train + test (ABIDE 956 + 240 = 1196), so the
    public code's separate ``valid.csv`` cannot be disjoint from both; ``separate`` keeps the test
    set untouched and lets validation subjects also be training subjects.
    """
    if mode not in VALIDATION_MODES:
        raise ConfigError(f"validation mode {mode!r} is not one of {VALIDATION_MODES}")
    train = list(train)
    if fraction <= 0:
        return train, []
    rng = np.random.default_rng(seed)
    lab = labels.reindex(train).to_numpy() if labels is not None else None
    order = _stratified_permutation(lab, len(train), rng)
    n_val = max(1, int(round(fraction * len(train))))
    ids = np.asarray(train)[order]
    kept = ids if mode == "separate" else ids[n_val:]
    return sorted(kept.tolist()), sorted(ids[:n_val].tolist())


def cv_folds(subjects: pd.DataFrame, n_splits: int, seed: int, val_fraction: float,
             validation: str = "carve_out") -> list[Fold]:
    """Subject-disjoint stratified K-fold (all visits of a subject in one fold)."""
    labels = subjects["strat"].astype(str).to_numpy() if "strat" in subjects.columns else np.zeros(len(subjects))
    ids = subjects["subject"].to_numpy()
    from sklearn.model_selection import StratifiedGroupKFold  # lazy: statistics jobs read splits, never fit them

    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    folds = []
    strat = subjects.set_index("subject")["strat"] if "strat" in subjects.columns else None
    for k, (tr, te) in enumerate(splitter.split(ids, labels, groups=ids)):
        train, val = validation_split(ids[tr], strat, val_fraction, seed + 1000 + k, validation)
        fold = Fold(k, tuple(train), tuple(val), tuple(sorted(ids[te])), validation == "separate")
        fold.check()
        folds.append(fold)
    return folds


def nested_ratio_subsets(train: Sequence[str], labels: pd.Series | None, ratios: Iterable[float],
                         seed: int, min_per_class: int = 1) -> dict[float, list[str]]:
    """Nested, stratified subsets of the training subjects for each label ratio.

    One stratified permutation per seed; ratio ``r`` takes ``ceil(r * n)`` subjects per class from
    its front, so smaller subsets are always contained in larger ones. A class that would vanish
    at a low ratio keeps ``min_per_class`` subjects (the paper's heads need every class present),
    and a class with fewer training subjects than that is an error.
    """
    train = np.asarray(sorted(train))
    rng = np.random.default_rng(seed)
    if labels is None:
        order = rng.permutation(len(train))
        ranked = train[order]
        return {float(r): sorted(ranked[: max(1, math.ceil(r * len(train)))].tolist()) for r in sorted(ratios)}
    lab = labels.reindex(train)
    if lab.isna().any():
        raise ConfigError(f"{int(lab.isna().sum())} training subject(s) lack the stratification label")
    per_class = {}
    for value in sorted(pd.unique(lab.to_numpy()), key=str):
        members = train[lab.to_numpy() == value]
        if len(members) < min_per_class:
            raise ConfigError(f"class {value!r} has {len(members)} training subject(s); need {min_per_class}")
        per_class[value] = members[rng.permutation(len(members))]
    out: dict[float, list[str]] = {}
    for r in sorted(ratios):
        if not 0 < r <= 1:
            raise ConfigError(f"ratio {r} must be in (0, 1]")
        chosen = []
        for members in per_class.values():
            k = max(min_per_class, math.ceil(r * len(members) - 1e-9))
            chosen.extend(members[:k].tolist())
        out[float(r)] = sorted(chosen)
    return out


def check_against_pretraining(test_subjects: Iterable[str], pretrain_subjects: Iterable[str], task: str) -> None:
    """No test subject of a downstream task may have been seen during pretraining."""
    shared = set(map(str, test_subjects)) & set(map(str, pretrain_subjects))
    if shared:
        raise LeakageError(f"task {task}: test subjects also in the pretraining corpus", shared)


def stratum_labels(values: np.ndarray, edges: Sequence[float], labels: Sequence[str] | None = None) -> np.ndarray:
    """Bin values into left-closed strata given inner/outer edges (e.g. ages 55, 65, 75, 85, inf)."""
    edges = list(edges)
    if labels is None:
        labels = [f"{edges[i]:g}-{edges[i + 1] - 1:g}" if np.isfinite(edges[i + 1]) else f"{edges[i]:g}+"
                  for i in range(len(edges) - 1)]
    cat = pd.cut(values, bins=edges, right=False, labels=labels)
    return np.asarray(cat.astype(object))
