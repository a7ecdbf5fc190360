"""Run planning and run folders: what the head, fine-tuning and statistics steps share."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from test_runner import _cohort, _spec

from brainfm.errors import InputError
from brainfm.tasks.data import assemble
from brainfm.tasks.runner import run_grid
from brainfm.tasks.runs import (
    collect_optional,
    collect_predictions,
    head_seed,
    plan_folds,
    ratio_subsets,
    run_dir,
    write_run,
)


def test_importable_without_torch():
    code = "import sys, brainfm.tasks.runs; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_written_runs_read_back_with_their_training_risks(tmp_path):
    keys, x, man = _cohort(n=60)
    data = assemble(_spec("os", kind="survival", target="survival_days"), keys, x, man)
    res = run_grid(data, backbone="toy", ratios=[0.2, 1.0], seeds=[0])
    for key, entry in res.items():
        assert write_run(tmp_path / "toy", key, entry) == run_dir(tmp_path / "toy", key.ratio, key.seed)
    assert (tmp_path / "toy" / "ratio~0.2" / "seed~0" / "metrics.json").is_file()
    order = sorted(res, key=lambda k: str(run_dir("", k.ratio, k.seed)))
    back = collect_predictions([tmp_path / "toy"])
    pd.testing.assert_frame_equal(back, pd.concat([res[k]["predictions"] for k in order], ignore_index=True))
    risks = collect_optional([tmp_path / "toy"], "train_risk.parquet")
    assert set(risks["ratio"]) == {0.2, 1.0} and np.isfinite(risks["risk"]).all()
    assert collect_optional([tmp_path / "toy"], "absent.parquet") is None
    with pytest.raises(InputError, match="no predictions.parquet files"):
        collect_predictions([tmp_path / "nothing"])


def test_ratio_subsets_do_not_depend_on_the_other_ratios_listed():
    """Fine-tuning draws with more ratios than the frozen heads: a ratio's subjects must not change."""
    keys, x, man = _cohort()
    data = assemble(_spec("dx", kind="classification", target="diagnosis", classes=["CN", "MCI", "AD"]), keys, x, man)
    fold = plan_folds(data)[0]
    for seed in (0, 1):
        few = ratio_subsets(fold, data.subject_labels, [0.2, 1.0], seed)
        many = ratio_subsets(fold, data.subject_labels, [0.1, 0.2, 0.5, 1.0], seed)
        assert few[0.2] == many[0.2] and set(many[0.1]) < set(many[0.2]) < set(many[0.5]) <= set(fold.train)
    assert ratio_subsets(fold, data.subject_labels, [0.2], 0)[0.2] != ratio_subsets(fold, data.subject_labels,
                                                                                   [0.2], 1)[0.2]


def test_head_seeds_differ_across_seeds_and_folds():
    seeds = {head_seed(s, f) for s in range(20) for f in range(10)}
    assert len(seeds) == 200
