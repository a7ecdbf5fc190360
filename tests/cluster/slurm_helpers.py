"""Helpers for the cluster tests: workflow copies, Snakemake through profiles/slurm, sacct/squeue queries."""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
TINY = REPO / "tests" / "workflow" / "config.tiny.yaml"
# rules call the `brainfm` CLI next to this interpreter; the jobs inherit this environment (sbatch --export=ALL)
ENV = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
       "OMP_NUM_THREADS": "1"}
# Fast polling on a test cluster; everything else comes from profiles/slurm as a site would use it.
POLL = ["--slurm-init-seconds-before-status-checks", "2", "--max-status-checks-per-second", "2"]
SACCT_FIELDS = ["JobIDRaw", "JobName", "Comment", "Partition", "Account", "ReqMem", "Timelimit", "ReqCPUS",
                "AllocTRES", "NNodes", "State", "ExitCode"]


def cluster_error() -> str | None:
    if not os.environ.get("SLURM_CONF"):
        return "no SLURM cluster (SLURM_CONF unset): run `make test-cluster`"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P %a"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo failed: {exc}"
    if out.returncode != 0:
        return f"sinfo failed: {out.stderr.strip()}"
    return None


def copy_workflow(dest: Path, config: dict) -> Path:
    """A fresh copy of the workflow, profiles and envs in ``dest`` with ``config`` as config/test.yaml."""
    for item in ("workflow", "config", "profiles", "envs"):
        shutil.copytree(REPO / item, dest / item)
    (dest / "config" / "test.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return dest


def tiny_config() -> dict:
    return yaml.safe_load(TINY.read_text())


def snakemake(wf: Path, *args: str, profile: str | None = "profiles/slurm", timeout: int = 1800,
              **popen) -> subprocess.CompletedProcess:
    prof = ["--workflow-profile", profile or "none"]
    extra = POLL if profile else []
    # targets first: --configfile takes every word after it
    return subprocess.run([SNAKEMAKE, *args, *prof, *extra, "--configfile", "config/test.yaml"], cwd=wf,
                          capture_output=True, text=True, timeout=timeout, env=ENV, **popen)


def start_snakemake(wf: Path, *args: str, log: Path, profile: str | None = "profiles/slurm") -> subprocess.Popen:
    """Snakemake in the background (its own process group), output to ``log``."""
    prof = ["--workflow-profile", profile or "none"] + (POLL if profile else [])
    with open(log, "w") as fh:
        return subprocess.Popen([SNAKEMAKE, *args, *prof, "--configfile", "config/test.yaml"], cwd=wf, stdout=fh,
                                stderr=subprocess.STDOUT, text=True, env=ENV, start_new_session=True)


def run_ids(text: str) -> list[str]:
    """SLURM run IDs (the plugin's sbatch --job-name) printed by Snakemake."""
    return re.findall(r"SLURM run ID: ([0-9a-f-]{36})", text)


def sacct(name: str | None = None, jobs: list[str] | None = None) -> list[dict[str, str]]:
    """Accounting rows (allocations only, no steps) for one run ID or some job IDs."""
    cmd = ["sacct", "-X", "-P", "-n", "--starttime", "now-1days", "-o", ",".join(SACCT_FIELDS)]
    if name:
        cmd += ["--name", name]
    if jobs:
        cmd += ["-j", ",".join(jobs)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout
    rows = [dict(zip(SACCT_FIELDS, r)) for r in csv.reader(io.StringIO(out), delimiter="|") if r]
    return rows


def squeue_jobs(name: str) -> list[dict[str, str]]:
    out = subprocess.run(["squeue", "-h", "--name", name, "-o", "%i|%T|%k"], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return [dict(zip(("id", "state", "comment"), line.split("|"))) for line in out.splitlines() if line]


def wait_for(predicate, timeout: float, what: str, every: float = 1.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
