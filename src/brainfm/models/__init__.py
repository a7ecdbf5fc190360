"""Encoders of the benchmark: a timm-style registry, the ``Encoder`` interface, checkpoints.

>>> from brainfm.models import create_encoder, list_encoders
>>> enc = create_encoder("braindino", weights="results/pretrain/braindino/weights.pth")

Registered encoders come from :mod:`brainfm.models.vit` (2D slice ViTs: ``vit_dinov3``,
``braindino``, ``dinov3``, ``vit_random``, ``brainfound``) and, when present, from the
optional :mod:`brainfm.models.baselines` package (3D baselines). Both are imported on the first
registry lookup (``create_encoder``, ``list_encoders``; see :func:`load_plugins`), not at import
time, so a module that registers encoders can import from here without a cycle.
"""

from brainfm.models.base import INPUT_KINDS, Encoder
from brainfm.models.checkpoint import (
    export_dinov3_teacher,
    export_timm,
    load_encoder_weights,
    read_checkpoint,
    sha256_file,
)
from brainfm.models.registry import create_encoder, get_factory, list_encoders, load_plugins, register_encoder

__all__ = [
    "Encoder",
    "INPUT_KINDS",
    "register_encoder",
    "create_encoder",
    "list_encoders",
    "get_factory",
    "load_plugins",
    "load_encoder_weights",
    "read_checkpoint",
    "export_dinov3_teacher",
    "export_timm",
    "sha256_file",
]
