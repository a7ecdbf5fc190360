"""Settings of the analyses, statistics and report that close the run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from brainfm.config.spec import Spec

__all__ = ["StatsSpec", "CkaSpec", "AnalysisSpec", "ReportSpec"]


@dataclass(frozen=True)
class StatsSpec(Spec):
    """Comparisons against ``reference`` (paper §4.7): bootstrap resamples, seed, level."""

    definition = "stats"

    reference: str
    n_boot: int
    seed: int
    alpha: float


@dataclass(frozen=True)
class CkaSpec:
    datasets: tuple[str, ...]
    modalities: tuple[str, ...] | None  # None: every modality
    depth_labels: tuple[str, ...]


@dataclass(frozen=True)
class AnalysisSpec(Spec):
    definition = "analysis"

    cka: CkaSpec

    @classmethod
    def _build(cls, d: dict[str, Any], *, name: str | None, source: str, where: str) -> AnalysisSpec:
        c = d["cka"]
        mods = c["modalities"]
        return cls(cka=CkaSpec(datasets=tuple(c["datasets"]), modalities=tuple(mods) if mods else None,
                               depth_labels=tuple(c["depth_labels"])))


@dataclass(frozen=True)
class ReportSpec(Spec):
    definition = "report"

    title: str
