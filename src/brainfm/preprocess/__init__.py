"""The paper's preprocessing (§4.1.2, §4.3) and the sharded stores it writes.

* :mod:`~brainfm.preprocess.volume`     pure array ops: bbox crop, torch resize, percentile clip, z-score
* :mod:`~brainfm.preprocess.skullstrip` adapters: ``none`` | ``deepbet`` | ``hdbet``
* :mod:`~brainfm.preprocess.slices`     N(mu, sigma) axial slice sampling, blank-slice flags
* :mod:`~brainfm.preprocess.store`      ``ShardWriter`` / ``ShardedStore`` / ``concat_stores``
* :mod:`~brainfm.preprocess.pipeline`   ``preprocess_dataset``: manifest -> stores + quarantine + report

Submodules are imported lazily so that reading a store does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ShardWriter": "store",
    "ShardedStore": "store",
    "ConcatStore": "store",
    "concat_stores": "store",
    "preprocess": "pipeline",
    "preprocess_dataset": "pipeline",
    "process_volume": "pipeline",
    "resolve_protocol": "pipeline",
    "get_skull_stripper": "skullstrip",
    "sample_slice_indices": "slices",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
