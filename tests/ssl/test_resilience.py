"""Process-level behaviour through the real CLI: SIGKILL + resume, and 2-process DDP (gloo) equivalence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from brainfm.ssl.checkpointing import list_checkpoints

TINY = {
    "arch_overrides": {"embed_dim": 16, "depth": 1, "num_heads": 2, "patch_size": 8, "init_values": 1.0},
    "global_size": 16, "local_size": 8, "n_local": 1,
    "n_prototypes": 16, "head_hidden": 16, "head_bottleneck": 8,
    "warmup_iters": 2, "lr": 1e-3, "lr_scaling": "none", "teacher_temp_warmup_iters": 3,
    "freeze_last_layer_iters": 1, "num_workers": 0, "log_every": 5,
}


def _cli(spec: dict, store: Path, root: Path, nproc: int = 1) -> list[str]:
    spec = {"name": "run", **spec, "resources": {"nproc": nproc}}
    return [sys.executable, "-m", "brainfm.cli", "pretrain", "--spec", json.dumps(spec),
            "--stores", str(store), "--out", str(root / "weights.pth"), "--summary", str(root / "summary.json"),
            "--work-dir", str(root / "work"), "--device", "cpu", "--precision", "fp32"]


def _env() -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _teacher(root: Path) -> dict:
    return torch.load(root / "weights.pth", weights_only=True)["teacher"]


def test_sigkill_mid_run_then_resume_gives_identical_weights(slice_store, tmp_path):
    spec = {"recipe": "dino", "datasets": ["synth"],
            "params": {**TINY, "iters": 80, "batch_size": 2, "checkpoint_every": 5, "drop_path_rate": 0.1}}
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    proc = subprocess.Popen(_cli(spec, slice_store, killed), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    ckpt_dir = killed / "work" / "stage1" / "ckpt"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        done = [i for i, _ in list_checkpoints(ckpt_dir)]
        if done and done[-1] >= 10:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed: " + proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "weights.pth").exists() and not (killed / "summary.json").exists()
    killed_at = list_checkpoints(ckpt_dir)[-1][0]
    assert 10 <= killed_at < 80
    # resume and an uninterrupted reference, both through the CLI
    subprocess.run(_cli(spec, slice_store, killed), env=_env(), check=True, capture_output=True)
    subprocess.run(_cli(spec, slice_store, ref), env=_env(), check=True, capture_output=True)
    a, b = _teacher(ref), _teacher(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["stages"][0]["start_iteration"] == killed_at and summary["stages"][0]["final_iteration"] == 80
    final_ref = torch.load(list_checkpoints(ref / "work" / "stage1" / "ckpt")[-1][1], weights_only=True)["model"]
    final_res = torch.load(list_checkpoints(ckpt_dir)[-1][1], weights_only=True)["model"]
    for part in ("student", "teacher", "dino_center", "ibot_center"):
        assert all(torch.equal(final_ref[part][k], final_res[part][k]) for k in final_ref[part])


@pytest.mark.parametrize("centering", ["sinkhorn_knopp", "softmax"])
def test_ddp_two_processes_match_one_process(slice_store, tmp_path, centering):
    """torchrun with 2 gloo processes x batch 3 == 1 process x batch 6 (drop-path off: its noise is per process)."""
    from brainfm.config import PretrainSpec
    from brainfm.ssl.entry import pretrain

    params = {**TINY, "iters": 4, "checkpoint_every": 4, "drop_path_rate": 0.0, "centering": centering}
    one, two = tmp_path / "one", tmp_path / "two"

    def spec(batch_size: int, nproc: int) -> PretrainSpec:
        return PretrainSpec.from_dict({"name": "run", "recipe": "dino", "datasets": ["s"],
                                       "params": {**params, "batch_size": batch_size}, "resources": {"nproc": nproc}})

    pretrain(spec(6, 1), [slice_store], one / "weights.pth", one / "summary.json", one / "work")
    info = pretrain(spec(3, 2), [slice_store], two / "weights.pth", two / "summary.json", two / "work")
    assert info["world_size"] == 2 and info["stages"][0]["samples_seen"] == 4 * 6
    a, b = _teacher(one), _teacher(two)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6, msg=k)
    sa = torch.load(list_checkpoints(one / "work" / "stage1" / "ckpt")[-1][1], weights_only=True)["model"]["student"]
    sb = torch.load(list_checkpoints(two / "work" / "stage1" / "ckpt")[-1][1], weights_only=True)["model"]["student"]
    from brainfm.ssl.config import DinoConfig
    from brainfm.ssl.dino import DinoMethod
    from brainfm.ssl.distributed import init_distributed

    start = DinoMethod(DinoConfig.from_dict({**params, "batch_size": 6}), init_distributed("cpu")).student.state_dict()
    assert max((sa[k] - start[k]).abs().max().item() for k in sa) > 1e-4  # the runs did train
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-4, atol=1e-6, msg=k)
