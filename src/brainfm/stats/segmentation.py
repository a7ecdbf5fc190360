"""Segmentation statistics (Fig. 3a, Supplementary Table 7): per-case region Dice of every job.

Input: the ``dice.parquet`` of each training job (one row per test case and region, see
:mod:`brainfm.segmentation.job`). Per benchmark x region x ratio, every backbone's mean Dice
(seeds averaged) is compared with the reference backbone's on the same test cases by a paired
bootstrap of the cases (:func:`brainfm.stats.comparison.compare_dice`), as the paper does
(§4.7, without a multiplicity adjustment; ``adjust="holm"`` adjusts across backbones within a
benchmark x region x ratio).

An all-background prediction is added as a pseudo-backbone (:data:`ALL_BACKGROUND`): its Dice is
1 for a case without the region and 0 otherwise, the floor every trained model must beat.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from brainfm.stats.comparison import compare_dice
from brainfm.stats.validate import StatsInputError

__all__ = ["ALL_BACKGROUND", "DICE_COLUMNS", "read_dice", "with_all_background", "segmentation_comparison"]

ALL_BACKGROUND = "all_background"
DICE_COLUMNS = ["task", "backbone", "ratio", "seed", "subject", "session", "case_id", "region", "dice", "gt_voxels"]


def read_dice(run_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """The per-case Dice tables of the given job folders (or ``dice.parquet`` files), concatenated."""
    frames = []
    for d in run_dirs:
        path = Path(d) / "dice.parquet" if Path(d).is_dir() else Path(d)
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:
            raise StatsInputError(f"{path}: cannot read a segmentation Dice table ({exc})") from exc
        missing = [c for c in DICE_COLUMNS if c not in frame.columns]
        if missing:
            raise StatsInputError(f"{path}: Dice table lacks column(s) {missing}")
        frames.append(frame)
    if not frames:
        raise StatsInputError("no segmentation Dice tables given")
    return pd.concat(frames, ignore_index=True)


def with_all_background(frame: pd.DataFrame, name: str = ALL_BACKGROUND) -> pd.DataFrame:
    """``frame`` plus the all-background prediction's rows (one seed) for every benchmark x ratio."""
    if name in set(frame["backbone"]):
        raise StatsInputError(f"a backbone is already named {name!r}")
    cases = frame.drop_duplicates(["task", "ratio", "case_id", "region"]).copy()
    cases["backbone"] = name
    cases["seed"] = int(frame["seed"].min())
    cases["dice"] = (cases["gt_voxels"] == 0).astype(float)
    if "pred_voxels" in cases.columns:
        cases["pred_voxels"] = 0
    return pd.concat([frame, cases], ignore_index=True)


def segmentation_comparison(frame: pd.DataFrame, reference: str, *, all_background: bool = True,
                            adjust: str | None = None, n_boot: int = 2000, seed: int = 42,
                            alpha: float = 0.05) -> pd.DataFrame:
    """Tidy comparison (``COMPARISON_COLUMNS``; metric ``dice_<region>``, task = benchmark).

    ``adjust``: None/"none" (paper) or "holm" across backbones within benchmark x region x ratio.
    """
    if reference not in set(frame["backbone"]):
        raise StatsInputError(f"reference backbone {reference!r} has no segmentation results "
                              f"(backbones: {sorted(frame['backbone'].unique())})")
    data = with_all_background(frame) if all_background else frame
    return compare_dice(data, reference, n_boot=n_boot, seed=seed, alpha=alpha,
                        adjust=None if adjust in (None, "none") else adjust)
