"""Segmentation throughput: nnU-Net training iterations/s and inference cases/min on the frozen encoder.

* CPU, the demo model: a phantom tumour cohort (3 mm) is prepared for nnU-Net (``2d_48``,
  in-plane field of view fitted to 48 px, batch 16) and the demo network (ViT 192-d, 4 blocks,
  8 px patches, frozen; Primus-style decoder) trains through nnU-Net's own data loader and
  ``train_step`` (augmentation, Dice + BCE, AdamW): iterations/s over ``iters`` timed iterations
  after warm-up. Inference: nnU-Net's sliding-window predictor on every held-out case, in cases/min.
* CUDA (when present), the paper's model: ViT-B/16 at 256×256, batch ``cuda_batch``, one
  training step (forward, Dice + BCE loss, backward through the frozen ViT to the fusion conv,
  AdamW) under bf16 autocast on synthetic input, in iterations/s and images/s; FLOPs per step
  counted with ``torch.utils.flop_counter`` (forward + backward; the frozen ViT computes input
  gradients only), MFU = achieved FLOP/s / peak (``BRAINFM_PEAK_TFLOPS``, default 989: H100 SXM
  dense bf16, as the pretraining benchmark).

Run: ``python -m brainfm.bench.segmentation --out results/bench/segmentation.json``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from brainfm.atomic import write_json
from brainfm.bench.measure import machine_info

__all__ = ["bench_segmentation", "bench_cpu_demo", "bench_cuda_paper", "DEMO_VIT", "main"]

#: the demo segmentation encoder: the demo BrainDINO architecture (config/config.yaml backbones)
DEMO_VIT = {"arch": "vit_small_patch16_dinov3", "embed_dim": 192, "depth": 4, "num_heads": 3, "patch_size": 8,
            "img_size": 48, "arch_overrides": {"init_values": 1.0}}


def bench_cpu_demo(work: Path, *, n_subjects: int = 24, voxel_size: float = 3.0, iters: int = 10, warmup: int = 2,
                   threads: int = 1, batch_size: int = 16, patch: int = 48) -> dict[str, Any]:
    """Demo-size training iterations/s and inference cases/min through nnU-Net on this CPU."""
    from brainfm.data.manifest import read_manifest
    from brainfm.data.phantom import generate_dataset
    from brainfm.data.datasets.labelmap import label_map_for
    from brainfm.segmentation import prepare_benchmark
    from brainfm.segmentation.job import job_configuration
    from brainfm.segmentation.network import parameter_counts
    from brainfm.segmentation.nnunet_env import nnunet_environment
    from brainfm.segmentation.predict import predict_cases
    from brainfm.segmentation.trainer import FrozenEncoderTrainer, TrainSettings

    old_threads = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        t0 = time.perf_counter()
        generate_dataset("phantom_tumor", work / "data", n_subjects=n_subjects, voxel_size=voxel_size, progress=False)
        bench = prepare_benchmark(read_manifest(work / "data" / "manifest.parquet"), label_map_for("phantom_tumor"),
                                  work / "bench", "phantom-tumor", configurations=[f"2d_{patch}"],
                                  batch_sizes={f"2d_{patch}": batch_size}, processes=1)
        prepare_seconds = time.perf_counter() - t0
        plans, cfg = job_configuration(bench.plans(), f"2d_{patch}", "demo", encoder="vit_random",
                                       encoder_kwargs=DEMO_VIT)
        plans["continue_training"] = False
        with nnunet_environment(bench.tree.with_results(work / "results")):
            trainer = FrozenEncoderTrainer(plans, cfg, 0, bench.dataset_json(), device=torch.device("cpu"))
            trainer.configure(TrainSettings(num_epochs=1, iterations_per_epoch=iters, val_iterations_per_epoch=1,
                                            plot_progress=False))
            trainer.on_train_start()
            trainer.on_train_epoch_start()
            for _ in range(warmup):
                trainer.train_step(next(trainer.dataloader_train))
            t0 = time.perf_counter()
            for _ in range(iters):
                trainer.train_step(next(trainer.dataloader_train))
            train_seconds = time.perf_counter() - t0
            trainer.on_train_end()
            test = bench.dataset.case_ids("test")
            t0 = time.perf_counter()
            predict_cases(trainer, bench.dataset.test_inputs(), [work / "pred" / c for c in test], use_mirroring=False)
            predict_seconds = time.perf_counter() - t0
        return {"what": f"demo ViT (192-d, 4 blocks, patch 8) + Primus-style decoder, 2D {patch}x{patch}, batch "
                        f"{trainer.batch_size}, CPU, {threads} thread(s)",
                "device": "cpu", "threads": int(threads), "parameters": parameter_counts(trainer.network),
                "train_iterations": iters, "train_seconds": train_seconds,
                "train_iterations_per_s": iters / train_seconds,
                "train_images_per_s": iters * trainer.batch_size / train_seconds,
                "test_cases": len(test), "predict_seconds": predict_seconds,
                "inference_cases_per_min": 60.0 * len(test) / predict_seconds, "mirroring": False,
                "prepare_seconds": prepare_seconds, "n_subjects": n_subjects, "voxel_size": voxel_size}
    finally:
        torch.set_num_threads(old_threads)


def _step_flops(net: torch.nn.Module, loss_fn: Any, x: torch.Tensor, y: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        loss_fn(net(x), y).backward()
    net.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def bench_cuda_paper(*, batch: int = 16, img: int = 256, iters: int = 20, warmup: int = 5, device: str = "cuda",
                     encoder_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """ViT-B/16 (random init, frozen) + Primus-style decoder at ``img``², bf16 autocast, one training step.

    ``device`` and ``encoder_kwargs`` (default ViT-B/16) exist so the same code can be checked on a CPU.
    """
    from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    from brainfm.segmentation.network import build_network, parameter_counts

    dev = torch.device(device)
    kwargs = dict(encoder_kwargs or {"arch": "vit_base_patch16_dinov3"}, img_size=img)
    net = build_network(4, 3, encoder="vit_random", encoder_kwargs=kwargs).to(dev)
    net.train()
    loss_fn = DC_and_BCE_loss({}, {"batch_dice": True, "do_bg": True, "smooth": 1e-5, "ddp": False},
                              dice_class=MemoryEfficientSoftDiceLoss)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=3e-4, weight_decay=0.05,
                            betas=(0.9, 0.98))
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(batch, 4, img, img, generator=g).to(dev)
    y = (torch.rand(batch, 3, img, img, generator=g) > 0.8).float().to(dev)
    flops = _step_flops(net, loss_fn, x[:1], y[:1]) * batch

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            loss = loss_fn(net(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
        opt.step()

    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    seconds = (time.perf_counter() - t0) / iters
    achieved = flops / seconds / 1e12
    peak = float(os.environ.get("BRAINFM_PEAK_TFLOPS", "989"))
    return {"what": f"{kwargs['arch']} frozen + Primus-style decoder, 2D {img}x{img}, batch {batch}, bf16 autocast",
            "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", "parameters": parameter_counts(net), "s_per_iter": seconds,
            "train_iterations_per_s": 1.0 / seconds, "train_images_per_s": batch / seconds,
            "tflop_per_iter": flops / 1e12, "achieved_tflops": achieved, "peak_tflops_assumed": peak,
            "mfu": achieved / peak,
            "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None}


def bench_segmentation(out_path: str | Path, *, work_dir: str | Path | None = None, cpu: dict[str, Any] | None = None,
                       cuda: dict[str, Any] | None = None) -> dict[str, Any]:
    """Both benchmarks (CUDA only where present); writes ``out_path`` (JSON) and returns the report."""
    report: dict[str, Any] = {"machine": machine_info(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="brainfm-segbench-", dir=work_dir) as tmp:
        report["runs"].append(bench_cpu_demo(Path(tmp), **dict(cpu or {})))
    if torch.cuda.is_available():
        report["runs"].append(bench_cuda_paper(**dict(cuda or {})))
    write_json(out_path, report)
    return report


def run(out_dir: str | Path) -> dict[str, Any]:
    """``brainfm bench --only segmentation``: writes ``<out_dir>/segmentation.json``."""
    return bench_segmentation(Path(out_dir) / "segmentation.json")


def headline(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"what": r["what"], "it_per_s": round(r["train_iterations_per_s"], 2),
             **({"cases_per_min": round(r["inference_cases_per_min"], 1)} if "inference_cases_per_min" in r else {}),
             **({"mfu": round(r["mfu"], 3)} if "mfu" in r else {})} for r in report["runs"]]


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="JSON report path")
    p.add_argument("--subjects", type=int, default=24)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    rep = bench_segmentation(a.out, cpu={"n_subjects": a.subjects, "iters": a.iters, "threads": a.threads})
    for run in rep["runs"]:
        print(run["what"], {k: run[k] for k in ("train_iterations_per_s", "inference_cases_per_min", "mfu")
                            if k in run})


if __name__ == "__main__":
    main()
