"""Full fine-tuning of encoder + head against the frozen heads (paper §4.4, Supplementary Table 6)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from brainfm.config.spec import Spec

__all__ = ["FinetuneSpec"]


@dataclass(frozen=True)
class FinetuneSpec(Spec):
    """Settings of the joint optimisation; the head's own settings come from the task spec."""

    definition = "finetune"

    tasks: tuple[str, ...]
    backbones: tuple[str, ...]
    ratios: tuple[float, ...]  # paper: 10% and 100%
    seeds: tuple[int, ...]
    encoder_lr: float  # the head keeps its frozen-protocol lr; the pretrained encoder moves slower
    batch_size: int  # volumes per step
    max_epochs: int
    patience: int
    train_slices: int | None  # random slices per volume per step (memory); evaluation uses all
    slice_chunk: int | None  # slices per gradient-checkpointed forward (memory without dropping slices)
    grad_clip: float | None
    threads: int  # Snakemake threads of each job (the schema gives the default)
    resources: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def _build(cls, d: dict[str, Any], *, name: str | None, source: str, where: str) -> FinetuneSpec:
        d = dict(d, ratios=[float(r) for r in d["ratios"]], encoder_lr=float(d["encoder_lr"]))
        return super()._build(d, name=name, source=source, where=where)
