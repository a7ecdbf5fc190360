"""Multi-node pretraining without a scheduler: two node launchers meet at a c10d rendezvous on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from brainfm.errors import ConfigError
from brainfm.ssl.checkpointing import list_checkpoints
from brainfm.ssl.distributed import slurm_fanout, torchrun_command

TINY = {
    "arch_overrides": {"embed_dim": 16, "depth": 1, "num_heads": 2, "patch_size": 8, "init_values": 1.0},
    "global_size": 16, "local_size": 8, "n_local": 1, "n_prototypes": 16, "head_hidden": 16, "head_bottleneck": 8,
    "warmup_iters": 2, "lr": 1e-3, "lr_scaling": "none", "teacher_temp_warmup_iters": 3,
    "freeze_last_layer_iters": 1, "num_workers": 0, "log_every": 5, "iters": 4, "checkpoint_every": 4,
    "drop_path_rate": 0.0,
}


def _pretrain(spec: dict, store: Path, root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "brainfm.cli", "pretrain", "--spec", json.dumps({"name": "run", **spec}),
            "--stores", str(store), "--out", str(root / "weights.pth"), "--summary", str(root / "summary.json"),
            "--work-dir", str(root / "work"), "--device", "cpu", "--precision", "fp32", *extra]  # exact numerics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_node_launchers_match_one_process(slice_store, tmp_path):
    """2 launchers x 1 process x batch 3 (--nnodes 2, c10d on 127.0.0.1, gloo) == 1 process x batch 6."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one, two = tmp_path / "one", tmp_path / "two"
    spec = {"recipe": "dino", "datasets": ["s"]}
    subprocess.run(_pretrain({**spec, "params": {**TINY, "batch_size": 6}}, slice_store, one), env=env, check=True,
                   capture_output=True, timeout=600)
    node = _pretrain({**spec, "params": {**TINY, "batch_size": 3}, "resources": {"nproc": 1, "nodes": 2}},
                     slice_store, two, "--rdzv-endpoint", f"127.0.0.1:{_free_port()}")
    launchers = [subprocess.Popen(node, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(2)]
    logs = [p.communicate(timeout=600)[0] for p in launchers]
    assert [p.returncode for p in launchers] == [0, 0], "\n".join(log[-3000:] for log in logs)

    summary = json.loads((two / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["stages"][0]["samples_seen"] == 4 * 6
    a = torch.load(one / "weights.pth", weights_only=True)["teacher"]
    b = torch.load(two / "weights.pth", weights_only=True)["teacher"]
    assert a.keys() == b.keys()
    for k in a:  # same tolerance as the single-node 2-process check (float sums in another order)
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6, msg=k)
    sa = torch.load(list_checkpoints(one / "work" / "stage1" / "ckpt")[-1][1], weights_only=True)["model"]["student"]
    sb = torch.load(list_checkpoints(two / "work" / "stage1" / "ckpt")[-1][1], weights_only=True)["model"]["student"]
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-4, atol=1e-6, msg=k)


def test_launcher_commands():
    standalone = torchrun_command("p.json", 4)
    assert "--standalone" in standalone and "--nproc-per-node=4" in standalone and standalone[-1] == "p.json"
    multi = torchrun_command("p.json", 8, nnodes=4, rdzv_endpoint="gpu001:29400", rdzv_id="slurm-7")
    assert {"--nnodes=4", "--rdzv-backend=c10d", "--rdzv-endpoint=gpu001:29400", "--rdzv-id=slurm-7"} <= set(multi)
    assert "--standalone" not in multi
    with pytest.raises(ValueError, match="rendezvous endpoint"):
        torchrun_command("p.json", 1, nnodes=2)


def test_slurm_fanout_reads_the_allocation():
    srun, endpoint, rid = slurm_fanout(2, {"SLURM_JOB_ID": "42", "SLURM_JOB_NUM_NODES": "2",
                                           "BRAINFM_RDZV_PORT": "29555"})
    assert srun == ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    assert endpoint == f"{socket.gethostname()}:29555" and rid == "slurm-42"
    with pytest.raises(ConfigError, match="not inside a SLURM allocation"):
        slurm_fanout(2, {})
    with pytest.raises(ConfigError, match="has only 1 node"):
        slurm_fanout(2, {"SLURM_JOB_ID": "42", "SLURM_JOB_NUM_NODES": "1"})
