"""Benchmark of self-supervised training: DINO images/s (all crops, forward + backward + EMA).

The demo model on this machine's CPU and, where CUDA is available, the paper's ViT-B/16 stage 1
with a model-FLOP-utilisation estimate (backbone FLOPs counted analytically, projection heads
not counted). Both train on a synthetic slice store. Writes ``<out_dir>/pretrain.json``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from brainfm.atomic import write_json
from brainfm.bench.measure import machine_info

__all__ = ["DEMO_DINO", "dino_step_flops", "time_dino_steps", "run", "headline"]

#: the demo's BrainDINO model and crops (config/config.yaml, pretrain.braindino.params)
DEMO_DINO = {"arch": "vit_small_patch16_dinov3",
             "arch_overrides": {"embed_dim": 192, "depth": 4, "num_heads": 3, "patch_size": 8, "init_values": 1.0},
             "global_size": 48, "local_size": 24, "n_local": 4, "n_prototypes": 1024, "head_hidden": 512,
             "head_bottleneck": 128, "batch_size": 16, "lr": 5e-4, "lr_scaling": "none", "centering": "softmax",
             "momentum": 0.95, "num_workers": 0}


def _slice_store(path: Path, size: int, n: int = 256, seed: int = 0) -> Path:
    """A slice store of ``n`` synthetic brain-like slices (ellipse + noise) for throughput runs."""
    from brainfm.preprocess.store import ShardWriter

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    with ShardWriter(path, (size, size), "slice", {"bench": "synthetic"}, shard_size=128) as w:
        for i in range(n):
            a, b = rng.uniform(0.3, 0.45, 2)
            img = ((yy / a) ** 2 + (xx / b) ** 2 < 1) * rng.uniform(0.5, 2.0) + 0.2 * rng.standard_normal((size, size))
            w.add({"dataset": "bench", "subject": f"s{i}", "session": "0", "modality": "T1", "slice": i},
                  img.astype(np.float32))
    return path


def dino_step_flops(cfg: dict[str, Any]) -> float:
    """Backbone FLOPs of one DINO iteration: student forward+backward (3x forward) on every crop plus the
    teacher's forward on the global crops (projection heads not counted)."""
    from brainfm.bench.extraction import analytic_vit_flops
    from brainfm.models.vit import build_slice_encoder

    g, l_, nl, b = cfg["global_size"], cfg["local_size"], cfg["n_local"], cfg["batch_size"]
    vit = build_slice_encoder(cfg["arch"], img_size=g, arch_overrides=dict(cfg.get("arch_overrides") or {})).model
    fg, fl = analytic_vit_flops(vit, g), analytic_vit_flops(vit, l_)
    student = 3 * (2 * fg + nl * fl)
    teacher = 2 * fg
    return float(b * (student + teacher))


def time_dino_steps(params: dict[str, Any], source, n_iters: int = 8, warmup: int = 2, device: str = "cpu",
                    precision: str = "auto") -> dict[str, Any]:
    """Training throughput of a DINO config: slices/s and s/iteration over ``n_iters`` timed iterations
    (after ``warmup``), including data loading, forward, backward, optimizer and EMA steps."""
    import torch

    from brainfm.ssl.config import DinoConfig
    from brainfm.ssl.dino import run_dino_stage
    from brainfm.device import resolve_precision
    from brainfm.ssl.distributed import init_distributed

    total = warmup + n_iters
    cfg = DinoConfig.from_dict({**params, "iters": total, "warmup_iters": min(params.get("warmup_iters", 1), total),
                                "checkpoint_every": 10**9, "log_every": 10**9})
    env = init_distributed(device, resolve_precision(precision, device))
    with tempfile.TemporaryDirectory() as tmp:
        _, res = run_dino_stage(cfg, source, Path(tmp), env)
    crops = 2 + cfg.n_local
    return {"img_per_s": res.img_per_s, "s_per_iter": cfg.batch_size * env.world_size / res.img_per_s,
            "crops_per_s": res.img_per_s * crops, "batch_size": cfg.batch_size, "iters_timed": n_iters,
            "torch_threads": torch.get_num_threads(), "precision": env.precision}


def run(out_dir: str | Path, n_iters: int = 8, demo: dict[str, Any] | None = None) -> dict[str, Any]:
    """Training throughput of the demo DINO model (CPU) and, with CUDA, the paper's ViT-B/16 stage 1.

    ``demo`` replaces the demo model's parameters (:data:`DEMO_DINO`), e.g. to time a smaller one.
    """
    import torch

    from brainfm.ssl.config import DinoConfig
    from brainfm.ssl.data import SliceSource

    report: dict[str, Any] = {"machine": machine_info(), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        cases = [("demo ViT (192-d, 4 blocks), 48 px, 2 global + 4 local crops, CPU", demo or DEMO_DINO, "cpu", 48)]
        if torch.cuda.is_available():
            paper = {"arch": "vit_base_patch16_dinov3", "batch_size": 64, "num_workers": 8}
            cases.append(("paper ViT-B/16 stage 1 (256 px globals, 8 x 112 px locals), CUDA, precision auto", paper, "cuda", 256))
        for what, params, device, size in cases:
            source = SliceSource([_slice_store(Path(tmp) / f"slices{size}", size)])
            res = time_dino_steps(params, source, n_iters=n_iters, device=device)
            full = {f: getattr(DinoConfig.from_dict(params), f) for f in
                    ("arch", "arch_overrides", "global_size", "local_size", "n_local", "batch_size")}
            flops = dino_step_flops(full)
            achieved = flops / res["s_per_iter"] / 1e12
            entry = {"what": what, "device": device, **res, "tflop_per_iter": flops / 1e12, "achieved_tflops": achieved}
            if device == "cuda":
                peak = float(os.environ.get("BRAINFM_PEAK_TFLOPS", "989"))  # H100 SXM dense bf16
                entry.update({"peak_tflops_assumed": peak, "mfu": achieved / peak,
                              "reference": "DINOv3 ViT-L reports about 112 images/s/GPU"})
            report["runs"].append(entry)
    write_json(Path(out_dir) / "pretrain.json", report)
    return report


def headline(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"what": r["what"], "img_per_s": round(r["img_per_s"], 1)} for r in report["runs"]]
