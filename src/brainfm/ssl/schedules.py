"""Per-iteration schedules (learning rate, weight decay, teacher momentum, teacher temperature).

Every schedule is a pure function of the iteration, so a resumed run needs no schedule state:
the checkpoint's iteration number is enough. The shape follows DINOv3's
``linear_warmup_cosine_decay``: a linear ramp ``start -> peak`` over ``warmup`` iterations
(endpoint excluded), then a half cosine ``peak -> end`` whose last point is reached at
iteration ``total - 1``, then ``end`` for ever.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from brainfm.errors import ConfigError

__all__ = ["Schedule", "scaled_lr", "build_schedules", "Schedules"]


@dataclass(frozen=True)
class Schedule:
    start: float
    peak: float
    end: float
    warmup: int
    total: int
    frozen: int = 0  # the value is 0 for the first ``frozen`` iterations (DINO head last layer)

    def __call__(self, it: int) -> float:
        if it < self.frozen:
            return 0.0
        if it < self.warmup:
            return self.start + (self.peak - self.start) * it / self.warmup
        n_cos = self.total - self.warmup
        j = it - self.warmup
        if n_cos <= 1:
            return self.peak if j == 0 and n_cos == 1 else self.end
        if j >= n_cos:
            return self.end
        return self.end + (self.peak - self.end) * 0.5 * (1.0 + math.cos(math.pi * j / (n_cos - 1)))

    @classmethod
    def constant(cls, value: float, total: int) -> Schedule:
        return cls(value, value, value, 0, total)


def scaled_lr(lr: float, global_batch: int, rule: str) -> float:
    """The DINOv3 learning-rate scaling rules: the config gives a base lr for a reference batch."""
    if rule == "none":
        return lr
    if rule == "sqrt_wrt_1024":
        return lr * 4.0 * math.sqrt(global_batch / 1024.0)
    if rule == "linear_wrt_256":
        return lr * global_batch / 256.0
    raise ConfigError(f"unknown lr scaling rule {rule!r}")


@dataclass(frozen=True)
class Schedules:
    lr: Schedule
    last_layer_lr: Schedule
    weight_decay: Schedule
    momentum: Schedule | None = None
    teacher_temp: Schedule | None = None

    def at(self, it: int) -> dict[str, float]:
        out = {"lr": self.lr(it), "last_layer_lr": self.last_layer_lr(it), "weight_decay": self.weight_decay(it)}
        if self.momentum is not None:
            out["momentum"] = self.momentum(it)
        if self.teacher_temp is not None:
            out["teacher_temp"] = self.teacher_temp(it)
        return out


def build_schedules(cfg, global_batch: int, total_iters: int) -> Schedules:
    """Schedules of a recipe config (:class:`~brainfm.ssl.config.RunConfig` or a subclass)."""
    peak = scaled_lr(cfg.lr, global_batch, cfg.lr_scaling)
    end = scaled_lr(cfg.min_lr, global_batch, cfg.lr_scaling)
    warmup = min(cfg.warmup_iters, total_iters)
    lr = Schedule(0.0, peak, end, warmup, total_iters)
    frozen = int(getattr(cfg, "freeze_last_layer_iters", 0) or 0)
    last = Schedule(0.0, peak, end, warmup, total_iters, frozen=frozen)
    wd_end = cfg.weight_decay if cfg.weight_decay_end is None else cfg.weight_decay_end
    wd = Schedule(cfg.weight_decay, cfg.weight_decay, wd_end, 0, total_iters)
    momentum = teacher_temp = None
    if hasattr(cfg, "momentum"):
        m_end = cfg.momentum if cfg.momentum_end is None else cfg.momentum_end
        momentum = Schedule(cfg.momentum, cfg.momentum, m_end, 0, total_iters)
        tw = min(cfg.teacher_temp_warmup_iters, total_iters)
        teacher_temp = Schedule(cfg.teacher_temp_warmup, cfg.teacher_temp, cfg.teacher_temp, tw, total_iters)
    return Schedules(lr=lr, last_layer_lr=last, weight_decay=wd, momentum=momentum, teacher_temp=teacher_temp)
