"""Frozen feature extraction and the feature store every downstream head reads.

The names resolve lazily: reading a feature store (heads, kNN, CKA, statistics) does not import
torch, which only extraction needs (each workflow job is a fresh process; torch costs seconds).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["extract_features", "FeatureStore", "fuse_modalities", "central_indices", "write_feature_dir"]

_HOME = {"extract_features": "brainfm.features.extract", "central_indices": "brainfm.features.extract",
         "FeatureStore": "brainfm.features.store", "fuse_modalities": "brainfm.features.store",
         "write_feature_dir": "brainfm.features.store"}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        value = getattr(importlib.import_module(_HOME[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'brainfm.features' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
