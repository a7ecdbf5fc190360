"""The extraction benchmark's bookkeeping, on a tiny ViT (the real run is `python -m brainfm.bench.extraction`)."""

from __future__ import annotations

import json
import statistics

import pytest
import torch

from brainfm.bench.extraction import analytic_vit_flops, count_flops, matmul_roofline, run
from brainfm.models.vit import build_slice_encoder


def test_flop_counter_agrees_with_analytic_count():
    for arch, size, kw in (("vit_small_patch16_dinov3", 64, dict(embed_dim=64, depth=2, num_heads=2)),
                           ("vit_small_patch14_dinov2", 56, dict(embed_dim=48, depth=1, num_heads=3))):
        enc = build_slice_encoder(arch, img_size=size, arch_overrides=kw).freeze()
        counted = count_flops(enc, torch.randn(1, 3, size, size))
        assert counted["total"] == analytic_vit_flops(enc.model, size)
        assert any("attention" in op for op in counted["by_op"])  # attention is counted, not skipped


def test_matmul_roofline_reports_gflops():
    r = matmul_roofline(torch.device("cpu"), 128, torch.float32, iters=3)
    assert len(r["seconds"]) == 3 and r["gflops"] == pytest.approx(2 * 128**3 / statistics.median(r["seconds"]) / 1e9)


def test_run_writes_consistent_report(tmp_path):
    threads_before = torch.get_num_threads()
    rep = run(tmp_path, device="cpu", threads=1, archs=["vit_small_patch16_dinov3"], img_size=32, batch_size=2,
              warmup=1, iters=2, roofline_n=64, roofline_iters=2,
              overrides={"embed_dim": 64, "depth": 1, "num_heads": 2})
    on_disk = json.loads((tmp_path / "extraction.json").read_text())
    assert on_disk["results"] == rep["results"] and set(on_disk["roofline"]) == {"fp32", "bf16"}
    assert [r["dtype"] for r in rep["results"]] == ["fp32", "bf16"] and rep["device"] == "cpu"
    for r in rep["results"]:
        assert r["flops_per_slice"] == r["flops_per_slice_analytic"] > 0
        sps = 2 / statistics.median(r["seconds_per_batch"])
        assert r["slices_per_s"] == pytest.approx(sps, rel=1e-3)
        assert r["achieved_gflops"] == pytest.approx(r["flops_per_slice"] / 1e9 * r["slices_per_s"], rel=1e-3)
        assert r["fraction_of_roofline"] == pytest.approx(r["achieved_gflops"] / r["roofline_gflops"], rel=1e-3)
    assert rep["threads"] == 1 and torch.get_num_threads() == threads_before  # restored afterwards
    pl = rep["pipeline"]
    assert pl["dtype"] == "bf16" and pl["volumes"] == 2 and pl["slices_per_s"] > 0
    assert pl["efficiency"] == pytest.approx(pl["slices_per_s"] / pl["bare_forward_slices_per_s"], rel=1e-3)
