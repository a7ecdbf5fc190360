"""The segmentation protocol: fold 0, nested label-ratio subsets, fixed validation and test cases.

* Fold 0 of nnU-Net's five-fold split of the non-test cases (``splits_final.json``, see
  :mod:`.planning`) gives the training and validation cases; the validation cases are the same
  at every ratio (the paper holds them constant). The paper's training-set sizes (e.g. BraTS2021
  n = 1000 of 1251 cases at 100%, 80%) imply that its evaluation cases *were* fold 0's
  validation cases; with a separate 20% test set, fold 0 trains on 64% of the cases. ``fold="all"``
  (nnU-Net's own: all non-test cases train) reproduces the paper's sizes with the test set
  as the evaluation cases.
* The label ratios (0.1 ... 1.0) subsample fold 0's training *subjects* with
  :func:`brainfm.data.splits.nested_ratio_subsets`: one permutation per seed, so each smaller
  subset lies inside every larger one and a curve over ratios measures more labels, not another
  sample. (The public code draws each ratio with ``random.sample`` under seed 42, which is not
  nested.)
* The held-out test cases (the manifest's test subjects) are never in a training or validation
  set, and must not have been seen in pretraining: :func:`check_pretraining_leakage`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from brainfm.data.manifest import check_disjoint
from brainfm.data.splits import check_against_pretraining, nested_ratio_subsets
from brainfm.errors import ConfigError

__all__ = ["PAPER_RATIOS", "fold_cases", "ratio_training_cases", "check_pretraining_leakage", "check_protocol"]

PAPER_RATIOS: tuple[float, ...] = (0.1, 0.2, 0.4, 0.6, 0.8, 1.0)


def fold_cases(splits_file: str | Path, fold: int | str = 0) -> tuple[list[str], list[str]]:
    """Training and validation case ids of ``fold`` from nnU-Net's ``splits_final.json``.

    ``fold="all"`` is nnU-Net's own: every training case trains, and the same cases serve its
    per-epoch pseudo-Dice (nothing is selected on it: the final weights are evaluated).
    """
    path = Path(splits_file)
    if not path.is_file():
        raise ConfigError(f"{path}: no nnU-Net split file; prepare the benchmark first")
    splits = json.loads(path.read_text())
    if fold == "all":
        every = sorted({c for f in splits for part in ("train", "val") for c in f[part]})
        return every, every
    if not isinstance(fold, int) or not 0 <= fold < len(splits):
        raise ConfigError(f"{path}: fold {fold} requested, the file has {len(splits)}")
    return sorted(splits[fold]["train"]), sorted(splits[fold]["val"])


def ratio_training_cases(cases: pd.DataFrame, fold_train: Sequence[str], ratios: Iterable[float],
                         seed: int) -> dict[float, list[str]]:
    """Nested, seeded subsets of ``fold_train`` per ratio, drawn over subjects and expanded to cases."""
    table = cases.set_index("case_id")
    missing = sorted(set(fold_train) - set(table.index))
    if missing:
        raise ConfigError(f"fold cases not in the dataset's case table: {missing[:5]}")
    subject_of = table.loc[list(fold_train), "subject"].astype(str)
    subsets = nested_ratio_subsets(sorted(set(subject_of)), None, ratios, seed)
    return {r: sorted(subject_of[subject_of.isin(set(s))].index) for r, s in subsets.items()}


def check_pretraining_leakage(test_subjects: Iterable[str], pretrain_subjects: Iterable[str] | None,
                              benchmark: str) -> None:
    """Raise :class:`~brainfm.errors.LeakageError` if a test subject was in the pretraining corpus."""
    if pretrain_subjects is not None:
        check_against_pretraining(test_subjects, pretrain_subjects, f"segmentation/{benchmark}")


def check_protocol(cases: pd.DataFrame, train: Sequence[str], val: Sequence[str], *, separate_val: bool = True) -> None:
    """Test subjects never in training or validation; training and validation disjoint when ``separate_val``."""
    table = cases.set_index("case_id")
    test_subjects = set(table.loc[table["split"] == "test", "subject"].astype(str))
    tr = set(table.loc[list(train), "subject"].astype(str))
    va = set(table.loc[list(val), "subject"].astype(str))
    check_disjoint(tr, test_subjects, "segmentation: training and test subjects")
    check_disjoint(va, test_subjects, "segmentation: validation and test subjects")
    if separate_val:
        check_disjoint(tr, va, "segmentation: training and validation subjects")
