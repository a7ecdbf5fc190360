"""Process-group plumbing for ``torchrun`` data parallelism (NCCL on GPUs, gloo on CPU).

The trainers call the helpers here unconditionally; with one process they are no-ops, so the
same code path runs in the CPU demo, under ``torchrun --nproc_per_node=K`` and on a cluster.
Losses that need the whole global batch (Sinkhorn-Knopp, centering, KoLeo, NT-Xent) use
:func:`all_reduce_sum` and :func:`gather_with_grad`, which is what makes a K-process run
numerically equivalent to one process with the same global batch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

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
]


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def init_distributed(device: str = "cpu") -> DistEnv:
    """Join the process group described by torchrun's environment (or run as a single process)."""
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
    return DistEnv(rank=r, world_size=n, local_rank=local, device=dev, backend=backend)


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


def launch_torchrun(nproc: int, payload: dict[str, Any], work_dir: Path) -> None:
    """Run :mod:`brainfm.ssl.launch` under ``torch.distributed.run`` with ``nproc`` processes.

    ``payload`` (recipe, config, paths) is passed through a JSON file in ``work_dir``. A failing
    worker makes the launcher exit non-zero, which is turned into a ``RuntimeError``.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    fd, spec_path = tempfile.mkstemp(prefix="launch-", suffix=".json", dir=work_dir)
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh, default=str)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "brainfm.ssl.launch", spec_path]
    try:
        proc = subprocess.run(cmd, check=False)
    finally:
        Path(spec_path).unlink(missing_ok=True)
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun with {nproc} processes failed (exit {proc.returncode}); see the log above")
