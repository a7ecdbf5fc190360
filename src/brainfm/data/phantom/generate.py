"""Write a phantom dataset to disk exactly like a real one: BIDS-like NIfTI tree, labels, manifest.

Layout under ``out_dir``::

    dataset_description.json, phantom.json (generation parameters), participants.tsv, labels.csv
    sub-ADNI0001/ses-sc/anat/sub-ADNI0001_ses-sc_T1w.nii.gz          (T1c: _ce-gd_T1w, T2: _T2w, FLAIR: _FLAIR)
    sub-GLI0001/ses-01/anat/sub-GLI0001_ses-01_dseg.nii.gz           (label map, datasets with masks)
    manifest.parquet                                                   (written last)

Images are int16 with ``scl_slope`` (background exactly 0), label maps uint8, both RAS with the
template grid's affine. Every file is written atomically; a subject whose files all exist is
not rendered again (generation resumes after an interruption), unless ``phantom.json`` shows the
files were made with other parameters.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing as mp
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from brainfm.atomic import atomic_open, atomic_path, write_json, write_parquet
from brainfm.data.phantom.cohorts import PHANTOM_DATASETS, Options, SubjectSpec, parse_options, sample_subject, \
    stream
from brainfm.data.phantom.render import render_session
from brainfm.data.phantom.template import TEMPLATE_VERSION, Template, load_template
from brainfm.device import torch_threads
from brainfm.errors import ConfigError

__all__ = ["generate_dataset", "sample_cohort", "assign_splits", "image_relpath", "mask_relpath", "BIDS_SUFFIX",
           "GENERATOR_VERSION", "truth_relpath", "TRUTH_FILE"]

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
TRUTH_FILE = "truth.parquet"  # per (subject, session, modality) ground truth, next to manifest.parquet
BIDS_SUFFIX: dict[str, str] = {"T1": "T1w", "T1c": "ce-gd_T1w", "T2": "T2w", "FLAIR": "FLAIR"}
_INT_LABELS = ("event", "idh", "demented", "asd", "pd")
_FLOAT_LABELS = ("age", "survival_days", "dps")


def image_relpath(subject: str, session: str, modality: str) -> str:
    return f"{subject}/{session}/anat/{subject}_{session}_{BIDS_SUFFIX[modality]}.nii.gz"


def mask_relpath(subject: str, session: str) -> str:
    return f"{subject}/{session}/anat/{subject}_{session}_dseg.nii.gz"


def truth_relpath(subject: str, session: str) -> str:
    """Sidecar with the generator's ground truth of one visit (read by the ``phantom_oracle`` reference)."""
    return f"{subject}/{session}/anat/{subject}_{session}_truth.json"


def _subject_files(spec: SubjectSpec, has_mask: bool) -> list[str]:
    files = []
    for sess in spec.sessions:
        files += [image_relpath(spec.subject, sess.name, m) for m in spec.modalities]
        if has_mask:
            files.append(mask_relpath(spec.subject, sess.name))
        files.append(truth_relpath(spec.subject, sess.name))
    return files


def _save_image(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    """int16 + scl_slope, intercept 0 so the background stays exactly 0."""
    peak = float(data.max()) if data.size else 0.0
    slope = peak / 32000.0 if peak > 0 else 1.0
    q = np.round(np.clip(data, 0.0, None) / slope).astype(np.int16)
    img = nib.Nifti1Image(q, affine)
    img.header.set_slope_inter(slope, 0.0)
    _finish_header(img)
    with atomic_path(path, suffix=".nii.gz") as tmp:
        nib.save(img, tmp)


def _save_label(path: Path, label: np.ndarray, affine: np.ndarray) -> None:
    img = nib.Nifti1Image(label.astype(np.uint8), affine)
    _finish_header(img)
    with atomic_path(path, suffix=".nii.gz") as tmp:
        nib.save(img, tmp)


def _finish_header(img: nib.Nifti1Image) -> None:
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)


def render_subject(spec: SubjectSpec, tpl: Template, out_dir: Path, has_mask: bool) -> float:
    """Render and write every visit of one subject; returns seconds spent."""
    t0 = time.perf_counter()
    for k, sess in enumerate(spec.sessions):
        r = render_session(spec, k, tpl)
        for m, img in r.images.items():
            _save_image(out_dir / image_relpath(spec.subject, sess.name, m), img, r.affine)
        if has_mask and r.mask is not None:
            _save_label(out_dir / mask_relpath(spec.subject, sess.name), r.mask, r.affine)
        from brainfm.data.phantom.truth import session_truth

        write_json(out_dir / truth_relpath(spec.subject, sess.name), session_truth(r, tpl))
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- workers
_WORKER: dict[str, Any] = {}


def _init_worker(voxel_size: float, cache_dir: str) -> None:
    """One thread per worker process (n_jobs processes share the cores)."""
    import threadpoolctl
    import torch

    torch.set_num_threads(1)
    _WORKER["limits"] = threadpoolctl.threadpool_limits(1)
    _WORKER["tpl"] = load_template(voxel_size, cache_dir)


def _work(spec: SubjectSpec, out_dir: str, has_mask: bool) -> tuple[str, float]:
    return spec.subject, render_subject(spec, _WORKER["tpl"], Path(out_dir), has_mask)


# ----------------------------------------------------------------------------- cohort and splits
def sample_cohort(name: str, n_subjects: int, seed: int = 0, voxel_size: float = 2.5, n_sites: int = 3,
                  cache_dir: str | Path | None = None, **overrides: Any) -> list[SubjectSpec]:
    """The subject specs (labels, anatomy programme, lesions) of a phantom dataset, without voxels."""
    _check_args(name, n_subjects, seed, n_sites, 0.0, 1)
    opts = parse_options(name, overrides)
    tpl = load_template(voxel_size, cache_dir)
    return [sample_subject(name, i, seed, tpl, n_sites, opts) for i in range(n_subjects)]


def _strata(specs: list[SubjectSpec], column: str | None) -> np.ndarray:
    if column is None:
        return np.zeros(len(specs), dtype=object)
    if column == "idh":  # IDH and survival tasks share the split: stratify on both
        return np.array([f"{s.labels['idh']}-{s.labels['event']}" for s in specs], dtype=object)
    if column in ("age", "dps"):
        values = np.array([s.sessions[0].age if column == "age" else s.labels["dps"] for s in specs], dtype=float)
        n_bins = int(min(4, max(1, len(specs) // 5)))
        ranks = values.argsort().argsort()
        return (ranks * n_bins // max(len(specs), 1)).astype(object)
    return np.array([str(s.labels[column]) for s in specs], dtype=object)


def assign_splits(specs: list[SubjectSpec], seed: int, test_fraction: float) -> dict[str, str]:
    """Subject-level train/test split fixed by the seed, stratified on the dataset's main label.

    Proportional allocation: within each stratum subjects are shuffled and spread evenly over
    [0, 1); the ``round(test_fraction * n)`` lowest keys are the test set.
    """
    if not specs:
        return {}
    info = PHANTOM_DATASETS[specs[0].dataset]
    if info.split == "cv":
        return {s.subject: "" for s in specs}
    if info.split == "all_train" or test_fraction <= 0:
        return {s.subject: "train" for s in specs}
    rng = stream(seed, f"{info.name}/split")
    strata = _strata(specs, info.stratify)
    keys = np.empty(len(specs))
    for value in sorted(set(strata.tolist()), key=str):
        idx = np.flatnonzero(strata == value)
        order = rng.permutation(len(idx))
        keys[idx[order]] = (np.arange(len(idx)) + rng.random()) / len(idx)
    n_test = int(round(test_fraction * len(specs)))
    if len(specs) >= 2:
        n_test = min(max(n_test, 1), len(specs) - 1)
    test = set(np.argsort(keys, kind="stable")[:n_test].tolist())
    return {s.subject: ("test" if i in test else "train") for i, s in enumerate(specs)}


# ----------------------------------------------------------------------------- tables
def _label_value(col: str, spec: SubjectSpec, session_age: float) -> Any:
    if col == "age":
        return float(session_age)
    if col == "sex":
        return spec.sex
    if col == "condition":
        return spec.condition
    return spec.labels[col]


def _tables(specs: list[SubjectSpec], splits: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    info = PHANTOM_DATASETS[specs[0].dataset]
    rows, label_rows, part_rows = [], [], []
    for s in specs:
        for sess in s.sessions:
            labels = {c: _label_value(c, s, sess.age) for c in info.label_columns}
            label_rows.append({"subject": s.subject, "session": sess.name, **labels})
            for m in s.modalities:
                row = {"dataset": info.name, "subject": s.subject, "session": sess.name, "modality": m,
                       "path": image_relpath(s.subject, sess.name, m), "site": s.site, "split": splits[s.subject]}
                if info.has_mask:
                    row["mask_path"] = mask_relpath(s.subject, sess.name)
                rows.append({**row, **labels})
        base = {c: _label_value(c, s, s.sessions[0].age) for c in info.label_columns}
        part_rows.append({"participant_id": s.subject, **base, "site": s.site, "split": splits[s.subject],
                          "n_sessions": len(s.sessions), "modalities": ",".join(s.modalities)})
    manifest, labels, participants = pd.DataFrame(rows), pd.DataFrame(label_rows), pd.DataFrame(part_rows)
    for df in (manifest, labels, participants):
        for c in _INT_LABELS:
            if c in df.columns:
                df[c] = df[c].astype("int64")
        for c in _FLOAT_LABELS:
            if c in df.columns:
                df[c] = df[c].astype("float64")
    return manifest, labels, participants


# ----------------------------------------------------------------------------- entry point
def _check_args(name: str, n_subjects: int, seed: int, n_sites: int, test_fraction: float, n_jobs: int) -> None:
    if name not in PHANTOM_DATASETS:
        raise ConfigError(f"unknown phantom dataset {name!r}; known: {sorted(PHANTOM_DATASETS)}")
    if int(n_subjects) != n_subjects or n_subjects < 1:
        raise ConfigError(f"{name}: n_subjects must be a positive integer, got {n_subjects!r}")
    if int(seed) != seed or seed < 0:
        raise ConfigError(f"{name}: seed must be a non-negative integer, got {seed!r}")
    if int(n_sites) != n_sites or n_sites < 1:
        raise ConfigError(f"{name}: n_sites must be a positive integer, got {n_sites!r}")
    if not 0.0 <= float(test_fraction) < 1.0:
        raise ConfigError(f"{name}: test_fraction must be in [0, 1), got {test_fraction!r}")
    if int(n_jobs) != n_jobs or n_jobs < 1:
        raise ConfigError(f"{name}: n_jobs must be a positive integer, got {n_jobs!r}")


def _write_manifest(path: Path, df: pd.DataFrame) -> None:
    try:
        from brainfm.data.manifest import write_manifest
    except ImportError:  # pragma: no cover - the manifest module is part of the package
        write_parquet(path, df)
    else:
        write_manifest(path, df)


def generate_dataset(name: str, out_dir: str | Path, n_subjects: int, seed: int = 0, voxel_size: float = 2.5,
                     n_sites: int = 3, test_fraction: float = 0.2, n_jobs: int = 1, *,
                     cache_dir: str | Path | None = None, progress: bool | None = None,
                     **overrides: Any) -> pd.DataFrame:
    """Generate (or finish generating) phantom dataset ``name`` under ``out_dir``; return its manifest.

    ``overrides`` are dataset options (:class:`~brainfm.data.phantom.cohorts.Options`):
    ``modalities``, ``effect_scale``, ``aging_scale``, ``pd_fraction``, ``visits``, ``visit_prob``,
    ``mix``, ``dps_days``.
    ``cache_dir`` keeps the resampled template on disk for other processes; ``n_jobs`` > 1
    renders subjects in that many processes (results are identical to ``n_jobs=1``).
    """
    _check_args(name, n_subjects, seed, n_sites, test_fraction, n_jobs)
    info = PHANTOM_DATASETS[name]
    opts: Options = parse_options(name, overrides)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tpl = load_template(voxel_size, cache_dir)
    specs = [sample_subject(name, i, int(seed), tpl, int(n_sites), opts) for i in range(int(n_subjects))]
    splits = assign_splits(specs, int(seed), float(test_fraction))
    params = {"generator": "brainfm.data.phantom", "version": GENERATOR_VERSION, "template": "ICBM152 2009a (nilearn)",
              "template_version": TEMPLATE_VERSION, "dataset": name, "seed": int(seed),
              "voxel_size": float(voxel_size), "n_sites": int(n_sites), "options": opts.fingerprint()}
    params_path = out_dir / "phantom.json"
    resumable = False
    if params_path.exists():
        try:
            resumable = json.loads(params_path.read_text()) == params
        except (OSError, ValueError):
            resumable = False
        if not resumable:
            log.warning("%s was written with other parameters: regenerating every subject", params_path)
    write_json(params_path, params)
    todo = [s for s in specs
            if not (resumable and all((out_dir / f).exists() for f in _subject_files(s, info.has_mask)))]
    log.info("%s: %d subjects (%d to render) at %g mm", name, len(specs), len(todo), voxel_size)
    seconds: list[float] = []
    if todo and n_jobs == 1:
        # one thread, as in the workers: BLAS/torch reductions then add up in one order, so the
        # voxels do not depend on n_jobs or on the machine's core count
        with torch_threads(1, blas=True):
            for s in tqdm(todo, desc=name, disable=None if progress is None else not progress, unit="subj"):
                seconds.append(render_subject(s, tpl, out_dir, info.has_mask))
    elif todo:
        with contextlib.ExitStack() as stack:
            if cache_dir is None:  # the workers read the template from a private disk cache
                shared = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=out_dir, prefix=".phantom-tpl-")))
            else:
                shared = Path(cache_dir)
            load_template(voxel_size, shared)  # make sure the workers find it on disk
            ctx = mp.get_context("forkserver") if "forkserver" in mp.get_all_start_methods() else mp.get_context()
            pool = stack.enter_context(ProcessPoolExecutor(min(n_jobs, len(todo)), mp_context=ctx,
                                                           initializer=_init_worker,
                                                           initargs=(float(voxel_size), str(shared))))
            futures = [pool.submit(_work, s, str(out_dir), info.has_mask) for s in todo]
            for fut in tqdm(as_completed(futures), total=len(futures), desc=name, unit="subj",
                            disable=None if progress is None else not progress):
                seconds.append(fut.result()[1])
    manifest, labels, participants = _tables(specs, splits)
    with atomic_open(out_dir / "participants.tsv") as fh:
        participants.to_csv(fh, sep="\t", index=False)
    with atomic_open(out_dir / "labels.csv") as fh:
        labels.to_csv(fh, index=False)
    write_json(out_dir / "dataset_description.json", {
        "Name": f"{name}: {info.description}", "BIDSVersion": "1.9.0", "DatasetType": "raw",
        "License": "synthetic, derived from the ICBM 2009a template (see nilearn / MNI licence notice)",
        "GeneratedBy": [{"Name": "brainfm.data.phantom", "Version": str(GENERATOR_VERSION)}]})
    from brainfm.data.phantom.truth import collect_truth

    write_parquet(out_dir / TRUTH_FILE, collect_truth(out_dir, specs))
    _write_manifest(out_dir / "manifest.parquet", manifest)
    if seconds:
        n_img = sum(len(s.sessions) * len(s.modalities) for s in todo)
        log.info("%s: rendered %d subjects (%d images) in %.1f s wall, %.3f s per subject and worker", name,
                 len(todo), n_img, time.perf_counter() - t0, float(np.mean(seconds)))
    manifest.attrs["root"] = str(out_dir.resolve())
    return manifest


def phantom_dataset(dataset: Any, settings: Any, out_dir: str | Path) -> pd.DataFrame:
    """The ``phantom_dataset`` step: generate a ``source: phantom`` dataset of the config.

    ``dataset`` is a :class:`brainfm.config.DatasetSpec` (its ``registry`` names the generator,
    ``options`` are the generator options), ``settings`` the run's :class:`brainfm.config.PhantomSpec`.
    """
    return generate_dataset(dataset.registry, out_dir, dataset.n_subjects, seed=settings.seed,
                            voxel_size=settings.voxel_size, n_sites=settings.n_sites,
                            test_fraction=settings.test_fraction, n_jobs=settings.n_jobs,
                            cache_dir=settings.cache_dir or None, **dataset.options)
