"""``brainfm bench``: every performance figure the project quotes, measured and written to JSON.

One module per benchmark, each with ``run(out_dir)`` writing ``<out_dir>/<name>.json``:

- ``stats``: paired-bootstrap speed (:mod:`brainfm.bench.stats`);
- ``heads``: one task across 6 ratios × 5 backbones × 5 seeds from cached features
  (:mod:`brainfm.bench.heads`);
- ``extraction``: frozen extraction throughput of ViT-S/ViT-B at 256² (fp32, bf16) as a ratio to a
  matmul roofline measured in the same run (:mod:`brainfm.bench.extraction`);
- ``pretrain``: DINO training throughput of the demo model on this machine's CPU and, where CUDA
  is available, of the paper's ViT-B/16 stage 1 with a model-FLOP-utilisation estimate
  (:mod:`brainfm.bench.pretrain`);
- ``segmentation``: nnU-Net training iterations/s and inference cases/min of the demo segmentation
  model on this CPU and, with CUDA, ViT-B/16 at 256² in bf16 with an MFU estimate
  (:mod:`brainfm.bench.segmentation`);
- ``demo``: where the demo's time goes, per rule, and the fixed cost of a job (interpreter,
  imports, model build, store open) against its work, from the benchmark files of a demo run
  (or of a fresh one: long, minutes; :mod:`brainfm.bench.demo`).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

__all__ = ["ALL", "run_benchmarks"]

ALL = ("extraction", "heads", "stats", "pretrain", "segmentation", "demo")
_ORDER = ("stats", "heads", "extraction", "pretrain", "segmentation", "demo")  # quick ones first


def run_benchmarks(out_dir: Path, which: list[str] | tuple[str, ...] = (),
                   options: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Run the named benchmarks (all by default) into ``out_dir`` and print their headline numbers.

    ``options`` maps a benchmark name to keyword arguments of its ``run`` (e.g. demo's ``benchmarks``).
    """
    out_dir = Path(out_dir)
    which = tuple(which) or ALL
    unknown = set(which) - set(ALL)
    if unknown:
        raise ValueError(f"unknown benchmark(s) {sorted(unknown)}; choose from {ALL}")
    results: dict[str, Any] = {}
    headlines: dict[str, Any] = {}
    for name in (n for n in _ORDER if n in which):
        module = importlib.import_module(f"brainfm.bench.{name}")
        results[name] = module.run(out_dir, **(options or {}).get(name, {}))
        headlines[name] = module.headline(results[name]) if hasattr(module, "headline") else "see json"
    print(json.dumps(headlines, indent=1))
    return results
