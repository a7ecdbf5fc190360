"""Datasets of a run: where each comes from, and the settings shared by phantom datasets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from brainfm.config.spec import Spec

__all__ = ["DatasetSpec", "PhantomSpec", "SOURCES", "DEFAULT_PHANTOM_SUBJECTS"]

#: phantom: generated; local: on disk under ``path``; download: fetched into ``path``;
#: union: pooled manifests of ``parts``; subset: the subjects of ``of`` that task ``train_of`` never tests.
SOURCES = ("phantom", "local", "download", "union", "subset")
DEFAULT_PHANTOM_SUBJECTS = 20


@dataclass(frozen=True)
class DatasetSpec(Spec):
    definition = "dataset"
    named = True

    name: str
    source: str
    registry: str = ""  # registry entry (real) or phantom generator; "" -> the dataset key
    path: str = ""  # local/download root; "" -> data/<name>
    parts: tuple[str, ...] = ()
    of: str | None = None
    train_of: str | None = None
    source_dataset: str | None = None
    n_subjects: int | None = None
    cohort: str | None = None  # resolved by Config: subsets share their parent's cohort
    options: dict[str, Any] = field(default_factory=dict)
    take: dict[str, Any] | None = None  # subset: {n, unit, seed}, a reproducible draw of the paper's count

    @classmethod
    def _build(cls, d: dict[str, Any], *, name: str | None, source: str, where: str) -> DatasetSpec:
        d = dict(d)
        d.setdefault("registry", name)
        if d["source"] in ("local", "download"):
            d.setdefault("path", f"data/{name}")
        if d["source"] == "phantom":
            d.setdefault("n_subjects", DEFAULT_PHANTOM_SUBJECTS)
        return super()._build(d, name=name, source=source, where=where)

    def to_dict(self) -> dict[str, Any]:
        """Only the keys that apply to this source (the schema has no nulls for the others)."""
        return {k: v for k, v in super().to_dict().items() if v is not None and v != []}

    @property
    def is_real(self) -> bool:
        return self.source in ("local", "download")

    @property
    def download(self) -> bool:
        return self.source == "download"


@dataclass(frozen=True)
class PhantomSpec(Spec):
    """Generator settings shared by every ``source: phantom`` dataset (defaults: the schema)."""

    definition = "phantom"

    voxel_size: float
    n_sites: int
    seed: int
    test_fraction: float
    n_jobs: int
    cache_dir: str
