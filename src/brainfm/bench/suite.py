"""``brainfm bench``: every performance figure the project quotes, measured and written to JSON.

- ``extraction``: frozen extraction throughput of ViT-S/ViT-B at 256² (fp32, bf16) as a ratio to a
  matmul roofline measured in the same run (:mod:`brainfm.bench.extraction`).
- ``heads``: one task across 6 ratios × 5 backbones × 5 seeds from cached features.
- ``stats``: paired-bootstrap speed (:mod:`brainfm.stats.bench`).
- ``pretrain``: DINO training throughput (images/s, all crops, forward + backward + EMA) of the demo
  model on this machine's CPU and, where CUDA is available, of the paper's ViT-B/16 stage 1 with a
  model-FLOP-utilisation estimate.
- ``segmentation``: nnU-Net training iterations/s and inference cases/min of the demo segmentation
  model on this CPU and, with CUDA, ViT-B/16 at 256² in bf16 with an MFU estimate
  (:mod:`brainfm.bench.segmentation`).
- ``demo``: wall time of the whole demo DAG in a fresh directory (long: minutes).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainfm.atomic import write_json

__all__ = ["run_benchmarks", "bench_heads", "bench_demo", "bench_pretrain"]

ALL = ("extraction", "heads", "stats", "pretrain", "segmentation", "demo")

#: the demo's BrainDINO model and crops (config/config.yaml, pretrain.braindino.params)
DEMO_DINO = {"arch": "vit_small_patch16_dinov3",
             "arch_overrides": {"embed_dim": 192, "depth": 4, "num_heads": 3, "patch_size": 8, "init_values": 1.0},
             "global_size": 48, "local_size": 24, "n_local": 4, "n_prototypes": 1024, "head_hidden": 512,
             "head_bottleneck": 128, "batch_size": 16, "lr": 5e-4, "lr_scaling": "none", "centering": "softmax",
             "momentum": 0.95, "num_workers": 0}


def _machine() -> dict[str, Any]:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
            "platform": platform.platform()}


def bench_heads(out_path: Path, *, n_subjects: int = 160, dims: tuple[int, ...] = (192, 192, 384, 512, 768),
                ratios: tuple[float, ...] = (0.1, 0.2, 0.4, 0.6, 0.8, 1.0), seeds: tuple[int, ...] = (0, 1, 2, 3, 4),
                head: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one regression task for 5 backbones × 6 ratios × 5 seeds (150 heads) from features.

    Features are synthetic matrices of the demo task's size (``n_subjects`` scans) and of five
    backbones' widths with a linear age signal, so the benchmark needs no prior run and measures
    the head machinery alone (features are cached in the workflow).
    """
    from brainfm.tasks.data import assemble
    from brainfm.tasks.runner import run_grid
    from brainfm.config import TaskSpec

    rng = np.random.default_rng(0)
    age = rng.uniform(6, 90, n_subjects)
    manifest = pd.DataFrame({"dataset": "bench", "subject": [f"s{i:04d}" for i in range(n_subjects)],
                             "session": "0", "modality": "T1", "path": "x", "site": "a",
                             "split": np.where(np.arange(n_subjects) % 4 == 0, "test", "train"), "age": age})
    head = head or {"lr": 1e-4, "weight_decay": 1e-5, "batch_size": 16, "max_epochs": 150, "patience": 10}
    spec = TaskSpec.from_config("brain_age", {"dataset": "bench", "kind": "regression", "target": "age"},
                                {"ratios": list(ratios), "seeds": list(seeds), "head": head})
    per_backbone = []
    t0 = time.perf_counter()
    for b, dim in enumerate(dims):
        w = rng.normal(size=dim)
        x = rng.normal(size=(n_subjects, dim)) + np.outer((age - 48) / 25, w)
        data = assemble(spec, manifest[["subject", "session"]], x.astype(np.float32), manifest)
        tb = time.perf_counter()
        res = run_grid(data, backbone=f"b{b}", ratios=ratios, seeds=seeds)
        per_backbone.append({"dim": dim, "seconds": time.perf_counter() - tb,
                             "mae_at_1.0": float(np.mean([e["metrics"]["mae"] for k, e in res.items() if k.ratio == 1.0]))})
    total = time.perf_counter() - t0
    report = {"what": "one task, 6 ratios x 5 backbones x 5 seeds = 150 heads, from cached features",
              "n_subjects": n_subjects, "n_heads": len(dims) * len(ratios) * len(seeds), "head": head,
              "seconds_total": total, "target_seconds": 60.0, "per_backbone": per_backbone, "machine": _machine()}
    write_json(out_path, report)
    return report


def bench_demo(out_path: Path, *, cores: int = 2, configfile: str = "config/config.yaml") -> dict[str, Any]:
    """Wall time of the demo DAG from scratch in a temporary copy of the workflow."""
    repo = Path(__file__).resolve().parents[3]
    with tempfile.TemporaryDirectory(prefix="brainfm-bench-") as tmp:
        for item in ("workflow", "config", "profiles", "envs"):
            shutil.copytree(repo / item, Path(tmp) / item)
        snakemake = Path(sys.executable).with_name("snakemake")
        cmd = [str(snakemake), "--cores", str(cores), "--configfile", configfile, "--quiet", "rules"]
        t0 = time.perf_counter()
        env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        per_rule = {}
        for tsv in Path(tmp, "results", "benchmarks").rglob("*.tsv"):
            rule = tsv.relative_to(Path(tmp, "results", "benchmarks")).parts[0]
            per_rule[rule] = per_rule.get(rule, 0.0) + float(pd.read_csv(tsv, sep="\t")["s"].iloc[0])
    report = {"command": " ".join(cmd[1:]), "returncode": proc.returncode, "wall_seconds": wall,
              "benchmarked_rule_seconds": per_rule, "machine": _machine(),
              "stderr_tail": proc.stderr[-2000:] if proc.returncode else ""}
    write_json(out_path, report)
    return report


def run_benchmarks(out_dir: Path, which: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    out_dir = Path(out_dir)
    which = tuple(which) or ALL
    unknown = set(which) - set(ALL)
    if unknown:
        raise ValueError(f"unknown benchmark(s) {sorted(unknown)}; choose from {ALL}")
    results: dict[str, Any] = {}
    if "stats" in which:
        from brainfm.stats.bench import run as stats_run

        results["stats"] = stats_run(out_dir / "stats.json")
    if "heads" in which:
        results["heads"] = bench_heads(out_dir / "heads.json")
    if "extraction" in which:
        from brainfm.bench.extraction import run as extraction_run

        results["extraction"] = extraction_run(out_dir)
    if "pretrain" in which:
        results["pretrain"] = bench_pretrain(out_dir / "pretrain.json")
    if "segmentation" in which:
        from brainfm.bench.segmentation import bench_segmentation

        results["segmentation"] = bench_segmentation(out_dir / "segmentation.json")
    if "demo" in which:
        results["demo"] = bench_demo(out_dir / "demo.json")
    print(json.dumps({k: _headline(k, v) for k, v in results.items()}, indent=1))
    return results


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


def _dino_step_flops(cfg: dict[str, Any]) -> float:
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


def bench_pretrain(out: Path, n_iters: int = 8) -> dict[str, Any]:
    """Training throughput of the demo DINO model (CPU) and, with CUDA, the paper's ViT-B/16 stage 1."""
    import torch

    from brainfm.ssl.config import DinoConfig
    from brainfm.ssl.data import SliceSource
    from brainfm.ssl.evaluate import benchmark_dino

    report: dict[str, Any] = {"machine": _machine(), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        cases = [("demo ViT (192-d, 4 blocks), 48 px, 2 global + 4 local crops, CPU", DEMO_DINO, "cpu", 48)]
        if torch.cuda.is_available():
            paper = {"arch": "vit_base_patch16_dinov3", "batch_size": 64, "num_workers": 8}
            cases.append(("paper ViT-B/16 stage 1 (256 px globals, 8 x 112 px locals), CUDA, bf16", paper, "cuda", 256))
        for what, params, device, size in cases:
            source = SliceSource([_slice_store(Path(tmp) / f"slices{size}", size)])
            res = benchmark_dino(params, source, n_iters=n_iters, device=device)
            full = {f: getattr(DinoConfig.from_dict(params), f) for f in
                    ("arch", "arch_overrides", "global_size", "local_size", "n_local", "batch_size")}
            flops = _dino_step_flops(full)
            achieved = flops / res["s_per_iter"] / 1e12
            entry = {"what": what, "device": device, **res, "tflop_per_iter": flops / 1e12, "achieved_tflops": achieved}
            if device == "cuda":
                peak = float(os.environ.get("BRAINFM_PEAK_TFLOPS", "989"))  # H100 SXM dense bf16
                entry.update({"peak_tflops_assumed": peak, "mfu": achieved / peak,
                              "reference": "DINOv3 ViT-L reports about 112 images/s/GPU"})
            report["runs"].append(entry)
    write_json(out, report)
    return report


def _headline(kind: str, report: dict[str, Any]) -> Any:
    if kind == "heads":
        return {"seconds_total": round(report["seconds_total"], 1), "n_heads": report["n_heads"]}
    if kind == "demo":
        return {"wall_seconds": round(report["wall_seconds"], 1), "returncode": report["returncode"]}
    if kind == "pretrain":
        return [{"what": r["what"], "img_per_s": round(r["img_per_s"], 1)} for r in report["runs"]]
    if kind == "segmentation":
        return [{"what": r["what"], "it_per_s": round(r["train_iterations_per_s"], 2),
                 **({"cases_per_min": round(r["inference_cases_per_min"], 1)} if "inference_cases_per_min" in r else {}),
                 **({"mfu": round(r["mfu"], 3)} if "mfu" in r else {})} for r in report["runs"]]
    return "see json"
