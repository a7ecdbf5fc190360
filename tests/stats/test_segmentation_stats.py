"""Segmentation statistics on synthetic per-case Dice tables: all-background rows, seed means, Holm, the step."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from brainfm.atomic import write_parquet
from brainfm.stats.runners import segmentation_stats
from brainfm.stats.segmentation import ALL_BACKGROUND, read_dice, segmentation_comparison, with_all_background
from brainfm.stats.validate import StatsInputError

REGIONS = ("WT", "TC", "ET")
N_BOOT = 200


def dice_frame(seed: int = 0, n_cases: int = 30, shifts=None, benchmarks=("bratsA", "bratsB"),
               ratios=(0.1, 1.0), seeds=(0, 1)) -> pd.DataFrame:
    """Per-case Dice as the segment step writes it; each backbone shifted by ``shifts``; some cases lack ET."""
    rng = np.random.default_rng(seed)
    shifts = shifts or {"braindino": 0.0, "dinov3": -0.05, "bmmae": -0.2}
    rows = []
    for bm in benchmarks:
        gt = {r: rng.integers(0, 500, n_cases) * (rng.random(n_cases) > (0.3 if r == "ET" else 0.0))
              for r in REGIONS}
        base = {r: rng.uniform(0.4, 0.9, n_cases) for r in REGIONS}
        for backbone, shift in shifts.items():
            for ratio in ratios:
                for s in seeds:
                    for r in REGIONS:
                        d = np.clip(base[r] + shift + 0.05 * ratio + rng.normal(0, 0.05, n_cases), 0, 1)
                        for i in range(n_cases):
                            rows.append({"task": bm, "backbone": backbone, "ratio": ratio, "seed": s,
                                         "subject": f"s{i:03d}", "session": "ses-1", "case_id": f"s{i:03d}",
                                         "region": r, "dice": float(d[i]), "gt_voxels": int(gt[r][i]),
                                         "pred_voxels": 10})
    return pd.DataFrame(rows)


def test_all_background_scores_one_exactly_where_the_region_is_absent():
    frame = dice_frame()
    out = with_all_background(frame)
    bg = out[out.backbone == ALL_BACKGROUND]
    # one seed per benchmark x ratio, every case and region once
    assert len(bg) == frame.drop_duplicates(["task", "ratio", "case_id", "region"]).shape[0]
    np.testing.assert_array_equal(bg["dice"].to_numpy(), (bg["gt_voxels"] == 0).astype(float).to_numpy())
    assert (bg["pred_voxels"] == 0).all()
    with pytest.raises(StatsInputError, match="already named"):
        with_all_background(out)


def test_estimates_are_seed_means_of_case_means_and_the_floor_is_in_the_table():
    frame = dice_frame()
    tidy = segmentation_comparison(frame, "braindino", n_boot=N_BOOT)
    assert set(tidy["metric"]) == {f"dice_{r}" for r in REGIONS}
    assert set(tidy["backbone"]) == {"braindino", "dinov3", "bmmae", ALL_BACKGROUND}
    got = tidy.set_index(["task", "metric", "ratio", "backbone"])["estimate"]
    expected = (frame.groupby(["task", "region", "ratio", "backbone", "seed"])["dice"].mean()
                .groupby(["task", "region", "ratio", "backbone"]).mean())
    for (task, region, ratio, backbone), value in expected.items():
        assert got[(task, f"dice_{region}", ratio, backbone)] == pytest.approx(value)
    bg = tidy[tidy.backbone == ALL_BACKGROUND].set_index(["task", "metric", "ratio"])["estimate"]
    for (task, region, ratio), grp in frame[frame.backbone == "braindino"].groupby(["task", "region", "ratio"]):
        cases = grp.drop_duplicates("case_id")
        assert bg[(task, f"dice_{region}", ratio)] == pytest.approx((cases.gt_voxels == 0).mean())
    # a clearly worse backbone is significantly worse; the reference has no test against itself
    worse = tidy[(tidy.backbone == "bmmae")]
    assert (worse["delta"] < 0).all() and (worse["p_value"] < 0.05).all()
    assert tidy.loc[tidy.is_reference, "p_value"].isna().all()
    assert not segmentation_comparison(frame, "braindino", all_background=False, n_boot=20)["backbone"].eq(
        ALL_BACKGROUND).any()


def test_holm_adjusts_across_backbones_within_benchmark_region_ratio_as_statsmodels():
    frame = dice_frame(shifts={"braindino": 0.0, "dinov3": -0.01, "bmmae": 0.005, "brainiac": -0.03},
                       benchmarks=("bratsA",), seeds=(0,))
    tidy = segmentation_comparison(frame, "braindino", adjust="holm", n_boot=N_BOOT)
    plain = segmentation_comparison(frame, "braindino", adjust="none", n_boot=N_BOOT)
    assert plain["p_adjusted"].isna().all()
    np.testing.assert_allclose(tidy["p_value"], plain["p_value"], equal_nan=True)  # same bootstrap
    for _, grp in tidy.groupby(["task", "metric", "ratio"]):
        tested = grp[grp["p_value"].notna()]
        assert len(tested) == 4  # three backbones and the all-background floor
        expected = multipletests(tested["p_value"].to_numpy(), method="holm")[1]
        np.testing.assert_allclose(tested["p_adjusted"].to_numpy(), expected)
    with pytest.raises(StatsInputError, match="reference backbone 'nobody'"):
        segmentation_comparison(frame, "nobody", n_boot=10)


def test_step_reads_job_folders_and_writes_table_figure_and_tidy_frame(tmp_path):
    frame = dice_frame(benchmarks=("bratsA",), ratios=(0.5, 1.0), seeds=(0,), n_cases=12)
    dirs = []
    for (backbone, ratio, seed), run in frame.groupby(["backbone", "ratio", "seed"]):
        d = tmp_path / "runs" / backbone / f"ratio~{ratio:g}" / f"seed~{seed}"
        write_parquet(d / "dice.parquet", run.reset_index(drop=True))
        dirs.append(d)
    assert len(read_dice(dirs)) == len(frame)
    out, table, figure = tmp_path / "stats.parquet", tmp_path / "t" / "seg.md", tmp_path / "f" / "seg.png"
    tidy = segmentation_stats(dirs, out, table, figure, reference="braindino", n_boot=50,
                              labels={"braindino": "BrainDINO"})
    pd.testing.assert_frame_equal(pd.read_parquet(out), tidy)
    text = table.read_text()
    assert "BrainDINO" in text and "All background" in text and "Dice (ET)" in text and "±" in text
    assert all(table.with_suffix(s).is_file() for s in (".csv", ".tex"))
    assert figure.stat().st_size > 1000 and figure.with_suffix(".pdf").is_file()
    with pytest.raises(StatsInputError, match="lacks column"):
        write_parquet(tmp_path / "bad" / "dice.parquet", frame.drop(columns=["gt_voxels"]))
        read_dice([tmp_path / "bad"])
