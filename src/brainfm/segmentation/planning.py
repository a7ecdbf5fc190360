"""nnU-Net planning and preprocessing through its Python API, plus the paper's extra configurations.

Steps (each an nnU-Net API call inside :func:`~.nnunet_env.nnunet_environment`):

1. dataset fingerprint (nnU-Net's ``DatasetFingerprintExtractor``, see :func:`extract_fingerprint`)
   of the training cases only (the test cases sit in ``imagesTs``, which planning never reads);
2. the default experiment plan (``plan_experiment_dataset``: ``2d``, ``3d_fullres``, ...);
3. brainfm's configurations, added to the plans file as entries that *inherit* from nnU-Net's,
   the mechanism the public BrainDINO/MedDINOv3 code uses for its ``2d_512``/``2d_896``:

   * ``2d_<P>`` inherits ``2d`` with a P×P patch (the paper's 256×256). With ``fit_field_of_view``
     the in-plane spacing is scaled by ``max(2d patch) / P``, so the field of view nnU-Net chose
     for ``2d`` is resampled onto P pixels (the MedDINOv3 recipe; for BraTS at 1 mm and a
     192×160 ``2d`` patch that is 0.75 mm); otherwise the spacing stays and the data are shared
     with ``2d``.
   * ``3d_<P>`` inherits ``3d_fullres`` with a P³ patch (128³ for BrainMVP and BM-MAE, 96³ for
     BrainIAC) at the same spacing, sharing the ``3d_fullres`` data.

4. preprocessing of the requested configurations (``preprocess_dataset``), once per distinct
   preprocessed data folder;
5. ``splits_final.json``: nnU-Net's own five-fold split (``generate_crossval_split``, seed 12345)
   made over *subjects* and expanded to their cases, so two sessions of one subject never sit on
   both sides (with one case per subject it is exactly nnU-Net's split).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from brainfm.atomic import write_json
from brainfm.errors import ConfigError
from brainfm.segmentation.nnunet_env import NnunetTree, nnunet_environment
from brainfm.segmentation.raw_dataset import RawDataset

__all__ = ["ConfigurationRequest", "plan_and_preprocess", "add_configuration", "subject_crossval_splits",
           "load_plans", "PLANS_IDENTIFIER"]

log = logging.getLogger("brainfm.segmentation")

PLANS_IDENTIFIER = "nnUNetPlans"
FOREGROUND_SAMPLES_PER_CASE = 100_000
_REQUEST = re.compile(r"^(2d|3d)_(\d+)$")


@dataclass(frozen=True)
class ConfigurationRequest:
    """An extra configuration: ``2d_<P>`` or ``3d_<P>`` (see the module docstring)."""

    dims: int
    patch: int
    fit_field_of_view: bool = True  # 2D only
    batch_size: int | None = None  # None: inherit nnU-Net's

    @classmethod
    def parse(cls, name: str, **kwargs: Any) -> ConfigurationRequest:
        m = _REQUEST.match(name)
        if not m:
            raise ConfigError(f"configuration {name!r} must look like '2d_256' or '3d_128'")
        return cls(2 if m.group(1) == "2d" else 3, int(m.group(2)), **kwargs)

    @property
    def name(self) -> str:
        return f"{self.dims}d_{self.patch}"

    @property
    def parent(self) -> str:
        return "2d" if self.dims == 2 else "3d_fullres"


def add_configuration(plans: dict[str, Any], request: ConfigurationRequest) -> dict[str, Any]:
    """Add ``request``'s entry (inheriting nnU-Net's) to ``plans`` in place; returns the entry."""
    configs = plans["configurations"]
    if request.parent not in configs:
        raise ConfigError(f"nnU-Net planned no {request.parent!r} configuration to inherit from "
                          f"(planned: {sorted(configs)})")
    parent = configs[request.parent]
    if request.patch < 8:
        raise ConfigError(f"patch size {request.patch} is too small")
    entry: dict[str, Any] = {"inherits_from": request.parent, "patch_size": [request.patch] * request.dims}
    if request.dims == 2 and request.fit_field_of_view:
        scale = max(parent["patch_size"]) / request.patch
        entry["spacing"] = [float(s) * scale for s in parent["spacing"]]
        entry["median_image_size_in_voxels"] = [float(v) / scale for v in parent["median_image_size_in_voxels"]]
        entry["data_identifier"] = f"{PLANS_IDENTIFIER}_{request.name}"
    if request.batch_size is not None:
        if int(request.batch_size) < 1:
            raise ConfigError(f"batch size must be >= 1, got {request.batch_size}")
        entry["batch_size"] = int(request.batch_size)
    configs[request.name] = entry
    return entry


def subject_crossval_splits(case_subjects: dict[str, str], n_splits: int = 5,
                            seed: int = 12345) -> list[dict[str, list[str]]]:
    """nnU-Net's K-fold split over subjects (sorted ids, ``KFold(shuffle, seed)``), expanded to case ids."""
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    subjects = sorted(set(case_subjects.values()))
    if len(subjects) < n_splits:
        raise ConfigError(f"{len(subjects)} training subject(s) cannot make {n_splits} folds")
    by_subject: dict[str, list[str]] = {}
    for case, subject in case_subjects.items():
        by_subject.setdefault(subject, []).append(case)
    out = []
    for fold in generate_crossval_split(subjects, seed=seed, n_splits=n_splits):
        out.append({part: sorted(c for s in fold[part] for c in by_subject[str(s)]) for part in ("train", "val")})
    return out


def load_plans(tree: NnunetTree, dataset: RawDataset) -> dict[str, Any]:
    path = tree.preprocessed / dataset.folder_name / f"{PLANS_IDENTIFIER}.json"
    if not path.is_file():
        raise ConfigError(f"{path}: no nnU-Net plans; run plan_and_preprocess first")
    return json.loads(path.read_text())


def extract_fingerprint(dataset: RawDataset, processes: int = 1) -> dict[str, Any]:
    """nnU-Net's dataset fingerprint, with its foreground-intensity sample capped at 10^5 voxels per case.

    nnU-Net samples 10^8 foreground voxels over the whole dataset (10^5 per case for 1000 cases,
    but 1.25 * 10^7 per case and channel for a demo cohort of 8, which takes minutes). The sample
    feeds only CT normalisation; MRI channels are z-scored per case. The cap leaves datasets of
    1000 cases or more exactly as nnU-Net would.
    """
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor

    extractor = DatasetFingerprintExtractor(dataset.dataset_id, num_processes=processes, verbose=False)
    n_cases = max(1, int((dataset.cases["split"] == "train").sum()))
    extractor.num_foreground_voxels_for_intensitystats = min(extractor.num_foreground_voxels_for_intensitystats,
                                                             FOREGROUND_SAMPLES_PER_CASE * n_cases)
    if hasattr(extractor, "show_progress_bar"):
        extractor.show_progress_bar = False
    return extractor.run(overwrite_existing=True)


def plan_and_preprocess(tree: NnunetTree, dataset: RawDataset, requests: Sequence[ConfigurationRequest], *,
                        processes: int = 1, verify: bool = False) -> dict[str, Any]:
    """Fingerprint, plan, add ``requests``, preprocess them and write the fold split; returns the plans.

    ``verify`` also runs nnU-Net's dataset integrity check (brainfm's case checks cover the same
    ground: grids, labels, channels).
    """
    from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiment_dataset, preprocess_dataset

    if not requests:
        raise ConfigError("plan_and_preprocess needs at least one configuration (e.g. 2d_256)")
    processes = max(1, int(processes))
    threads = torch.get_num_threads()  # nnU-Net's planner sets torch's thread count as a side effect
    with nnunet_environment(tree, augmentation_workers=processes, processes=processes):
        if verify:
            from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

            verify_dataset_integrity(str(dataset.path), processes)
        extract_fingerprint(dataset, processes)
        plan_experiment_dataset(dataset.dataset_id)
        plans_path = tree.preprocessed / dataset.folder_name / f"{PLANS_IDENTIFIER}.json"
        plans = json.loads(plans_path.read_text())
        for request in requests:
            add_configuration(plans, request)
        write_json(plans_path, plans)
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        manager = PlansManager(plans)
        todo: dict[str, str] = {}  # data identifier -> one configuration that produces it
        for request in requests:
            todo.setdefault(manager.get_configuration(request.name).data_identifier, request.name)
        preprocess_dataset(dataset.dataset_id, PLANS_IDENTIFIER, configurations=list(todo.values()),
                           num_processes=[processes] * len(todo), verbose=False, show_progress_bar=False)
    torch.set_num_threads(threads)
    train = dataset.cases[dataset.cases["split"] == "train"]
    splits = subject_crossval_splits(dict(zip(train["case_id"], train["subject"])))
    write_json(tree.preprocessed / dataset.folder_name / "splits_final.json", splits)
    log.info("%s: planned and preprocessed %s", dataset.folder_name, [r.name for r in requests])
    return plans


def plans_file(tree: NnunetTree, dataset: RawDataset) -> Path:
    return tree.preprocessed / dataset.folder_name / f"{PLANS_IDENTIFIER}.json"
