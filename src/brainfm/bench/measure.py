"""What every benchmark records beside its numbers: the machine, its load, and robust wall times.

Timings on a shared machine drift, so each benchmark warms up first, times several repeats and
keeps them all (the reports quote medians); the machine description and load average let a reader
judge a number later.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["timings", "summarize_timings", "machine_info", "load_average", "cpu_name"]


def timings(fn: Callable[[], Any], warmup: int, iters: int, sync: Callable[[], None] | None = None) -> list[float]:
    """Seconds of ``iters`` calls of ``fn`` after ``warmup`` untimed ones; ``sync`` waits for queued device work."""
    for _ in range(warmup):
        fn()
    if sync is not None:
        sync()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        out.append(time.perf_counter() - t0)
    return out


def summarize_timings(times: list[float]) -> dict[str, float]:
    """Median, minimum and maximum of repeated timings, with their count."""
    return {"seconds_median": float(statistics.median(times)), "seconds_min": float(np.min(times)),
            "seconds_max": float(np.max(times)), "repeats": len(times)}


def load_average() -> list[float] | None:
    """The 1/5/15-minute load average (None where the OS has none): other jobs lower every number."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, or what :mod:`platform` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """Python, numpy and torch versions, CPUs and threads, CUDA, platform and load of this machine."""
    import torch

    info: dict[str, Any] = {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
                            "platform": platform.platform(), "processor": cpu_name(), "cpu_count": os.cpu_count(),
                            "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
                            "load_average": load_average()}
    with contextlib.suppress(AttributeError):  # not on Linux
        info["cpu_affinity"] = len(os.sched_getaffinity(0))
    return info
