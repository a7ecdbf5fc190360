"""Encoders of the benchmark: a timm-style registry, the ``Encoder`` interface, checkpoints.

>>> from brainfm.models import create_encoder, list_encoders
>>> enc = create_encoder("braindino", weights="results/pretrain/braindino/weights.pth")

Registered encoders come from :mod:`brainfm.models.vit` (2D slice ViTs: ``vit_dinov3``,
``braindino``, ``dinov3``, ``vit_random``, ``brainfound``) and, when present, from the
optional :mod:`brainfm.models.baselines` package (3D baselines). Both are imported on the first
registry lookup (``create_encoder``, ``list_encoders``; see :func:`load_plugins`), not at import
time, so a module that registers encoders can import from here without a cycle.
"""

from __future__ import annotations

import importlib
from typing import Any

# attribute -> submodule; imported on first use so that the torch-free catalogue
# (brainfm.models.catalog) can be read without importing torch
_EXPORTS = {
    "Encoder": "base", "INPUT_KINDS": "base",
    "register_encoder": "registry", "create_encoder": "registry", "list_encoders": "registry",
    "get_factory": "registry", "load_plugins": "registry", "user_weights": "registry",
    "load_encoder_weights": "checkpoint", "read_checkpoint": "checkpoint", "export_dinov3_teacher": "checkpoint",
    "export_timm": "checkpoint", "sha256_file": "checkpoint",
    "ENCODERS": "catalog", "EncoderInfo": "catalog", "encoder_info": "catalog",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
