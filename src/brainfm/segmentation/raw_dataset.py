"""The nnU-Net raw dataset of a benchmark, written from a brainfm manifest.

Layout (nnU-Net v2 format, under ``<tree.raw>/Dataset001_<name>/``)::

    imagesTr/<case>_0000.nii.gz .. _0003.nii.gz   T1, T1c, T2, FLAIR of training (train + validation) cases
    labelsTr/<case>.nii.gz                         mask in nnU-Net's region coding (see labels.py)
    imagesTs/, labelsTs/                           the held-out test cases, same naming
    dataset.json                                   channels, region labels, reader, brainfm's label map
    cases.parquet                                  case -> subject, session, split and source files
    quarantine.json                                cases left out, each with the reason

Held-out test cases are the manifest's ``split == "test"`` subjects; subjects without a fixed split
are assigned by :func:`brainfm.data.splits.holdout_split` when a ``test_fraction`` is given. Images
are linked (or copied) unchanged; masks are rewritten with the label map's lookup table on the
mask's own grid and header. Images are read with nnU-Net's ``NibabelIOWithReorient``, so every
case is handled in RAS orientation whatever its file's orientation, as the slice encoders saw
their pretraining slices; exported predictions are turned back to each file's own orientation.
The directory is built aside and moved into place, so it exists complete or not at all.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainfm.atomic import atomic_dir, write_json, write_parquet
from brainfm.data.datasets.labelmap import LabelMap
from brainfm.data.splits import holdout_split, subject_table
from brainfm.errors import ConfigError, InputError, ManifestError
from brainfm.frames import read_frame
from brainfm.segmentation.cases import MODALITIES, Case, Quarantined, check_cases, collect_cases
from brainfm.segmentation.nnunet_env import DATASET_ID

__all__ = ["RawDataset", "write_raw_dataset", "open_raw_dataset", "benchmark_cases", "dataset_folder_name",
           "FILE_ENDING", "READER"]

log = logging.getLogger("brainfm.segmentation")

FILE_ENDING = ".nii.gz"
READER = "NibabelIOWithReorient"
LINK_MODES = ("symlink", "hardlink", "copy")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")


@dataclass(frozen=True)
class RawDataset:
    """A written raw dataset: where it is, its cases (one row each) and the quarantined ones."""

    path: Path
    dataset_id: int
    name: str
    cases: pd.DataFrame
    quarantined: tuple[Quarantined, ...] = field(default_factory=tuple)

    @property
    def folder_name(self) -> str:
        return self.path.name

    def case_ids(self, split: str) -> list[str]:
        return sorted(self.cases.loc[self.cases["split"] == split, "case_id"])

    def test_inputs(self) -> list[list[str]]:
        """Per test case, its four channel files in ``imagesTs`` (nnU-Net predictor input)."""
        return [[str(self.path / "imagesTs" / f"{cid}_{c:04d}{FILE_ENDING}") for c in range(self.n_channels)]
                for cid in self.case_ids("test")]

    @property
    def n_channels(self) -> int:
        return len(json.loads((self.path / "dataset.json").read_text())["channel_names"])


def dataset_folder_name(name: str, dataset_id: int = DATASET_ID) -> str:
    """``Dataset001_<name>`` with a name nnU-Net accepts (letters, digits, '-')."""
    clean = re.sub(r"[^A-Za-z0-9-]+", "-", name).strip("-")
    if not clean or not _NAME.match(clean):
        raise ConfigError(f"cannot make an nnU-Net dataset name from {name!r}")
    if not 0 < int(dataset_id) < 1000:
        raise ConfigError(f"nnU-Net dataset ids are 1..999, got {dataset_id}")
    return f"Dataset{int(dataset_id):03d}_{clean}"


def _test_subjects(manifest: pd.DataFrame, test_fraction: float | None, seed: int) -> set[str]:
    subjects = subject_table(manifest, None)
    free = subjects[~subjects["split"].isin(["train", "test"])]
    if len(free) and test_fraction is None:
        raise ConfigError(f"{len(free)} subject(s) have no fixed train/test split (e.g. {free['subject'].iloc[0]}); "
                          "give test_fraction (the registry's split.test_fraction) to hold some out")
    if len(free):
        _, test = holdout_split(subjects, float(test_fraction), int(seed))
    else:
        test = subjects.loc[subjects["split"] == "test", "subject"].tolist()
    return set(map(str, test))


def _place_image(src: Path, dst: Path, link: str) -> None:
    """Link or copy one image; a file not already in ``FILE_ENDING`` format is rewritten."""
    if not str(src).endswith(FILE_ENDING):
        import nibabel as nib

        nib.save(nib.load(str(src)), str(dst))
        return
    if link == "symlink":
        os.symlink(src, dst)
    elif link == "hardlink":
        try:
            os.link(src, dst)
        except OSError:  # another filesystem
            shutil.copy2(src, dst)
    else:
        shutil.copy2(src, dst)


def _write_label(src: Path, dst: Path, label_map: LabelMap) -> None:
    import nibabel as nib

    img = nib.load(str(src))
    data = label_map.to_nnunet(np.asanyarray(img.dataobj))
    header = img.header.copy()
    header.set_data_dtype(np.uint8)
    header["scl_slope"], header["scl_inter"] = 1.0, 0.0
    nib.save(nib.Nifti1Image(data, img.affine, header), str(dst))


def _write_case(case: Case, folder: Path, split_dir: str, label_map: LabelMap, link: str) -> None:
    images, labels = folder / f"images{split_dir}", folder / f"labels{split_dir}"
    for channel, src in enumerate(case.images):
        _place_image(src, images / f"{case.case_id}_{channel:04d}{FILE_ENDING}", link)
    _write_label(case.mask, labels / f"{case.case_id}{FILE_ENDING}", label_map)


def write_raw_dataset(manifest: pd.DataFrame, label_map: LabelMap, raw_root: str | Path, name: str, *,
                      dataset_id: int = DATASET_ID, modalities: Sequence[str] = MODALITIES,
                      test_fraction: float | None = None, split_seed: int = 0, link: str = "symlink",
                      n_jobs: int = 1, description: str = "") -> RawDataset:
    """Write the nnU-Net raw dataset of ``manifest``'s segmentation cases (see the module docstring).

    Cases with a missing modality, a mask off the image grid or unknown mask values are
    quarantined (logged, listed in ``quarantine.json``); the rest are written. No usable training
    or test case is an error.
    """
    if link not in LINK_MODES:
        raise ConfigError(f"link must be one of {LINK_MODES}, got {link!r}")
    modalities = tuple(modalities)
    folder = Path(raw_root).resolve() / dataset_folder_name(name, dataset_id)
    test_subjects = _test_subjects(manifest, test_fraction, split_seed)
    cases, quarantined = collect_cases(manifest, modalities)
    for bad in quarantined:
        log.error("quarantined: %s", bad.reason)
    cases, more = check_cases(cases, label_map, modalities, n_jobs=n_jobs)
    quarantined = [*quarantined, *more]
    rows = []
    for case in cases:
        split = "test" if case.subject in test_subjects else "train"
        rows.append({"case_id": case.case_id, "subject": case.subject, "session": case.session, "split": split,
                     "mask": str(case.mask), **{f"image_{m}": str(p) for m, p in zip(modalities, case.images)}})
    table = pd.DataFrame(rows, columns=["case_id", "subject", "session", "split", "mask",
                                        *(f"image_{m}" for m in modalities)])
    for split in ("train", "test"):
        if not (table["split"] == split).any():
            raise ManifestError(f"{name}: no usable {split} case ({len(quarantined)} quarantined"
                                + (f", e.g. {quarantined[0].reason}" if quarantined else "") + ")")
    by_id = {c.case_id: c for c in cases}
    with atomic_dir(folder) as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (tmp / sub).mkdir()
        jobs = [(by_id[r.case_id], "Tr" if r.split == "train" else "Ts") for r in table.itertuples()]
        with ThreadPoolExecutor(max_workers=max(1, int(n_jobs))) as pool:
            list(pool.map(lambda job: _write_case(job[0], tmp, job[1], label_map, link), jobs))
        dataset_json: dict[str, Any] = {
            "name": name,
            "description": description or f"{name}: brainfm segmentation benchmark",
            "channel_names": {str(i): m for i, m in enumerate(modalities)},
            **label_map.dataset_json_labels(),
            "numTraining": int((table["split"] == "train").sum()),
            "file_ending": FILE_ENDING,
            "overwrite_image_reader_writer": READER,
            "brainfm": {"label_map": {"labels": [vars(lab) for lab in label_map.labels],
                                      "regions": [{**vars(r), "labels": list(r.labels)} for r in label_map.regions],
                                      "source": label_map.source},
                        "n_test": int((table["split"] == "test").sum()), "n_quarantined": len(quarantined)},
        }
        write_json(tmp / "dataset.json", dataset_json)
        write_parquet(tmp / "cases.parquet", table)
        write_json(tmp / "quarantine.json", [vars(q) for q in quarantined])
    log.info("%s: %d training, %d test case(s), %d quarantined", folder.name, dataset_json["numTraining"],
             dataset_json["brainfm"]["n_test"], len(quarantined))
    return RawDataset(folder, int(dataset_id), name, table, tuple(quarantined))


def open_raw_dataset(folder: str | Path) -> RawDataset:
    """Re-open a dataset written by :func:`write_raw_dataset`."""
    folder = Path(folder)
    for f in ("dataset.json", "cases.parquet", "quarantine.json"):
        if not (folder / f).is_file():
            raise ManifestError(f"{folder}: not a brainfm nnU-Net raw dataset ({f} missing)")
    dj = json.loads((folder / "dataset.json").read_text())
    bad = tuple(Quarantined(**q) for q in json.loads((folder / "quarantine.json").read_text()))
    dataset_id = int(folder.name[len("Dataset"):len("Dataset") + 3])
    cases = read_frame(folder / "cases.parquet", "nnU-Net raw dataset case table")
    return RawDataset(folder, dataset_id, dj["name"], cases, bad)


def benchmark_cases(benchmark_root: str | Path) -> tuple[pd.DataFrame, LabelMap]:
    """A prepared benchmark's case table and label map, from its single ``nnUNet_raw/Dataset*`` folder.

    What later steps (perturbed evaluation, the segmentation figure) need of a benchmark without
    re-checking the whole raw dataset.
    """
    found = sorted(Path(benchmark_root).glob("nnUNet_raw/Dataset*/cases.parquet"))
    if len(found) != 1:
        raise InputError(str(benchmark_root), "not a prepared segmentation benchmark (no single nnUNet_raw case table)")
    spec = json.loads((found[0].parent / "dataset.json").read_text())["brainfm"]["label_map"]
    cases = read_frame(found[0], "segmentation case table")
    return cases, LabelMap.from_mapping(spec, spec.get("source", str(found[0].parent)))
