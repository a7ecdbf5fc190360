"""Backbones (encoder + weights) and the frozen feature-extraction settings.

A weights reference is a file, ``pretrain:<run>`` (the output of a pretraining run of this
config) or null (random initialisation). :class:`WeightsRef` is the only parser of that syntax;
:class:`~brainfm.config.model.Config` resolves a run to its weights path in the results layout,
so a backbone spec handed to a command always carries a concrete file (or none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from brainfm.config.spec import Spec
from brainfm.errors import ConfigError

__all__ = ["WeightsRef", "BackboneSpec", "FeaturesSpec"]

_PRETRAIN = "pretrain:"


@dataclass(frozen=True)
class WeightsRef:
    """``file`` (a user-supplied path), ``run`` (a pretraining run of this config), or neither."""

    file: str | None = None
    run: str | None = None

    @classmethod
    def parse(cls, value: str | None, where: str = "weights") -> WeightsRef:
        if value is None:
            return cls()
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}: expected a file, 'pretrain:<run>' or null, got {value!r}")
        if value.strip().lower() in ("none", "null"):
            raise ConfigError(f"{where}: write null (no weights), not the string {value!r}")
        if value.startswith(_PRETRAIN):
            run = value[len(_PRETRAIN):]
            if not run:
                raise ConfigError(f"{where}: 'pretrain:' needs a run name")
            return cls(run=run)
        return cls(file=value)

    @property
    def is_user_file(self) -> bool:
        return self.file is not None


@dataclass(frozen=True)
class BackboneSpec(Spec):
    """An encoder of the registry with its arguments and (resolved) weights file."""

    definition = "backbone"
    named = True

    name: str
    encoder: str
    weights: str | None  # a concrete file after resolution (or null: random initialisation)
    args: dict[str, Any]
    label: str
    layers: tuple[int, ...]  # blocks/stages pooled for layer-wise analyses; resolved from features.layers
    # the pretraining run whose output ``weights`` is; known to the workflow's DAG, not part of the JSON
    pretrain_run: str | None = field(default=None, metadata={"json": False})

    @classmethod
    def _build(cls, d: dict[str, Any], *, name: str | None, source: str, where: str) -> BackboneSpec:
        d = dict(d)
        d.setdefault("label", name)
        d.setdefault("layers", [])
        return super()._build(d, name=name, source=source, where=where)

    @property
    def weights_ref(self) -> WeightsRef:
        return WeightsRef(run=self.pretrain_run) if self.pretrain_run else WeightsRef.parse(self.weights)


@dataclass(frozen=True)
class FeaturesSpec(Spec):
    """Frozen extraction: batch sizes (slices; volumes of a 3D encoder), threads, layer-wise and central-patch features."""

    definition = "features"

    batch_size: int
    volume_batch: int
    layers: tuple[int, ...]
    central_range: tuple[float, float]
    threads: int
    resources: dict[str, Any] = field(default_factory=dict)
