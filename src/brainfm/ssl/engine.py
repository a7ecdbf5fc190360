"""The training loop shared by the three recipes (DINO stage 1/2, BrainFound, SimCLR).

A recipe is an :class:`SSLMethod` (models, loss, EMA, state); the loop owns everything else:
per-iteration schedules, the optimizer, gradient clipping per sub-model, the non-finite guard,
logging, resume checkpoints and the data position. Each iteration re-seeds torch's global RNG
from (seed, iteration, rank) — stochastic depth is the only consumer — so a resumed run is
bit-identical to an uninterrupted one on CPU whatever happened before the restart.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from brainfm.device import autocast_dtype, cpu_attention
from brainfm.errors import BrainfmError
from brainfm.ssl.checkpointing import (
    capture_rng,
    check_compatible,
    latest_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from brainfm.ssl.distributed import DistEnv, all_gather_objects, all_reduce_sum, barrier
from brainfm.ssl.monitor import Monitor
from brainfm.ssl.optim import apply_schedule, build_adamw
from brainfm.ssl.schedules import Schedules

__all__ = ["SSLMethod", "FitResult", "NonFiniteLossError", "fit", "iteration_seed"]

log = logging.getLogger("brainfm.ssl")


class NonFiniteLossError(BrainfmError):
    """Training produced non-finite losses or gradients for several iterations in a row."""


class SSLMethod(ABC):
    """What a recipe supplies to :func:`fit`."""

    recipe: str = ""

    @abstractmethod
    def signature(self) -> dict[str, Any]:
        """Settings that define parameter shapes; a checkpoint with different values is refused."""

    @abstractmethod
    def param_groups(self) -> list[dict]: ...

    @abstractmethod
    def clip_modules(self) -> list[nn.Module]:
        """Sub-models whose gradient norms are clipped separately (as DINOv3 does)."""

    @abstractmethod
    def forward_loss(self, batch: dict[str, torch.Tensor], it: int, sched: dict[str, float]
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]: ...

    def after_step(self, it: int, sched: dict[str, float]) -> None:
        """Called after a successful optimizer step (EMA teacher, centre updates)."""

    def discard_step(self) -> None:
        """Called when an iteration is skipped (non-finite): drop pending statistics."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]: ...

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any], path: Path) -> None: ...

    def train(self) -> None: ...


@dataclass
class FitResult:
    start_iteration: int
    final_iteration: int
    total_iterations: int
    samples_seen: int
    seconds: float
    img_per_s: float  # slices (or volumes) per second over timed iterations, all processes together
    last_metrics: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None

    @property
    def finished(self) -> bool:
        return self.final_iteration >= self.total_iterations


def iteration_seed(seed: int, it: int, rank: int) -> int:
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(it), int(rank)]).generate_state(1)[0])


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    nb = device.type == "cuda"
    return {k: (v.to(device, non_blocking=nb) if torch.is_tensor(v) else v) for k, v in batch.items()}


def fit(
    method: SSLMethod,
    cfg: Any,
    build_loader: Callable[[int, int, int], Iterable[dict[str, torch.Tensor]]],
    schedules: Schedules,
    work_dir: Path,
    env: DistEnv,
    total_iters: int,
    global_batch: int,
    desc: str = "pretrain",
) -> FitResult:
    """Train ``method`` up to ``total_iters`` iterations, resuming from ``work_dir/ckpt`` if possible.

    ``build_loader(start_iter, start_position, n_iters)`` returns the batches of this process.
    """
    work_dir = Path(work_dir)
    ckpt_dir = work_dir / "ckpt"
    optimizer = build_adamw(method.param_groups(), betas=tuple(cfg.betas))
    start_it, position = 0, 0
    last_ckpt = latest_checkpoint(ckpt_dir)
    if last_ckpt is not None:
        state = load_checkpoint(last_ckpt, map_location=env.device)
        check_compatible(last_ckpt, state.get("signature", {}), method.signature())
        method.load_state_dict(state["model"], last_ckpt)
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as exc:
            from brainfm.errors import CheckpointError

            raise CheckpointError(last_ckpt, f"optimizer state does not match the model: {exc}") from exc
        start_it, position = int(state["iteration"]), int(state["samples_seen"])
        rngs = state.get("rng") or []
        if len(rngs) == env.world_size:
            restore_rng(rngs[env.rank])
        log.info("resuming %s from %s (iteration %d, %d samples seen)", desc, last_ckpt, start_it, position)
    stop_it = total_iters
    if getattr(cfg, "max_iters_this_run", None):
        stop_it = min(total_iters, start_it + int(cfg.max_iters_this_run))
    n_iters = max(stop_it - start_it, 0)
    result = FitResult(start_it, start_it, total_iters, position, 0.0, 0.0, checkpoint=last_ckpt)
    if n_iters == 0:
        return result

    dtype = autocast_dtype(env.precision)  # resolved once, by brainfm.device.resolve_precision
    autocast = (lambda: torch.autocast(env.device.type, dtype=dtype)) if dtype is not None else contextlib.nullcontext
    monitor = Monitor(work_dir, env.is_main, start_it, total_iters, desc)
    cpu_attention(method.clip_modules(), env.device.type, env.precision)  # the student (trained) parts
    method.train()
    loader = build_loader(start_it, position, n_iters)
    nonfinite = 0
    t_start = time.perf_counter()
    t_window, n_window = time.perf_counter(), 0
    timed_s, timed_n = 0.0, 0
    metrics: dict[str, Any] = {}
    it = start_it
    try:
        batches = iter(loader)
        for it in range(start_it, stop_it):
            t_it = time.perf_counter()
            batch = _to_device(next(batches), env.device)
            sched = schedules.at(it)
            apply_schedule(optimizer, sched["lr"], sched["weight_decay"], sched["last_layer_lr"])
            torch.manual_seed(iteration_seed(cfg.seed, it, env.rank))
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss, metrics = method.forward_loss(batch, it, sched)
            ok = all_reduce_sum(torch.tensor([0.0 if torch.isfinite(loss).item() else 1.0], device=env.device))
            grad_norms: dict[str, float] = {}
            abort: NonFiniteLossError | None = None
            if ok.item() == 0:
                loss.backward()
                # every sub-model's gradient norm (clipped to clip_grad where set): the non-finite guard
                # must see the gradients whether or not the recipe clips them
                for i, m in enumerate(method.clip_modules()):
                    grads = [p.grad for p in m.parameters() if p.grad is not None]
                    if not grads:
                        continue
                    if cfg.clip_grad:
                        norm = torch.nn.utils.clip_grad_norm_([p for p in m.parameters() if p.grad is not None],
                                                              cfg.clip_grad)
                    else:
                        norm = torch.nn.utils.get_total_norm(grads)
                    grad_norms[f"grad_norm_{i}"] = float(norm)
                if all(math.isfinite(v) for v in grad_norms.values()):
                    optimizer.step()
                    method.after_step(it, sched)
                    nonfinite = 0
                else:
                    ok = ok + 1
            if ok.item() != 0:
                optimizer.zero_grad(set_to_none=True)
                method.discard_step()
                nonfinite += 1
                terms = {k: float(v) for k, v in metrics.items()}
                log.warning("iteration %d: non-finite loss or gradients (%s); step skipped (%d in a row)",
                            it, terms, nonfinite)
                if nonfinite >= cfg.max_nonfinite:
                    abort = NonFiniteLossError(
                        f"{desc}: loss or gradients were non-finite for {nonfinite} consecutive iterations "
                        f"(last at iteration {it}; loss terms {terms}). Last good checkpoint: "
                        f"{latest_checkpoint(ckpt_dir) or 'none'}. Try a lower lr, precision fp32, or check the "
                        "input slices (blank or constant images, NaNs in the store).")
            position += global_batch
            n_window += 1
            log_now = (it + 1) % cfg.log_every == 0 or it + 1 == stop_it or abort is not None
            if it - start_it >= 2:  # the first iterations include worker start-up and warm-up
                timed_s += time.perf_counter() - t_it
                timed_n += 1
            if log_now:
                elapsed = time.perf_counter() - t_window
                row = _mean_over_processes({"loss": loss.detach(), **metrics}, env)
                row.update(sched)
                row.update(grad_norms)
                row["img_per_s"] = global_batch * n_window / max(elapsed, 1e-9)
                row["samples_seen"] = position
                monitor.log(it, row)
                result.last_metrics = row
                t_window, n_window = time.perf_counter(), 0
            monitor.step()
            if abort is not None:
                raise abort
            if (it + 1) % cfg.checkpoint_every == 0 or it + 1 == stop_it:
                result.checkpoint = _save(method, optimizer, ckpt_dir, it + 1, position, global_batch, env, cfg)
    finally:
        monitor.close()
    result.final_iteration = stop_it
    result.samples_seen = position
    result.seconds = time.perf_counter() - t_start
    result.img_per_s = global_batch * timed_n / timed_s if timed_n else global_batch * n_iters / result.seconds
    return result


def _mean_over_processes(values: dict[str, Any], env: DistEnv) -> dict[str, float]:
    """Loss terms averaged over processes (each process computes them on its share of the batch)."""
    keys = list(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=env.device)
    if env.world_size > 1:
        t = all_reduce_sum(t) / env.world_size
    return dict(zip(keys, t.tolist()))


def _save(method: SSLMethod, optimizer: torch.optim.Optimizer, ckpt_dir: Path, iteration: int, position: int,
          global_batch: int, env: DistEnv, cfg: Any) -> Path:
    rngs = all_gather_objects(capture_rng())
    path = ckpt_dir / f"iter-{iteration:08d}.pt"
    if env.is_main:
        payload = {
            "recipe": method.recipe,
            "signature": method.signature(),
            "config": cfg.to_dict(),
            "model": method.state_dict(),
            "optimizer": optimizer.state_dict(),
            "samples_seen": int(position),
            "global_batch": int(global_batch),
            "world_size": int(env.world_size),
            "rng": rngs,
        }
        path = save_checkpoint(ckpt_dir, iteration, payload, keep=cfg.keep_checkpoints)
    barrier()
    return path
