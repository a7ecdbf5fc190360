"""The segmentation steps of the workflow: one function per rule and ``brainfm`` subcommand.

=========================  ==================================================================
step                       what it does
=========================  ==================================================================
``prepare_segmentation``   a benchmark's nnU-Net raw dataset, plans and preprocessed data
                           (:func:`~brainfm.segmentation.benchmark.prepare_benchmark`)
``segment``                one (benchmark, backbone, ratio, seed) training job: train, predict
                           the held-out cases, per-case region Dice
                           (:func:`~brainfm.segmentation.job.run_segmentation_job`)
=========================  ==================================================================

The statistics and figures of the results are torch-free steps elsewhere
(:func:`brainfm.stats.runners.segmentation_stats`, :mod:`brainfm.report.segmentation`).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from brainfm.errors import ConfigError

__all__ = ["prepare_segmentation", "segment", "registry_split"]

log = logging.getLogger("brainfm.segmentation")


def registry_split(dataset: Any) -> tuple[float | None, int]:
    """(test fraction, seed) of a real dataset's registry entry (``split:``); (None, 0) otherwise.

    Used for subjects the manifest leaves without a fixed train/test split (BraTS training data).
    """
    if not getattr(dataset, "is_real", False):
        return None, 0
    from brainfm.data.datasets.catalog import load_dataset_entry

    split = load_dataset_entry(dataset.registry).raw.get("split") or {}
    fraction = split.get("test_fraction")
    return (float(fraction) if fraction is not None else None), int(split.get("seed", 0))


def prepare_segmentation(dataset: Any, manifest: str | Path, marker: str | Path, *, configurations: Sequence[str],
                         batch_sizes: Mapping[str, int] | None = None, test_fraction: float | None = None,
                         processes: int = 1) -> dict[str, Any]:
    """Prepare ``dataset`` (a :class:`brainfm.config.DatasetSpec`) as an nnU-Net benchmark.

    ``marker`` is the benchmark's ``prepared.json`` (:meth:`ResultsLayout.segmentation_prepared`);
    its folder is the benchmark root, rebuilt from scratch. The label map is the dataset's
    registry entry's (or the phantom generator's). ``test_fraction`` None: the registry's split.
    """
    from brainfm.data.datasets.labelmap import label_map_for
    from brainfm.data.manifest import read_manifest
    from brainfm.segmentation.benchmark import MARKER, prepare_benchmark

    marker = Path(marker)
    if marker.name != MARKER:
        raise ConfigError(f"{marker}: the benchmark marker must be named {MARKER}")
    root = marker.parent
    if root.exists():  # a half-prepared benchmark from a killed run is redone from scratch
        shutil.rmtree(root)
    root.mkdir(parents=True)
    fraction, split_seed = registry_split(dataset)
    if test_fraction is not None:
        fraction = float(test_fraction)
    label_map = label_map_for(dataset.registry or dataset.name)
    bench = prepare_benchmark(read_manifest(manifest), label_map, root, dataset.name,
                              configurations=list(configurations), batch_sizes=dict(batch_sizes or {}),
                              test_fraction=fraction, split_seed=split_seed, processes=processes)
    info = {"benchmark": dataset.name, "configurations": list(bench.configurations),
            "n_train": len(bench.dataset.case_ids("train")), "n_test": len(bench.dataset.case_ids("test")),
            "n_quarantined": len(bench.dataset.quarantined)}
    log.info("prepared %s", info)
    return info


def segment(benchmark_marker: str | Path, out: str | Path, *, benchmark: str, backbone: Any,
            network: Mapping[str, Any], ratio: float, seed: int, settings: Any,
            pretrain_manifests: Sequence[str | Path] = (), device: str = "auto") -> dict[str, Any]:
    """Train and evaluate one grid cell into ``out`` (see :mod:`brainfm.segmentation.job`).

    ``backbone`` is a :class:`brainfm.config.BackboneSpec` (registry encoder, weights file,
    arguments); ``network`` its segmentation entry (``configuration``, ``blocks``, ``decoder``);
    ``settings`` the :class:`brainfm.config.SegmentationSpec` (training loop, fold, threads).
    Test subjects found in ``pretrain_manifests`` stop the job (leakage).
    """
    from brainfm.segmentation.job import run_segmentation_job
    from brainfm.tasks.runs import pretraining_subjects

    blocks = network.get("blocks")
    return run_segmentation_job(
        Path(benchmark_marker).parent, out, task=benchmark, backbone=backbone.name, encoder=backbone.encoder,
        ratio=float(ratio), seed=int(seed), configuration=network["configuration"], weights=backbone.weights,
        encoder_kwargs=dict(backbone.args), settings=settings.train_settings(), fold=settings.fold,
        pretrain_subjects=pretraining_subjects(pretrain_manifests), device=device, threads=settings.threads,
        augmentation_workers=settings.augmentation_workers, use_mirroring=settings.use_mirroring,
        blocks=list(blocks) if blocks else None, decoder=dict(network.get("decoder") or {}),
        keep_checkpoint=settings.keep_checkpoint)
