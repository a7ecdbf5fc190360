"""``brainfm bench``: every performance figure the project quotes, measured and written to JSON.

- ``extraction``: frozen extraction throughput of ViT-S/ViT-B at 256² (fp32, bf16) as a ratio to a
  matmul roofline measured in the same run (:mod:`brainfm.bench.extraction`).
- ``heads``: one task across 6 ratios × 5 backbones × 5 seeds from cached features.
- ``stats``: paired-bootstrap speed (:mod:`brainfm.stats.bench`).
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

__all__ = ["run_benchmarks", "bench_heads", "bench_demo"]

ALL = ("extraction", "heads", "stats", "demo")


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
    from brainfm.tasks.spec import TaskSpec

    rng = np.random.default_rng(0)
    age = rng.uniform(6, 90, n_subjects)
    manifest = pd.DataFrame({"dataset": "bench", "subject": [f"s{i:04d}" for i in range(n_subjects)],
                             "session": "0", "modality": "T1", "path": "x", "site": "a",
                             "split": np.where(np.arange(n_subjects) % 4 == 0, "test", "train"), "age": age})
    spec = TaskSpec.from_config("brain_age", {"dataset": "bench", "kind": "regression", "target": "age"},
                                {"ratios": list(ratios), "seeds": list(seeds)})
    head = head or {"lr": 1e-4, "weight_decay": 1e-5, "batch_size": 16, "max_epochs": 150, "patience": 10}
    per_backbone = []
    t0 = time.perf_counter()
    for b, dim in enumerate(dims):
        w = rng.normal(size=dim)
        x = rng.normal(size=(n_subjects, dim)) + np.outer((age - 48) / 25, w)
        data = assemble(spec, manifest[["subject", "session"]], x.astype(np.float32), manifest)
        tb = time.perf_counter()
        res = run_grid(data, backbone=f"b{b}", ratios=ratios, seeds=seeds, head_defaults=head)
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
    if "demo" in which:
        results["demo"] = bench_demo(out_dir / "demo.json")
    print(json.dumps({k: _headline(k, v) for k, v in results.items()}, indent=1))
    return results


def _headline(kind: str, report: dict[str, Any]) -> Any:
    if kind == "heads":
        return {"seconds_total": round(report["seconds_total"], 1), "n_heads": report["n_heads"]}
    if kind == "demo":
        return {"wall_seconds": round(report["wall_seconds"], 1), "returncode": report["returncode"]}
    return "see json"
