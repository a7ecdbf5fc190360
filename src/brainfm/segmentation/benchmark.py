"""One segmentation benchmark on disk: raw dataset, plans, preprocessed data and fold split.

:func:`prepare_benchmark` is the per-benchmark step every training job depends on: it writes the
nnU-Net raw dataset from the manifest (quarantining bad cases), plans and preprocesses the
requested configurations and writes nnU-Net's fold split, all under ``root`` (a directory of
the caller's results tree). ``prepared.json`` is written last, atomically: its presence means
the benchmark is complete (a killed run leaves none and is redone from scratch).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from brainfm.atomic import write_json
from brainfm.errors import ConfigError
from brainfm.data.datasets.labelmap import LabelMap
from brainfm.segmentation.nnunet_env import NnunetTree
from brainfm.segmentation.planning import PLANS_IDENTIFIER, ConfigurationRequest, plan_and_preprocess
from brainfm.segmentation.raw_dataset import RawDataset, open_raw_dataset, write_raw_dataset

__all__ = ["PreparedBenchmark", "prepare_benchmark", "open_benchmark", "MARKER"]

MARKER = "prepared.json"


@dataclass(frozen=True)
class PreparedBenchmark:
    """A prepared benchmark: its nnU-Net tree, dataset and planned configurations."""

    root: Path
    name: str
    tree: NnunetTree
    dataset: RawDataset
    configurations: tuple[str, ...]
    label_map: LabelMap

    @property
    def plans_path(self) -> Path:
        return self.tree.preprocessed / self.dataset.folder_name / f"{PLANS_IDENTIFIER}.json"

    @property
    def splits_path(self) -> Path:
        return self.tree.preprocessed / self.dataset.folder_name / "splits_final.json"

    def plans(self) -> dict[str, Any]:
        return json.loads(self.plans_path.read_text())

    def dataset_json(self) -> dict[str, Any]:
        return json.loads((self.tree.preprocessed / self.dataset.folder_name / "dataset.json").read_text())


def prepare_benchmark(manifest: pd.DataFrame, label_map: LabelMap, root: str | Path, name: str, *,
                      configurations: Sequence[str | ConfigurationRequest] = ("2d_256",),
                      fit_field_of_view: bool = True, batch_sizes: dict[str, int] | None = None,
                      test_fraction: float | None = None, split_seed: int = 0, link: str = "symlink",
                      processes: int = 1) -> PreparedBenchmark:
    """Write, plan and preprocess the benchmark ``name`` under ``root`` (see the module docstring).

    ``configurations`` are names like ``2d_256`` / ``3d_128`` (or requests); ``batch_sizes``
    optionally overrides nnU-Net's batch size per configuration name.
    """
    root = Path(root).resolve()
    (root / MARKER).unlink(missing_ok=True)
    batch_sizes = dict(batch_sizes or {})
    requests = []
    for c in configurations:
        req = c if isinstance(c, ConfigurationRequest) else ConfigurationRequest.parse(
            str(c), fit_field_of_view=fit_field_of_view, batch_size=batch_sizes.pop(str(c), None))
        requests.append(req)
    if batch_sizes:
        raise ConfigError(f"batch_sizes for configurations not requested: {sorted(batch_sizes)}")
    tree = NnunetTree.under(root)
    dataset = write_raw_dataset(manifest, label_map, tree.raw, name, test_fraction=test_fraction,
                                split_seed=split_seed, link=link, n_jobs=processes)
    plan_and_preprocess(tree, dataset, requests, processes=processes)
    info = {"name": name, "dataset_folder": dataset.folder_name, "configurations": [r.name for r in requests],
            "n_train_cases": int((dataset.cases["split"] == "train").sum()),
            "n_test_cases": int((dataset.cases["split"] == "test").sum()),
            "n_quarantined": len(dataset.quarantined), "label_map": label_map.table(),
            "label_map_source": label_map.source}
    write_json(root / MARKER, info)
    return PreparedBenchmark(root, name, tree, dataset, tuple(r.name for r in requests), label_map)


def open_benchmark(root: str | Path) -> PreparedBenchmark:
    """Re-open a benchmark written by :func:`prepare_benchmark` (refuses an incomplete one)."""
    root = Path(root).resolve()
    marker = root / MARKER
    if not marker.is_file():
        raise ConfigError(f"{root}: not a prepared segmentation benchmark ({MARKER} missing)")
    info = json.loads(marker.read_text())
    tree = NnunetTree.under(root)
    dataset = open_raw_dataset(tree.raw / info["dataset_folder"])
    dj = json.loads((dataset.path / "dataset.json").read_text())
    label_map = LabelMap.from_mapping(dj["brainfm"]["label_map"], dj["brainfm"]["label_map"].get("source", ""))
    return PreparedBenchmark(root, info["name"], tree, dataset, tuple(info["configurations"]), label_map)
