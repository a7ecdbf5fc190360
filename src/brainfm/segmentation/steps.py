"""The segmentation steps of the workflow: one function per rule and ``brainfm`` subcommand.

=========================  ==================================================================
step                       what it does
=========================  ==================================================================
``prepare_segmentation``   a benchmark's nnU-Net raw dataset, plans and preprocessed data
                           (:func:`~brainfm.segmentation.benchmark.prepare_benchmark`)
``segment``                one (benchmark, backbone, ratio, seed) training job: train, predict
                           the held-out cases, per-case region Dice
                           (:func:`~brainfm.segmentation.job.run_segmentation_job`)
``segment_perturbed``      a full-data job's model on perturbed copies of the test images
                           (Fig. 5, Supp. Table 18 rows; :mod:`brainfm.perturb`)
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
from brainfm.frames import read_frame

__all__ = ["prepare_segmentation", "segment", "segment_finetune", "segment_perturbed", "registry_split", "PERTURBED_COLUMNS"]

log = logging.getLogger("brainfm.segmentation")

#: one row per region and setting, in the form :func:`brainfm.stats.runners.perturbation_stats` reads
PERTURBED_COLUMNS = ["task", "backbone", "metric", "perturbation", "severity", "value", "err", "ci_low", "ci_high",
                     "n_cases"]


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
            pretrain_manifests: Sequence[str | Path] = (), device: str = "auto",
            finetune: bool = False, precision: str = "auto") -> dict[str, Any]:
    """Train and evaluate one grid cell into ``out`` (see :mod:`brainfm.segmentation.job`).

    ``backbone`` is a :class:`brainfm.config.BackboneSpec` (registry encoder, weights file,
    arguments); ``network`` its segmentation entry (``configuration``, ``blocks``, ``decoder``);
    ``settings`` the :class:`brainfm.config.SegmentationSpec` (training loop, fold, threads).
    Test subjects found in ``pretrain_manifests`` stop the job (leakage); subjects pooled from this
    benchmark through a union are matched without their ``<benchmark>:`` prefix. ``finetune``: train
    the encoder too, at ``settings.encoder_lr`` (see :func:`segment_finetune`). ``precision``: the
    CPU precision (:func:`brainfm.segmentation.job.job_precision`).
    """
    from brainfm.segmentation.job import run_segmentation_job
    from brainfm.tasks.runs import pretraining_subjects

    blocks = network.get("blocks")
    seen = pretraining_subjects(pretrain_manifests)
    if seen is not None:  # a union pooled from this benchmark prefixes its subjects with the benchmark's name
        seen = {s.removeprefix(f"{benchmark}:") for s in seen}
    return run_segmentation_job(
        Path(benchmark_marker).parent, out, task=benchmark, backbone=backbone.name, encoder=backbone.encoder,
        ratio=float(ratio), seed=int(seed), configuration=network["configuration"], weights=backbone.weights,
        encoder_kwargs=dict(backbone.args), settings=settings.train_settings(finetune=finetune), fold=settings.fold,
        pretrain_subjects=seen, device=device, threads=settings.threads,
        augmentation_workers=settings.augmentation_workers, use_mirroring=settings.use_mirroring,
        blocks=list(blocks) if blocks else None, decoder=dict(network.get("decoder") or {}),
        keep_checkpoint=settings.keep_checkpoint, precision=precision)


def segment_finetune(benchmark_marker: str | Path, out: str | Path, **kwargs: Any) -> dict[str, Any]:
    """A segmentation cell with the encoder unfrozen (Supp. Table 6): :func:`segment` with ``finetune``.

    Same subset, validation and test cases, decoder, loop and schedule as the frozen job; the
    encoder joins the optimiser in its own AdamW group at ``settings.encoder_lr``.
    """
    return segment(benchmark_marker, out, finetune=True, **kwargs)


def _mean_with_bootstrap(values: Any, n_boot: int, seed: int) -> dict[str, float]:
    """Mean of per-case Dice, its bootstrap sd and 95% percentile interval (cases resampled)."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(v), size=(int(n_boot), len(v)))
    means = v[idx].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"value": float(v.mean()), "err": float(means.std(ddof=1)) if n_boot > 1 else float("nan"),
            "ci_low": float(lo), "ci_high": float(hi), "n_cases": int(len(v))}


def segment_perturbed(benchmark_marker: str | Path, job_dir: str | Path, out: str | Path, *, benchmark: str,
                      backbone: str, settings: Sequence[Any], seed: int = 0, n_boot: int = 2000,
                      device: str = "auto", threads: int | None = 1) -> Any:
    """Score a finished job's model on perturbed test images, one perturbation at a time (paper §4.5).

    Every channel of every held-out test case is perturbed on its raw grid (zero background kept
    zero, as for the classification volumes), predicted with the job's own sliding-window
    settings and scored per region against the unchanged mask. ``settings`` are
    :class:`brainfm.config.PerturbationSetting`; the clean rows (each family's identity) come
    from the job's own ``dice.parquet``. Rows are named ``<benchmark> <region>`` so that the
    perturbation figure gives each region its own row of panels.
    """
    import tempfile

    import nibabel as nib
    import numpy as np
    import pandas as pd

    from brainfm.atomic import write_parquet
    from brainfm.config.perturbations import IDENTITY
    from brainfm.perturb import apply_perturbation
    from brainfm.segmentation.cases import MODALITIES
    from brainfm.segmentation.job import predict_with_job
    from brainfm.segmentation.predict import dice_table
    from brainfm.segmentation.raw_dataset import benchmark_cases

    cases, label_map = benchmark_cases(Path(benchmark_marker).parent)
    test = cases[cases["split"] == "test"].sort_values("case_id")
    job_dir = Path(job_dir)
    clean = read_frame(job_dir / "dice.parquet", "segmentation Dice table")
    rows = []

    def add(frame: pd.DataFrame, kind: str, severity: float) -> None:
        for region in label_map.region_names:
            d = frame.loc[frame["region"] == region].sort_values("case_id")["dice"]
            rows.append({"task": f"{benchmark} {region}", "backbone": backbone, "metric": f"dice_{region}",
                         "perturbation": kind, "severity": float(severity), **_mean_with_bootstrap(d, n_boot, seed)})

    for kind in sorted({s.kind for s in settings}):
        add(clean, kind, IDENTITY[kind])
    with tempfile.TemporaryDirectory(prefix="brainfm-segperturb-") as tmp:
        for setting in settings:
            work = Path(tmp) / setting.tag
            inputs = []
            for case in test.itertuples():
                files = []
                for c, modality in enumerate(MODALITIES):
                    img = nib.load(getattr(case, f"image_{modality}"))
                    data = np.asanyarray(img.dataobj).astype(np.float32)
                    pert = apply_perturbation(data, setting.kind, setting.severity, seed=seed, mask=data != 0)
                    header = img.header.copy()
                    header.set_data_dtype(np.float32)
                    header["scl_slope"], header["scl_inter"] = 1.0, 0.0
                    path = work / "images" / f"{case.case_id}_{c:04d}.nii.gz"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    nib.save(nib.Nifti1Image(pert, img.affine, header), str(path))
                    files.append(str(path))
                inputs.append(files)
            outputs = [work / "pred" / cid for cid in test["case_id"]]
            predict_with_job(job_dir, inputs, outputs, device=device, threads=threads)
            preds = {cid: work / "pred" / f"{cid}.nii.gz" for cid in test["case_id"]}
            add(dice_table(test, preds, label_map), setting.kind, setting.severity)
            log.info("%s/%s %s: mean Dice %s", benchmark, backbone, setting.tag,
                     {r["metric"]: round(r["value"], 3) for r in rows[-len(label_map.region_names):]})
    table = pd.DataFrame(rows, columns=PERTURBED_COLUMNS).sort_values(["task", "perturbation", "severity"])
    write_parquet(Path(out), table.reset_index(drop=True))
    return table
