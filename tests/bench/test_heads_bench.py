"""The head-grid benchmark: real heads on synthetic features, a report of the grid's size and cost."""

from __future__ import annotations

import numpy as np
from bench_schema import MACHINE, NUMBER, check_schema, read_report

from brainfm.bench import heads

SCHEMA = {"what": str, "n_subjects": int, "n_heads": int, "head": dict, "seconds_total": NUMBER,
          "target_seconds": NUMBER, "per_backbone": [{"dim": int, "seconds": NUMBER, "mae_at_1.0": NUMBER}],
          "machine": MACHINE}


def test_report_schema_and_heads_learn_the_signal(tmp_path):
    head = {"lr": 1e-2, "batch_size": 16, "max_epochs": 30, "patience": 5}
    report = heads.run(tmp_path, n_subjects=80, dims=(8, 16), ratios=(0.5, 1.0), seeds=(0, 1), head=head)
    on_disk = read_report(tmp_path / "heads.json")
    check_schema(on_disk, SCHEMA)
    assert on_disk["n_heads"] == 2 * 2 * 2 and [b["dim"] for b in on_disk["per_backbone"]] == [8, 16]
    assert on_disk["seconds_total"] >= sum(b["seconds"] for b in on_disk["per_backbone"])
    # ages are uniform on [6, 90] (MAE of the mean predictor: 21 years); the features carry them linearly
    assert all(np.isfinite(b["mae_at_1.0"]) and b["mae_at_1.0"] < 15 for b in report["per_backbone"])
