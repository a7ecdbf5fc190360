"""The preprocessing protocol (paper §4.1.2, §4.3) and the preprocessing step's settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from brainfm.config.spec import Spec
from brainfm.errors import ConfigError

__all__ = ["ProtocolSpec", "PreprocessSpec", "PRODUCTS", "PROTOCOL_KEYS"]

#: ``downstream``: volumes resampled to ``downstream_shape`` (and masks on the same grid);
#: ``pretrain``: axial slices of the cube drawn from N(mu, sigma).
PRODUCTS = ("downstream", "pretrain")
PROTOCOL_KEYS = ("cube", "clip_percentiles", "pretrain_slices", "downstream_shape", "blank_threshold",
                 "shard_size_volumes", "shard_size_slices")


def _check_protocol(d: dict[str, Any], source: str, where: str) -> None:
    cube = d["cube"]
    lo, hi = d["clip_percentiles"]
    ps = d["pretrain_slices"]
    problems = []
    if not lo < hi:
        problems.append(f"clip_percentiles {[lo, hi]} must satisfy lo < hi")
    if not 1 <= ps["n"] <= cube:
        problems.append(f"pretrain_slices.n={ps['n']} must be in [1, cube={cube}] (for a smaller cube scale n, mu and "
                        f"sigma with it, e.g. cube 64: n=32, mu=32, sigma=12.5)")
    if not 0.0 <= ps["mu"] <= cube:
        problems.append(f"pretrain_slices.mu={ps['mu']} must lie on the axis [0, {cube}]")
    if problems:
        raise ConfigError(f"{source}: {where}: " + "; ".join(problems))


@dataclass(frozen=True)
class ProtocolSpec(Spec):
    """What a preprocessed volume looks like; the defaults (in the schema) are the paper's values."""

    definition = "protocol"

    cube: int
    clip_percentiles: tuple[float, float]
    pretrain_slices: dict[str, Any]  # {"n": int, "mu": float, "sigma": float}
    downstream_shape: tuple[int, int, int]
    blank_threshold: float
    shard_size_volumes: int
    shard_size_slices: int

    @classmethod
    def _build(cls, d: dict[str, Any], *, name: str | None, source: str, where: str) -> ProtocolSpec:
        ps = d["pretrain_slices"]
        d = {k: d[k] for k in PROTOCOL_KEYS} | {
            "clip_percentiles": [float(v) for v in d["clip_percentiles"]],
            "pretrain_slices": {"n": int(ps["n"]), "mu": float(ps["mu"]), "sigma": float(ps["sigma"])},
            "blank_threshold": float(d["blank_threshold"]),
        }
        _check_protocol(d, source, where)
        return super()._build(d, name=name, source=source, where=where)

    def as_mapping(self) -> dict[str, Any]:
        """The protocol as the plain dict the preprocessing code and store metadata use."""
        return self.to_dict()


@dataclass(frozen=True)
class PreprocessSpec(Spec):
    definition = "preprocess"

    protocol: ProtocolSpec
    skull_strip: str  # none | deepbet | hdbet
    n_jobs: int
    resources: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def _build(cls, d: dict[str, Any], *, name: str | None, source: str, where: str) -> PreprocessSpec:
        protocol = ProtocolSpec._build({k: d[k] for k in PROTOCOL_KEYS}, name=None, source=source, where=where)
        return cls(protocol=protocol, skull_strip=d["skull_strip"], n_jobs=d["n_jobs"], resources=d["resources"])

    def to_dict(self) -> dict[str, Any]:
        return {**self.protocol.to_dict(), "skull_strip": self.skull_strip, "n_jobs": self.n_jobs,
                "resources": dict(self.resources)}
