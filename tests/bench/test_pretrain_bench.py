"""The SSL training-throughput benchmark: a real DINO run on a synthetic slice store, ordered by model cost."""

from __future__ import annotations

from bench_schema import MACHINE, NUMBER, check_schema, read_report

from brainfm.bench import pretrain

RUN = {"what": str, "device": str, "img_per_s": NUMBER, "s_per_iter": NUMBER, "crops_per_s": NUMBER,
       "batch_size": int, "iters_timed": int, "torch_threads": int, "tflop_per_iter": NUMBER,
       "achieved_tflops": NUMBER}
SCHEMA = {"machine": MACHINE, "runs": [RUN]}

HEADS = {"batch_size": 4, "n_prototypes": 64, "head_hidden": 64, "head_bottleneck": 32}
SMALL = {**pretrain.DEMO_DINO, **HEADS,
         "arch_overrides": {**pretrain.DEMO_DINO["arch_overrides"], "embed_dim": 48, "depth": 1, "num_heads": 3}}
LARGE = {**pretrain.DEMO_DINO, **HEADS,
         "arch_overrides": {**pretrain.DEMO_DINO["arch_overrides"], "embed_dim": 384, "depth": 4, "num_heads": 6}}


def test_report_schema_and_costlier_model_counts_more_flops(tmp_path):
    small = pretrain.run(tmp_path / "small", n_iters=2, demo=SMALL)
    large = pretrain.run(tmp_path / "large", n_iters=2, demo=LARGE)
    on_disk = read_report(tmp_path / "small" / "pretrain.json")
    check_schema(on_disk, SCHEMA)
    assert on_disk["runs"] == small["runs"] and on_disk["runs"][0]["device"] == "cpu"
    s, lg = small["runs"][0], large["runs"][0]
    assert s["batch_size"] == lg["batch_size"] == 4 and s["iters_timed"] == 2
    assert lg["tflop_per_iter"] > 20 * s["tflop_per_iter"]
