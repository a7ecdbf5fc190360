"""Which device a step runs on and in which precision: the one place ``auto`` becomes a choice.

``resolve_device``: ``auto`` -> ``cuda`` or ``cpu``. ``resolve_precision``: ``auto`` -> ``bf16``
where the device computes bf16 natively (a CUDA GPU with bf16 support; a CPU with AVX512_BF16,
AMX-BF16 or the Arm BF16 extension) and ``fp32`` elsewhere, because on a CPU without native bf16
autocast only adds conversions (about 3x slower than fp32 for a ViT-B/16 on an AVX-512 Xeon).

Training 3D convolutions on a CPU (``conv3d_training``) adds a numerical check: with torch 2.14's
oneDNN on an AVX512-BF16 EPYC, bf16 autocast Conv3d weight gradients came out wrong by orders of
magnitude (inf, NaN) for small feature maps (2³ voxels, as deep in the demo's 3D ResNet), in
most draws but not all, while the forward pass, Conv2d and Linear were right.
:func:`bf16_conv3d_gradients_ok` compares them with fp32 on a few such shapes, several draws each
(about 0.3 s, once per process); where any disagrees ``auto`` takes fp32.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

from brainfm.errors import ConfigError

__all__ = ["DEVICES", "PRECISIONS", "resolve_device", "resolve_precision", "cpu_flags", "cpu_has_native_bf16",
           "bf16_conv3d_gradients_ok", "gradients_agree", "autocast_dtype", "cpu_attention", "torch_threads"]

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
#: /proc/cpuinfo flags of a CPU whose vector or matrix units compute in bf16 (x86: AVX512_BF16, AMX;
#: Arm: the BF16 extension, listed as ``bf16`` in "Features")
NATIVE_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})

log = logging.getLogger("brainfm")


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


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags of the first processor in ``cpuinfo`` (empty where the file is absent)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            return frozenset(value.split())
    return frozenset()


def cpu_has_native_bf16(flags: Collection[str] | None = None, capability: str | None = None) -> bool:
    """Whether the CPU computes bf16 natively: a native-bf16 flag, or torch's dispatch level says AMX."""
    flags = cpu_flags() if flags is None else flags
    if NATIVE_BF16_CPU_FLAGS & {f.lower() for f in flags}:
        return True
    if capability is None:
        import torch

        capability = str(torch.backends.cpu.get_cpu_capability())
    return "AMX" in capability.upper() or "BF16" in capability.upper()


def resolve_precision(name: str | None, device: str, *, flags: Collection[str] | None = None,
                      capability: str | None = None, cuda_bf16: bool | None = None,
                      conv3d_training: bool = False, conv3d_ok: bool | None = None) -> str:
    """``auto`` -> ``bf16`` where ``device`` runs bf16 natively, else ``fp32``; ``fp32``/``bf16`` as given.

    ``device`` is a resolved device (``cpu``, ``cuda``, ``cuda:N``). ``flags``/``capability``
    (CPU) and ``cuda_bf16`` (GPU) default to what this machine reports; tests pass their own.
    An explicit ``bf16`` on hardware without native support is honoured with a warning.
    ``conv3d_training``: the job trains 3D convolutions; on a CPU ``auto`` then also needs
    ``conv3d_ok`` (default: :func:`bf16_conv3d_gradients_ok` on this machine).
    """
    name = "auto" if name is None else str(name)
    if name not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {name!r}")
    kind = str(device).split(":")[0]
    if kind not in ("cpu", "cuda"):
        raise ConfigError(f"precision needs a resolved device (cpu or cuda[:N]), got {device!r}")
    if name == "fp32":
        return name
    if kind == "cuda":
        if cuda_bf16 is None:
            import torch

            cuda_bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))
        native = cuda_bf16
    else:
        native = cpu_has_native_bf16(flags, capability)
    if name == "bf16":
        if not native:
            log.warning("precision bf16 on %s without native bf16 support: expect it to be slower than fp32", device)
        return name
    if native and conv3d_training and kind == "cpu":
        if conv3d_ok is None:
            conv3d_ok = bf16_conv3d_gradients_ok()
        if not conv3d_ok:
            log.warning("precision auto -> fp32: this CPU's bf16 Conv3d weight gradients disagree with fp32 "
                        "(brainfm.device.bf16_conv3d_gradients_ok)")
            return "fp32"
    return "bf16" if native else "fp32"


def gradients_agree(got: Any, ref: Any, tolerance: float) -> bool:
    """Relative error ``|got - ref| / |ref|`` below ``tolerance`` (False for NaN or inf): a bf16 gradient vs fp32."""
    return float((got.float() - ref).norm()) / max(float(ref.norm()), 1e-12) < tolerance


@functools.lru_cache(maxsize=1)
def bf16_conv3d_gradients_ok(tolerance: float = 0.05, repeats: int = 3) -> bool:
    """Whether bf16 autocast Conv3d weight gradients on this CPU match fp32 (relative error < ``tolerance``).

    Shapes of the deep, small feature maps of a 3D ResNet (2³ and 4³ voxels, 64-256 channels), each
    drawn ``repeats`` times: the wrong results seen here come and go between draws and processes (in
    about nine draws of ten), so any wrong draw decides. bf16 rounding alone gives a relative error
    near 0.003.
    """
    import torch

    gen = torch.Generator().manual_seed(0)
    for channels, batch, size in ((64, 2, 2), (128, 16, 4), (256, 16, 2)) * int(repeats):
        conv = torch.nn.Conv3d(channels, channels, 3, padding=1, bias=False)
        x = torch.randn(batch, channels, size, size, size, generator=gen)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(x)
        grad = torch.randn(y.shape, generator=gen)
        y.backward(grad.to(y.dtype))
        low = conv.weight.grad.detach().clone()
        conv.weight.grad = None
        conv(x).backward(grad)
        if not gradients_agree(low, conv.weight.grad.detach(), tolerance):
            return False
    return True


def autocast_dtype(precision: str):  # -> torch.dtype | None
    """The autocast dtype of a resolved precision (None: run in fp32, no autocast)."""
    if precision not in ("fp32", "bf16"):
        raise ConfigError(f"precision must be resolved to fp32 or bf16 first, got {precision!r}")
    if precision == "fp32":
        return None
    import torch

    return torch.bfloat16


def cpu_attention(modules: Iterable[Any], device: str, precision: str) -> int:
    """Under bf16 autocast on a CPU, timm's attention computes softmax(q k^T) v itself; returns how many switched.

    PyTorch's CPU flash kernel behind ``scaled_dot_product_attention`` is slow in bf16, above all
    its backward: for ViT sequences of 14-257 tokens (head dim 64) the explicit product was 2-9x
    faster forward + backward, no slower forward only, and even at 1025 tokens (AMD EPYC with
    AVX512_BF16, torch 2.14, one thread). The attention modules of timm (and brainfm's RoPE
    attention) read ``fused_attn`` at every call; GPUs and fp32 keep the fused kernel. Same result
    up to rounding.
    """
    if not str(device).startswith("cpu") or precision != "bf16":
        return 0
    n = 0
    for root in modules:
        for m in root.modules():
            if getattr(m, "fused_attn", False) is True:
                m.fused_attn = False
                n += 1
    return n


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
