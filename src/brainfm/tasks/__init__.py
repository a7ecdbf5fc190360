"""Downstream tasks on frozen features: sample assembly, head banks, runners, fine-tuning.

Workflow steps: :func:`fit_heads` (rule ``fit_heads``), :func:`brainfm.tasks.finetune.finetune`
(rule ``finetune``), :func:`evaluate_perturbed` (rule ``evaluate_perturbed``) and
:func:`subset_dataset` (rule ``subset_dataset``). Task specifications are
:class:`brainfm.config.TaskSpec`; run folders and fold planning are :mod:`brainfm.tasks.runs`.
Submodules load on first use, so reading run folders does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"fit_heads": "runner", "evaluate_perturbed": "perturbation", "subset_dataset": "runs"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
