"""Process-group plumbing for ``torchrun`` data parallelism (NCCL on GPUs, gloo on CPU).

The trainers call the helpers here unconditionally; with one process they are no-ops, so the
same code path runs in the CPU demo, under ``torchrun --nproc_per_node=K`` and on a cluster.
Across nodes, one ``torch.distributed.run`` launcher per node meets the others at a c10d
rendezvous (:func:`torchrun_command`); inside a SLURM allocation :func:`slurm_fanout` starts those
launchers with ``srun``, one task per node, with the rendezvous on the batch script's node.
Losses that need the whole global batch (Sinkhorn-Knopp, centering, KoLeo, NT-Xent) use
:func:`all_reduce_sum` and :func:`gather_with_grad`, which is what makes a K-process run
numerically equivalent to one process with the same global batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.distributed as dist

__all__ = [
    "DistEnv",
    "init_distributed",
    "cleanup_distributed",
    "is_distributed",
    "rank",
    "world_size",
    "all_reduce_sum",
    "gather_with_grad",
    "all_gather_objects",
    "barrier",
    "launch_torchrun",
    "torchrun_command",
    "slurm_fanout",
]


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None
    precision: str = "fp32"  # resolved by brainfm.device.resolve_precision: fp32 | bf16 (autocast)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def init_distributed(device: str = "cpu", precision: str = "fp32") -> DistEnv:
    """Join the process group described by torchrun's environment (or run as a single process).

    ``precision`` is already resolved (``fp32`` or ``bf16``); the training loop autocasts with it.
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be resolved to fp32 or bf16, got {precision!r}")
    n = int(os.environ.get("WORLD_SIZE", "1"))
    r = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = str(device).startswith("cuda")
    if use_cuda:
        dev = torch.device("cuda", local if n > 1 else (torch.device(device).index or 0))
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    backend = None
    if n > 1 and not is_distributed():
        backend = "nccl" if use_cuda else "gloo"
        kwargs: dict[str, Any] = {"backend": backend, "timeout": timedelta(minutes=30)}
        if use_cuda:
            kwargs["device_id"] = dev
        dist.init_process_group(**kwargs)
    elif is_distributed():
        backend = dist.get_backend()
    return DistEnv(rank=r, world_size=n, local_rank=local, device=dev, backend=backend, precision=precision)


def cleanup_distributed() -> None:
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """In-place sum over processes (no-op for one process); returns ``t``."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        n = dist.get_world_size()
        parts = [torch.empty_like(x) for _ in range(n)]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        ctx.rank = dist.get_rank()
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        # every process's loss depends on every gathered row: sum their gradients, keep ours
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (same shape on every process) over processes, in rank order, with gradients."""
    if not is_distributed() or world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def all_gather_objects(obj: Any) -> list[Any]:
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def torchrun_command(spec_path: Path | str, nproc: int, nnodes: int = 1, rdzv_endpoint: str | None = None,
                     rdzv_id: str = "brainfm") -> list[str]:
    """This node's ``torch.distributed.run`` launcher for :mod:`brainfm.ssl.launch`.

    One node without an endpoint: ``--standalone``. Otherwise every node runs the same command and
    the launchers meet at the c10d store on ``rdzv_endpoint`` (the launcher on that host serves it).
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    if nnodes == 1 and rdzv_endpoint is None:
        cmd.append("--standalone")
    else:
        if not rdzv_endpoint:
            raise ValueError("a multi-node launch needs a rendezvous endpoint HOST:PORT")
        cmd += [f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}",
                f"--rdzv-id={rdzv_id}", "--max-restarts=0"]
    return cmd + ["-m", "brainfm.ssl.launch", str(spec_path)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _allocation_nodes(job: str, env: Mapping[str, str]) -> int:
    """Nodes of SLURM job ``job`` (from the environment, else asked of squeue: job-step launchers
    such as Snakemake's may strip the SLURM_* variables)."""
    n = env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES")
    if n:
        return int(n)
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%D"], capture_output=True, text=True, check=False)
    return int(out.stdout.split()[0]) if out.returncode == 0 and out.stdout.strip() else 1


def slurm_fanout(nnodes: int, env: Mapping[str, str] | None = None) -> tuple[list[str], str, str]:
    """``srun`` prefix that runs one launcher on each of ``nnodes`` nodes of this SLURM allocation.

    Returns (srun prefix, rendezvous endpoint, rendezvous id). The batch script runs on the
    allocation's first node, so the rendezvous store lives here, on a free port
    (``BRAINFM_RDZV_PORT`` fixes it, e.g. when a firewall allows only some ports). Without
    ``--exact`` each launcher's step gets all CPUs of its node, and by default all its GPUs.
    """
    from brainfm.errors import ConfigError

    env = os.environ if env is None else env
    job = env.get("SLURM_JOB_ID")
    if not job:
        raise ConfigError(f"--nnodes {nnodes}: not inside a SLURM allocation (no SLURM_JOB_ID); outside SLURM "
                          "start one launcher per node with --rdzv-endpoint HOST:PORT")
    have = _allocation_nodes(job, env)
    if have < nnodes:
        raise ConfigError(f"--nnodes {nnodes}: SLURM job {job} has only {have} node(s); request nodes={nnodes}")
    port = int(env.get("BRAINFM_RDZV_PORT") or _free_port())
    srun = ["srun", f"--nodes={nnodes}", f"--ntasks={nnodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    return srun, f"{socket.gethostname()}:{port}", f"slurm-{job}"


def launch_torchrun(nproc: int, payload: dict[str, Any], work_dir: Path, nnodes: int = 1,
                    rdzv_endpoint: str | None = None) -> None:
    """Run :mod:`brainfm.ssl.launch` under ``torch.distributed.run``: ``nproc`` processes per node.

    ``payload`` (recipe, config, paths) is passed through a JSON file in ``work_dir``. With
    ``nnodes > 1`` and no ``rdzv_endpoint``, the launchers are fanned out over the SLURM
    allocation with ``srun``; with an endpoint, this call is one node's launcher (start the same
    command on every node). A failing worker makes the launcher exit non-zero, which is turned
    into a ``RuntimeError``.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    fd, spec_path = tempfile.mkstemp(prefix="launch-", suffix=".json", dir=work_dir)
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, default=str)
    prefix: list[str] = []
    rdzv_id = "brainfm-" + hashlib.sha1(str(work_dir.resolve()).encode()).hexdigest()[:16]
    if nnodes > 1 and rdzv_endpoint is None:
        prefix, rdzv_endpoint, rdzv_id = slurm_fanout(nnodes)
    cmd = prefix + torchrun_command(spec_path, nproc, nnodes, rdzv_endpoint, rdzv_id)
    try:
        proc = subprocess.run(cmd, check=False)
    finally:
        Path(spec_path).unlink(missing_ok=True)
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun with {nnodes} node(s) x {nproc} processes failed (exit {proc.returncode}); "
                           "see the log above")
