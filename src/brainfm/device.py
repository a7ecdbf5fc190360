"""Which device a step runs on: the one place ``auto`` is turned into ``cuda`` or ``cpu``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from brainfm.errors import ConfigError

__all__ = ["DEVICES", "resolve_device", "torch_threads"]

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | None = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without a GPU is an error."""
    name = "auto" if name is None else str(name)
    if name.split(":")[0] not in DEVICES:
        raise ConfigError(f"device must be one of {DEVICES} (or cuda:N), got {name!r}")
    if name == "cpu":
        return name
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but no CUDA device is visible")
    return name


@contextlib.contextmanager
def torch_threads(n: int | None, *, blas: bool = False) -> Iterator[None]:
    """Run a block with ``n`` torch threads (and, with ``blas``, ``n`` BLAS/OpenMP threads); restore after.

    ``n`` of None or 0 leaves the thread counts as they are.
    """
    import torch

    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        if n and blas:
            import threadpoolctl

            with threadpoolctl.threadpool_limits(int(n)):
                yield
        else:
            yield
    finally:
        torch.set_num_threads(old)
