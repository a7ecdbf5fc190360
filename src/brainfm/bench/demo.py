"""Benchmark of the whole demo: wall time of the demo DAG from scratch in a temporary copy of the workflow.

Long (minutes). Writes ``<out_dir>/demo.json`` with the per-rule seconds of Snakemake's own
benchmark files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from brainfm.atomic import write_json
from brainfm.bench.measure import machine_info

__all__ = ["run", "headline"]


def run(out_dir: str | Path, *, cores: int = 2, configfile: str = "config/config.yaml") -> dict[str, Any]:
    """Run ``snakemake rules`` of the demo config in a fresh directory and time it."""
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
              "benchmarked_rule_seconds": per_rule, "machine": machine_info(),
              "stderr_tail": proc.stderr[-2000:] if proc.returncode else ""}
    write_json(Path(out_dir) / "demo.json", report)
    return report


def headline(report: dict[str, Any]) -> dict[str, Any]:
    return {"wall_seconds": round(report["wall_seconds"], 1), "returncode": report["returncode"]}
