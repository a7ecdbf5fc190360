"""Settings of the analyses, statistics and report that close the run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from brainfm.config.spec import Spec

__all__ = ["StatsSpec", "CkaSpec", "SimilaritySpec", "AnalysisSpec", "ReportSpec"]


@dataclass(frozen=True)
class StatsSpec(Spec):
    """Comparisons against ``reference`` (paper §4.7): bootstrap resamples, seed, level.

    ``controls`` pairs each pretrained backbone with its random-initialisation control: what
    pretraining added is measured against the same architecture untrained, not against BrainDINO.
    """

    definition = "stats"

    reference: str
    n_boot: int
    seed: int
    alpha: float
    controls: dict[str, str]


@dataclass(frozen=True)
class CkaSpec:
    datasets: tuple[str, ...]
    modalities: tuple[str, ...] | None  # None: every modality
    depth_labels: tuple[str, ...]


@dataclass(frozen=True)
class SimilaritySpec:
    """Reference-point similarity maps (Fig. 6a; :mod:`brainfm.analysis.similarity`); off without a dataset."""

    dataset: str | None
    modality: str
    references: tuple[str, ...]
    n_cases: int
    backbones: tuple[str, ...]  # filled with every backbone when empty


@dataclass(frozen=True)
class AnalysisSpec(Spec):
    definition = "analysis"

    cka: CkaSpec
    similarity: SimilaritySpec = SimilaritySpec(None, "T1", ("tumour", "csf", "white_matter"), 8, ())

    @classmethod
    def _build(cls, d: dict[str, Any], *, name: str | None, source: str, where: str) -> AnalysisSpec:
        c = d["cka"]
        mods = c["modalities"]
        s = d.get("similarity") or {}
        sim = SimilaritySpec(dataset=s.get("dataset"), modality=s.get("modality", "T1"),
                             references=tuple(s.get("references") or ("tumour", "csf", "white_matter")),
                             n_cases=int(s.get("n_cases", 8)), backbones=tuple(s.get("backbones") or ()))
        return cls(cka=CkaSpec(datasets=tuple(c["datasets"]), modalities=tuple(mods) if mods else None,
                               depth_labels=tuple(c["depth_labels"])), similarity=sim)


@dataclass(frozen=True)
class ReportSpec(Spec):
    definition = "report"

    title: str
