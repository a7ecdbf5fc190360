"""Label maps: which raw mask values make up each evaluated tumour region (Supp. Table 5).

Every BraTS release codes its masks differently (BraTS 2021: 1 NCR/NET, 2 ED, 4 ET; BraTS 2023
and 2024: 1 NCR, 2 SNFH/ED, 3 ET) but all are evaluated on the same three composite regions,
whole tumour (WT), tumour core (TC) and enhancing tumour (ET). The map lives in each dataset's
registry entry (``segmentation:``, see ``schemas/dataset.schema.yaml``) or, for the embedded
phantoms, in :data:`brainfm.data.phantom.PHANTOM_DATASETS`; nothing here knows a dataset by name.

Region-based training as nnU-Net does it for BraTS needs nested regions (each one inside the one
before, WT ⊇ TC ⊇ ET): nnU-Net's own label values are then "the innermost region a voxel is in"
(1 = WT only, 2 = TC but not ET, 3 = ET), its ``dataset.json`` lists each region as the set of
those values, and an exported prediction turns back into regions by ``label >= k``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from brainfm.errors import ConfigError

__all__ = ["LabelMap", "RawLabel", "Region", "label_map_for"]


@dataclass(frozen=True)
class RawLabel:
    """One value of the dataset's own mask coding."""

    value: int
    name: str
    description: str = ""


@dataclass(frozen=True)
class Region:
    """An evaluated region: the union of some raw label values."""

    name: str
    labels: tuple[int, ...]
    description: str = ""


@dataclass(frozen=True)
class LabelMap:
    """Raw mask values, the nested regions built from them, and nnU-Net's region encoding."""

    labels: tuple[RawLabel, ...]
    regions: tuple[Region, ...]
    source: str = ""

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "label map") -> LabelMap:
        """Build and check a map from its registry form (``{"labels": [...], "regions": [...]}``).

        Raises :class:`ConfigError` naming ``source`` when a value repeats, a region uses an
        undeclared value, or the regions are not nested outermost first.
        """
        if not isinstance(data, Mapping) or "labels" not in data or "regions" not in data:
            raise ConfigError(f"{source}: a label map needs 'labels' and 'regions'")
        try:
            labels = tuple(RawLabel(int(item["value"]), str(item["name"]), str(item.get("description", "")))
                           for item in data["labels"])
            regions = tuple(Region(str(item["name"]), tuple(int(v) for v in item["labels"]),
                                   str(item.get("description", ""))) for item in data["regions"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: malformed label map ({exc.__class__.__name__}: {exc})") from exc
        out = cls(labels, regions, source)
        out._check()
        return out

    def _check(self) -> None:
        where = self.source
        values = [lab.value for lab in self.labels]
        if not values:
            raise ConfigError(f"{where}: no labels")
        if len(set(values)) != len(values):
            raise ConfigError(f"{where}: label values repeat: {values}")
        if any(not 0 < v < 256 for v in values):
            raise ConfigError(f"{where}: label values must be 1..255 (0 is background), got {values}")
        names = [r.name for r in self.regions]
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"{where}: region names must be distinct and non-empty, got {names}")
        for region in self.regions:
            unknown = sorted(set(region.labels) - set(values))
            if unknown or not region.labels:
                raise ConfigError(f"{where}: region {region.name} uses undeclared label value(s) {unknown} "
                                  f"(declared: {values})" if unknown else f"{where}: region {region.name} is empty")
        for outer, inner in zip(self.regions, self.regions[1:]):
            if not set(inner.labels) <= set(outer.labels) or set(inner.labels) == set(outer.labels):
                raise ConfigError(f"{where}: regions must be strictly nested, outermost first; "
                                  f"{inner.name} {list(inner.labels)} is not inside {outer.name} {list(outer.labels)}")

    # ------------------------------------------------------------------ views
    @property
    def values(self) -> tuple[int, ...]:
        return tuple(lab.value for lab in self.labels)

    @property
    def region_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.regions)

    def nnunet_value(self, raw_value: int) -> int:
        """nnU-Net label of a raw value: the (1-based) index of the innermost region holding it, else 0."""
        depth = 0
        for k, region in enumerate(self.regions, start=1):
            if raw_value in region.labels:
                depth = k
        return depth

    def lookup_table(self) -> np.ndarray:
        """uint8 table of length 256: raw value -> nnU-Net label (undeclared values map to 0)."""
        table = np.zeros(256, dtype=np.uint8)
        for v in self.values:
            table[v] = self.nnunet_value(v)
        return table

    def unknown_values(self, mask: np.ndarray) -> list[int]:
        """Values present in ``mask`` that are neither background nor declared."""
        present = np.unique(np.asarray(mask))
        allowed = set(self.values) | {0}
        return [int(v) for v in present if int(v) != v or int(v) not in allowed]

    def to_nnunet(self, mask: np.ndarray) -> np.ndarray:
        """Raw mask -> nnU-Net label map (uint8). Values must have been checked with :meth:`unknown_values`."""
        m = np.asarray(mask)
        return self.lookup_table()[m.astype(np.int64)]

    def dataset_json_labels(self) -> dict[str, Any]:
        """``dataset.json`` 'labels' and 'regions_class_order' for region-based training."""
        n = len(self.regions)
        labels: dict[str, Any] = {"background": 0}
        for k, region in enumerate(self.regions, start=1):
            inside = list(range(k, n + 1))
            labels[region.name] = inside if len(inside) > 1 else inside[0]
        return {"labels": labels, "regions_class_order": list(range(1, n + 1))}

    def raw_regions(self, mask: np.ndarray) -> dict[str, np.ndarray]:
        """Boolean mask of every region from a raw (dataset-coded) mask."""
        m = np.asarray(mask)
        return {r.name: np.isin(m, r.labels) for r in self.regions}

    def nnunet_regions(self, label_map: np.ndarray) -> dict[str, np.ndarray]:
        """Boolean mask of every region from an nnU-Net label map (region k = label >= k)."""
        m = np.asarray(label_map)
        return {r.name: m >= k for k, r in enumerate(self.regions, start=1)}

    def table(self) -> list[dict[str, Any]]:
        """Supp. Table 5 rows: one per region with the raw values and names it unites."""
        names = {lab.value: lab.name for lab in self.labels}
        return [{"region": r.name, "description": r.description, "labels": list(r.labels),
                 "label_names": [names[v] for v in r.labels]} for r in self.regions]


def label_map_for(dataset: str, search_dirs: Sequence[str | Path] | None = None) -> LabelMap:
    """The label map of a registry dataset (its ``segmentation`` field) or of a phantom dataset.

    Raises :class:`ConfigError` when the dataset has no label map.
    """
    from brainfm.data.datasets.catalog import list_datasets

    # registry entries first: the phantom generators import torch, a registry lookup does not
    registry = Path(str(dataset)).suffix in (".yaml", ".yml") or dataset in list_datasets(search_dirs)
    from_phantom = not registry
    if from_phantom:
        from brainfm.data.phantom import PHANTOM_DATASETS

        from_phantom = dataset in PHANTOM_DATASETS
    if from_phantom:
        seg = PHANTOM_DATASETS[dataset].segmentation
        if seg is None:
            raise ConfigError(f"phantom dataset {dataset!r} has no segmentation label map")
        return LabelMap.from_mapping(seg, f"phantom dataset {dataset}")
    from brainfm.data.datasets.catalog import load_dataset_entry

    entry = load_dataset_entry(dataset, search_dirs)
    seg = entry.raw.get("segmentation")
    if seg is None:
        raise ConfigError(f"{entry.source}: dataset {entry.name!r} has no 'segmentation' label map")
    return LabelMap.from_mapping(seg, f"{entry.source}: field 'segmentation'")
