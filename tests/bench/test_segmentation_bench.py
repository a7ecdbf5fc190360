"""The segmentation benchmark: FLOPs of a training step against an analytic count; the CPU demo run."""

from __future__ import annotations

import json

import pytest
from torch import nn

from brainfm.bench.extraction import analytic_vit_flops
from brainfm.bench.segmentation import DEMO_VIT, bench_cuda_paper, bench_segmentation


def _decoder_forward_flops(decoder: nn.Module, grid: int) -> int:
    """Transposed convs (k2, s2) and the 1x1 head, multiply-add = 2 FLOPs."""
    flops, size = 0, grid
    for mod in decoder.modules():
        if isinstance(mod, nn.ConvTranspose2d):
            size *= 2
            flops += 2 * size * size * mod.in_channels * mod.out_channels
        elif isinstance(mod, nn.Conv2d):
            flops += 2 * size * size * mod.in_channels * mod.out_channels
    return flops


def test_training_step_flops_match_an_analytic_count():
    """Step = decoder fwd + bwd (3x its forward) + frozen ViT fwd + input-gradient bwd (about 2x its forward)."""
    from brainfm.segmentation.network import build_network

    kw = {k: v for k, v in DEMO_VIT.items() if k != "img_size"}
    run = bench_cuda_paper(batch=2, img=48, iters=1, warmup=0, device="cpu", encoder_kwargs=kw)
    net = build_network(4, 3, encoder="vit_random", encoder_kwargs={**kw, "img_size": 48})
    analytic = 3 * _decoder_forward_flops(net.decoder, 48 // 8) + 2 * analytic_vit_flops(net.encoder.model, 48)
    assert run["tflop_per_iter"] * 1e12 / 2 == pytest.approx(analytic, rel=0.05)
    assert run["train_images_per_s"] == pytest.approx(2 * run["train_iterations_per_s"])
    assert run["parameters"]["trainable"] == sum(p.numel() for p in net.parameters() if p.requires_grad)


@pytest.mark.slow
def test_cpu_demo_benchmark_reports_throughput(tmp_path):
    rep = bench_segmentation(tmp_path / "seg.json", work_dir=tmp_path,
                             cpu={"n_subjects": 10, "iters": 2, "warmup": 1, "batch_size": 4})
    run = rep["runs"][0]
    assert run["device"] == "cpu" and run["train_iterations_per_s"] > 0 and run["inference_cases_per_min"] > 0
    assert run["test_cases"] == 2
    assert json.loads((tmp_path / "seg.json").read_text())["runs"][0]["what"].startswith("demo ViT")
