"""The SSL training-throughput benchmark: a real DINO run on a synthetic slice store, FLOPs from the model."""

from __future__ import annotations

import json

import pytest

from brainfm.bench import suite


def test_pretrain_bench_writes_throughput_and_consistent_flops(tmp_path, monkeypatch):
    small = {**suite.DEMO_DINO, "batch_size": 4, "n_prototypes": 64, "head_hidden": 64, "head_bottleneck": 32}
    monkeypatch.setattr(suite, "DEMO_DINO", small)
    report = suite.bench_pretrain(tmp_path / "pretrain.json", n_iters=2)
    run = report["runs"][0]
    assert run["device"] == "cpu" and run["img_per_s"] > 0 and run["batch_size"] == 4
    assert run["s_per_iter"] == pytest.approx(4 / run["img_per_s"])
    # FLOPs scale with the batch: the same model at batch 8 costs twice as much per iteration
    cfg = {k: small[k] for k in ("arch", "arch_overrides", "global_size", "local_size", "n_local")}
    assert suite._dino_step_flops({**cfg, "batch_size": 8}) == pytest.approx(2 * suite._dino_step_flops({**cfg, "batch_size": 4}))
    assert run["tflop_per_iter"] == pytest.approx(suite._dino_step_flops({**cfg, "batch_size": 4}) / 1e12)
    assert json.loads((tmp_path / "pretrain.json").read_text())["runs"][0]["what"].startswith("demo ViT")
