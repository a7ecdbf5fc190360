"""Failures under the scheduler: a failing job, a cancelled pretraining, a killed Snakemake; and a two-node
pretraining job. One workflow copy; its pretraining store is built once, through SLURM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from brainfm.ssl.checkpointing import list_checkpoints
from slurm_helpers import copy_workflow, run_ids, sacct, snakemake, squeue_jobs, start_snakemake, tiny_config, wait_for

pytestmark = pytest.mark.cluster

STORE = "results/preprocessed/phantom_pretrain/report.json"
SMALL = {"arch": "vit_small_patch16_dinov3", "global_size": 16, "local_size": 8, "n_local": 1,
         "arch_overrides": {"embed_dim": 16, "depth": 1, "num_heads": 2, "patch_size": 8},
         "n_prototypes": 16, "head_hidden": 16, "head_bottleneck": 8, "warmup_iters": 2, "lr": 1e-3,
         "lr_scaling": "none", "teacher_temp_warmup_iters": 3, "freeze_last_layer_iters": 1, "num_workers": 0,
         "drop_path_rate": 0.1, "batch_size": 2}


def _config() -> dict:
    cfg = tiny_config()
    cfg["pretrain"].update({
        # long enough to be cancelled between checkpoints
        "long": {"recipe": "dino", "datasets": ["phantom_pretrain"],
                 "params": {**SMALL, "iters": 60, "checkpoint_every": 3}},
        # fails inside the job (a config error only the trainer sees)
        "broken": {"recipe": "dino", "datasets": ["phantom_pretrain"], "params": {**SMALL, "iters": 4, "lr": -1.0}},
        # two nodes x one process, c10d rendezvous on the first node
        "twonode": {"recipe": "dino", "datasets": ["phantom_pretrain"],
                    "params": {**SMALL, "iters": 4, "checkpoint_every": 2, "drop_path_rate": 0.0},
                    "resources": {"nodes": 2, "nproc": 1, "mem_mb": 2000, "runtime": 20}},
    })
    return cfg


@pytest.fixture(scope="module")
def wf(slurm, tmp_path_factory) -> Path:
    wf = copy_workflow(tmp_path_factory.mktemp("failures"), _config())
    proc = snakemake(wf, STORE)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return wf


def _teacher(path: Path) -> dict:
    return torch.load(path, weights_only=True)["teacher"]


def _rows_for(run_id: str, comment: str) -> list[dict]:
    return [r for r in sacct(name=run_id) if r["Comment"] == comment]


def test_failing_job_prints_its_logs(wf):
    proc = snakemake(wf, "results/pretrain/broken/weights.pth")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "results/logs/pretrain/broken.log" in out
    slurm_logs = sorted((wf / ".snakemake" / "slurm_logs" / "rule_pretrain" / "broken").glob("*.log"))
    assert len(slurm_logs) == 2  # attempt 1 and the retry; failed jobs keep their SLURM log
    for log in slurm_logs:
        assert str(log) in out
    assert "lr must be > 0" in (wf / "results/logs/pretrain/broken.log").read_text()
    rows = _rows_for(run_ids(out)[0], "rule_pretrain_wildcards_broken")
    assert [r["State"] for r in rows] == ["FAILED", "FAILED"], rows
    assert not (wf / "results/pretrain/broken/weights.pth").exists()


def test_cancelled_pretraining_is_retried_and_resumes_to_identical_weights(wf, tmp_path):
    target = "results/pretrain/long/weights.pth"
    ckpt = wf / "results/pretrain/long/work/stage1/ckpt"
    proc = start_snakemake(wf, target, log=tmp_path / "cancel.log")
    running = wait_for(lambda: [j for j in _jobs_of(tmp_path / "cancel.log") if j["state"] == "RUNNING"], 300,
                       "the pretraining job to run")
    wait_for(lambda: list_checkpoints(ckpt), 300, "a first checkpoint", every=0.05)
    subprocess.run(["scancel", running[0]["id"]], check=True)
    assert proc.wait(timeout=1200) == 0, (tmp_path / "cancel.log").read_text()[-6000:]
    out = (tmp_path / "cancel.log").read_text()
    rows = _rows_for(run_ids(out)[0], "rule_pretrain_wildcards_long")
    assert [r["State"].split()[0] for r in rows] == ["CANCELLED", "COMPLETED"], rows
    summary = json.loads((wf / "results/pretrain/long/summary.json").read_text())
    resumed_at = summary["stages"][0]["start_iteration"]
    assert 0 < resumed_at < 60 and summary["stages"][0]["final_iteration"] == 60, summary["stages"][0]
    print(f"cancelled job {running[0]['id']}; the retry resumed at iteration {resumed_at} of 60")

    # an uninterrupted run of the same rule, from scratch
    resumed = _teacher(wf / target)
    subprocess.run(["rm", "-rf", str(wf / "results/pretrain/long")], check=True)
    again = snakemake(wf, target)
    assert again.returncode == 0, (again.stdout + again.stderr)[-6000:]
    assert json.loads((wf / "results/pretrain/long/summary.json").read_text())["stages"][0]["start_iteration"] == 0
    fresh = _teacher(wf / target)
    assert fresh.keys() == resumed.keys() and all(torch.equal(fresh[k], resumed[k]) for k in fresh)


def _jobs_of(log: Path) -> list[dict]:
    ids = run_ids(log.read_text()) if log.exists() else []
    return squeue_jobs(ids[0]) if ids else []


def test_killed_snakemake_then_rerun_finishes(wf, tmp_path):
    targets = [f"results/preprocessed/{d}/report.json" for d in ("phantom_brainage", "phantom_adni")]
    log = tmp_path / "killed.log"
    proc = start_snakemake(wf, *targets, log=log)
    wait_for(lambda: [j for j in _jobs_of(log) if j["state"] == "RUNNING"], 300, "a job to run")
    os.killpg(proc.pid, signal.SIGKILL)  # Snakemake and its children die; SLURM jobs do not
    proc.wait()
    orphans = _jobs_of(log)
    assert orphans, "jobs should outlive Snakemake"
    wait_for(lambda: not _jobs_of(log), 900, "the orphaned jobs to end", every=2)

    unlock = snakemake(wf, *targets, "--unlock")
    assert unlock.returncode == 0, unlock.stderr[-3000:]
    rerun = snakemake(wf, *targets)
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-6000:]
    redone = [r["Comment"] for r in sacct(name=run_ids(rerun.stdout + rerun.stderr)[0])]
    print(f"killed Snakemake left {len(orphans)} running job(s); the rerun submitted {redone}")
    for t in targets:
        assert json.loads((wf / t).read_text())
    assert "Nothing to be done" in (lambda p: p.stdout + p.stderr)(snakemake(wf, *targets, "-n"))


def test_two_node_pretraining_job(wf):
    proc = snakemake(wf, "results/pretrain/twonode/weights.pth")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    (row,) = _rows_for(run_ids(out)[0], "rule_pretrain_wildcards_twonode")
    assert row["NNodes"] == "2" and row["State"] == "COMPLETED", row
    # the launchers ran as one srun step with a task on each node
    steps = subprocess.run(["sacct", "-P", "-n", "-j", row["JobIDRaw"], "-o", "JobID,NTasks,NodeList,State"],
                           capture_output=True, text=True, check=True).stdout.split()
    launch = [s.split("|") for s in steps if s.split("|")[0] == f"{row['JobIDRaw']}.0"]
    assert launch and launch[0][1] == "2" and launch[0][2] == "node[1-2]" and launch[0][3] == "COMPLETED", steps
    summary = json.loads((wf / "results/pretrain/twonode/summary.json").read_text())
    assert summary["world_size"] == 2 and summary["stages"][0]["samples_seen"] == 4 * 2 * 2
