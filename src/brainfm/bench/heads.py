"""Benchmark of the head machinery: one task, 6 ratios x 5 backbones x 5 seeds (150 heads) from features.

Features are synthetic matrices of the demo task's size and of five backbones' widths with a
linear age signal, so the benchmark needs no prior run and measures the head machinery alone
(features are cached in the workflow). Writes ``<out_dir>/heads.json``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainfm.atomic import write_json
from brainfm.bench.measure import machine_info

__all__ = ["run", "headline"]


def run(out_dir: str | Path, *, n_subjects: int = 160, dims: tuple[int, ...] = (192, 192, 384, 512, 768),
        ratios: tuple[float, ...] = (0.1, 0.2, 0.4, 0.6, 0.8, 1.0), seeds: tuple[int, ...] = (0, 1, 2, 3, 4),
        head: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one regression task for every backbone width x ratio x seed; time each backbone's grid."""
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
        full = [e["metrics"]["mae"] for k, e in res.items() if k.ratio == 1.0]
        per_backbone.append({"dim": dim, "seconds": time.perf_counter() - tb, "mae_at_1.0": float(np.mean(full))})
    total = time.perf_counter() - t0
    report = {"what": "one task, 6 ratios x 5 backbones x 5 seeds = 150 heads, from cached features",
              "n_subjects": n_subjects, "n_heads": len(dims) * len(ratios) * len(seeds), "head": head,
              "seconds_total": total, "target_seconds": 60.0, "per_backbone": per_backbone, "machine": machine_info()}
    write_json(Path(out_dir) / "heads.json", report)
    return report


def headline(report: dict[str, Any]) -> dict[str, Any]:
    return {"seconds_total": round(report["seconds_total"], 1), "n_heads": report["n_heads"]}
