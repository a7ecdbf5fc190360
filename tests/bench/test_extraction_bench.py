"""The extraction benchmark on small ViTs: FLOPs cross-checked, throughput ordered by cost, ratios sane."""

from __future__ import annotations

import torch
from bench_schema import NUMBER, OPTIONAL_LIST, check_schema, read_report

from brainfm.bench.extraction import analytic_vit_flops, count_flops, run
from brainfm.models.vit import build_slice_encoder

RESULT = {"arch": str, "dtype": str, "params_m": NUMBER, "flops_per_slice": int, "flops_per_slice_analytic": int,
          "gflops_per_slice": NUMBER, "flops_by_op": dict, "seconds_per_batch": [NUMBER], "slices_per_s": NUMBER,
          "achieved_gflops": NUMBER, "roofline_gflops": NUMBER, "fraction_of_roofline": NUMBER}
SCHEMA = {"device": str, "device_name": str, "threads": int, "torch": str, "img_size": int, "batch_size": int,
          "warmup": int, "iters": int, "overrides": dict, "loadavg_before": OPTIONAL_LIST, "what": str,
          "roofline": dict, "results": [RESULT],
          "pipeline": {"arch": str, "dtype": str, "volumes": int, "slices_per_volume": int, "slices_per_s": NUMBER,
                       "bare_forward_slices_per_s": NUMBER, "efficiency": NUMBER},
          "loadavg_after": OPTIONAL_LIST, "total_seconds": NUMBER}

SMALL = {"embed_dim": 32, "depth": 1, "num_heads": 2}
LARGE = {"embed_dim": 384, "depth": 3, "num_heads": 6}


def _bench(out, overrides, **kw):
    args = dict(device="cpu", threads=1, archs=["vit_small_patch16_dinov3"], dtypes=["fp32"], img_size=96,
                batch_size=8, warmup=1, iters=3, roofline_n=1024, roofline_iters=3, overrides=overrides,
                pipeline_volumes=0)
    return run(out, **{**args, **kw})


def test_flop_counter_agrees_with_analytic_count():
    for arch, size, kw in (("vit_small_patch16_dinov3", 64, dict(embed_dim=64, depth=2, num_heads=2)),
                           ("vit_small_patch14_dinov2", 56, dict(embed_dim=48, depth=1, num_heads=3))):
        enc = build_slice_encoder(arch, img_size=size, arch_overrides=kw).freeze()
        counted = count_flops(enc, torch.randn(1, 3, size, size))
        assert counted["total"] == analytic_vit_flops(enc.model, size)
        assert any("attention" in op for op in counted["by_op"])  # attention is counted, not skipped


def test_report_schema_on_disk_and_threads_restored(tmp_path):
    threads_before = torch.get_num_threads()
    rep = run(tmp_path, device="cpu", threads=1, archs=["vit_small_patch16_dinov3"], img_size=32, batch_size=2,
              warmup=1, iters=2, roofline_n=64, roofline_iters=2, overrides=SMALL)
    on_disk = read_report(tmp_path / "extraction.json")
    check_schema(on_disk, SCHEMA)
    assert on_disk["results"] == rep["results"] and set(on_disk["roofline"]) == {"fp32", "bf16"}
    assert [r["dtype"] for r in rep["results"]] == ["fp32", "bf16"] and rep["device"] == "cpu"
    assert rep["pipeline"]["volumes"] == 2 and rep["pipeline"]["slices_per_volume"] == 2
    assert rep["threads"] == 1 and torch.get_num_threads() == threads_before


def test_costlier_model_counts_more_flops_and_reports_its_roofline_fraction(tmp_path):
    small = _bench(tmp_path / "small", SMALL)["results"][0]
    large = _bench(tmp_path / "large", LARGE)["results"][0]
    assert large["flops_per_slice"] > 50 * small["flops_per_slice"]
    # speed itself is a `make bench` figure, not a test: only the fraction's presence and sign are checked here
    for r in (small, large):
        assert r["fraction_of_roofline"] > 0
