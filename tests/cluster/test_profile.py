"""The demo DAG in miniature through profiles/slurm on a real SLURM cluster, against a local run."""

from __future__ import annotations

import filecmp
import os
import re
import signal
from collections import Counter
from pathlib import Path

import pytest

from slurm_helpers import copy_workflow, run_ids, sacct, snakemake, start_snakemake, tiny_config

pytestmark = pytest.mark.cluster


def _planned_jobs(wf: Path) -> Counter:
    """Jobs per rule that a fresh run of ``wf`` executes (from a dry run's job table)."""
    proc = snakemake(wf, "-n", "--quiet", "rules", "--cores", "1", profile=None, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = re.findall(r"^(\w+)\s+(\d+)$", proc.stdout + proc.stderr, flags=re.M)
    return Counter({rule: int(n) for rule, n in rows if rule != "total"})


def _rule_blocks() -> dict[str, str]:
    """Each rule's text in workflow/rules, by rule name."""
    blocks = {}
    for smk in (Path(__file__).resolve().parents[2] / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"^rule ", smk.read_text(), flags=re.M)[1:]:
            blocks[block.split(":", 1)[0].strip()] = block
    return blocks


# rules run on the submit host (`all` and those marked localrule) and rules grouped into shared allocations
LOCAL_RULES = {"all"} | {name for name, block in _rule_blocks().items()
                         if re.search(r"^\s+localrule:\s*True", block, flags=re.M)}
GROUPS: dict[str, set[str]] = {}
for _name, _block in _rule_blocks().items():
    if _group := re.search(r"^\s+group:\s*\n?\s*\"(\w+)\"", _block, flags=re.M):
        GROUPS.setdefault(_group.group(1), set()).add(_name)


def _group_of(comment: str) -> str | None:
    """Group jobs carry --comment rule_<group>_<its rules, sorted>, e.g. rule_heads_fit_heads_knn_probe."""
    for group, rules in GROUPS.items():
        if comment.startswith(f"rule_{group}_") and set(comment[len(f"rule_{group}_"):].split("_")) <= {
                part for rule in rules for part in rule.split("_")}:
            return group
    return None


def _rule_of(comment: str, rules: set[str]) -> str:
    """The plugin's --comment is rule_<rule>[_wildcards_<values>] for one job."""
    for rule in sorted(rules, key=len, reverse=True):
        if comment == f"rule_{rule}" or comment.startswith(f"rule_{rule}_wildcards_"):
            return rule
    raise AssertionError(f"sbatch comment {comment!r} names no rule of the workflow")


def test_tiny_demo_dag_through_the_slurm_profile(slurm, tmp_path):
    cfg = tiny_config()
    # byte-identical tables across a local and a SLURM run need thread-count independent arithmetic: CPU bf16
    # autocast (what `auto` picks on an AVX512_BF16 CPU) blocks its matmuls by thread count, fp32 here does not
    cfg["precision"] = "fp32"
    cfg["phantom"]["n_jobs"] = 2  # threads -> --cpus-per-task=2
    cfg["preprocess"]["resources"] = {"mem_mb": 1500, "runtime": 11}
    cfg["pretrain"]["braindino"]["resources"] = {"gpu": 1, "mem_mb": 3000, "runtime": 17}
    wf_slurm = copy_workflow(tmp_path / "slurm", cfg)
    wf_local = copy_workflow(tmp_path / "local", cfg)
    planned = _planned_jobs(wf_local)

    # the reference: the same DAG run locally, alongside (the SLURM run mostly waits on the scheduler)
    local = start_snakemake(wf_local, "--cores", "2", log=tmp_path / "local.log", profile=None)
    try:
        _check_slurm_run(wf_slurm, planned)
        assert local.wait(timeout=3600) == 0, (tmp_path / "local.log").read_text()[-6000:]
    finally:
        if local.poll() is None:
            os.killpg(local.pid, signal.SIGTERM)
            local.wait()

    # the same DAG run locally gives byte-identical tables
    tables_slurm, tables_local = wf_slurm / "results" / "tables", wf_local / "results" / "tables"
    names = sorted(p.name for p in tables_local.iterdir())
    assert names == sorted(p.name for p in tables_slurm.iterdir()) and len(names) >= 15
    match, mismatch, errors = filecmp.cmpfiles(tables_local, tables_slurm, names, shallow=False)
    assert not mismatch and not errors, mismatch + errors

    again = snakemake(wf_slurm, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr


def _check_slurm_run(wf_slurm: Path, planned: Counter) -> None:
    proc = snakemake(wf_slurm)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    (ids,) = [run_ids(out)]
    assert len(ids) == 1, ids
    rows = sacct(name=ids[0])
    print("\n".join("|".join(r.values()) for r in rows))  # the listing, for the record (pytest -s)
    assert rows and all(r["State"] == "COMPLETED" for r in rows), rows

    # every job that is not a local rule went through sbatch, one allocation each, except the groups
    grouped = set().union(*GROUPS.values())
    single = [r for r in rows if _group_of(r["Comment"]) is None]
    per_rule = Counter(_rule_of(r["Comment"], set(planned)) for r in single)
    expected = Counter({rule: n for rule, n in planned.items() if rule not in LOCAL_RULES | grouped})
    assert per_rule == expected
    # grouped head/statistics jobs: 12 + 6 jobs in a handful of allocations
    group_rows = [r for r in rows if _group_of(r["Comment"])]
    n_grouped = sum(planned[r] for r in grouped)
    assert n_grouped >= 15 and 2 <= len(group_rows) <= 4, group_rows
    assert {_group_of(r["Comment"]) for r in group_rows} == set(GROUPS)
    # a group's jobs (1 thread, 4000 MB, 60 min each) run side by side on the profile's `cores` (16):
    # CPUs and memory are summed over one round, time over the rounds
    for r in group_rows:
        n = sum(planned[rule] for rule in GROUPS[_group_of(r["Comment"])])
        width, rounds = min(n, 16), -(-n // 16)
        assert (r["ReqCPUS"], r["ReqMem"], r["Timelimit"]) == (str(width), f"{4000 * width}M",
                                                                f"{rounds:02d}:00:00"), r

    # resources from the config and the profile reached SLURM
    by_rule: dict[str, list[dict]] = {}
    for r in single:
        by_rule.setdefault(_rule_of(r["Comment"], set(planned)), []).append(r)
    for r in by_rule["preprocess"]:
        assert (r["ReqMem"], r["Timelimit"], r["Partition"]) == ("1500M", "00:11:00", "cpu"), r
    for r in by_rule["phantom_dataset"]:
        assert r["ReqCPUS"] == "2" and r["ReqMem"] == "4000M" and r["Timelimit"] == "01:00:00", r
    (dino,) = [r for r in by_rule["pretrain"] if r["Comment"].endswith("braindino")]
    assert (dino["Partition"], dino["ReqMem"], dino["Timelimit"]) == ("gpu", "3000M", "00:17:00"), dino
    assert "gres/gpu=1" in dino["AllocTRES"] and "cpu=8" in dino["AllocTRES"], dino  # profile: cpus_per_gpu 8
    (simclr,) = [r for r in by_rule["pretrain"] if r["Comment"].endswith("brainiac_simclr")]
    assert simclr["Partition"] == "cpu" and "gres/gpu" not in simclr["AllocTRES"], simclr
    assert all(r["Account"] == "brainfm" for r in rows)  # the user's default account (none in the profile)
