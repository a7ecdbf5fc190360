"""Test-time perturbation sweeps (paper §4.5): which kinds and severities, on which tasks.

The identity of each kind (gamma 1, Gibbs alpha 0, bias strength 0) is the clean run, so it is
never a separate setting. A setting is written ``<kind>~<severity>`` in paths and on the command
line (``gamma~2``); :meth:`PerturbationSetting.parse` is the only reader of that form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from brainfm.config.spec import Spec
from brainfm.errors import ConfigError

__all__ = ["PAPER_GRIDS", "IDENTITY", "ALIASES", "canonical_kind", "PerturbationSetting", "PerturbationsSpec"]

#: The paper's severity grids (Fig. 5, Supplementary Table 18).
PAPER_GRIDS: dict[str, tuple[float, ...]] = {
    "gamma": (0.5, 0.8, 1.0, 1.2, 1.5, 2.0),
    "gibbs": (0.0, 0.1, 0.2, 0.3, 0.4),
    "bias": (0.0, 0.1, 0.2, 0.3, 0.4),
}
IDENTITY: dict[str, float] = {"gamma": 1.0, "gibbs": 0.0, "bias": 0.0}
ALIASES: dict[str, str] = {"contrast": "gamma", "gibbs_ringing": "gibbs", "bias_field": "bias"}


def canonical_kind(kind: str) -> str:
    k = ALIASES.get(kind, kind)
    if k not in IDENTITY:
        raise ConfigError(f"unknown perturbation {kind!r}; choose one of {sorted(IDENTITY) + sorted(ALIASES)}")
    return k


@dataclass(frozen=True, order=True)
class PerturbationSetting:
    kind: str
    severity: float

    @property
    def tag(self) -> str:
        return f"{self.kind}~{self.severity:g}"

    @property
    def is_identity(self) -> bool:
        return self.severity == IDENTITY[self.kind]

    @classmethod
    def parse(cls, tag: str) -> PerturbationSetting:
        """``gamma~2`` (or ``gamma:2``) -> PerturbationSetting("gamma", 2.0)."""
        kind, sep, severity = tag.replace(":", "~").partition("~")
        try:
            return cls(canonical_kind(kind), float(severity)) if sep else cls._bad(tag)
        except ValueError:
            return cls._bad(tag)

    @staticmethod
    def _bad(tag: str) -> PerturbationSetting:
        raise ConfigError(f"perturbation {tag!r}: expected KIND~SEVERITY, e.g. gamma~2 (kinds: {sorted(IDENTITY)})")


@dataclass(frozen=True)
class PerturbationsSpec(Spec):
    definition = "perturbations"

    tasks: tuple[str, ...]
    backbones: tuple[str, ...]  # resolved: every backbone when the config lists none
    grid: dict[str, tuple[float, ...]] = field(default_factory=dict)

    @classmethod
    def _build(cls, d: dict[str, Any], *, name: str | None, source: str, where: str) -> PerturbationsSpec:
        grid = {k: tuple(float(s) for s in v) for k, v in d["grid"].items()}
        return cls(tasks=tuple(d["tasks"]), backbones=tuple(d["backbones"]), grid=grid)

    @property
    def settings(self) -> list[PerturbationSetting]:
        """Every non-identity (kind, severity) of the grid, kinds in alphabetical order."""
        return [PerturbationSetting(k, s) for k in sorted(self.grid) for s in self.grid[k]
                if not PerturbationSetting(k, s).is_identity]
