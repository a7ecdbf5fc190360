"""The embedded phantom cohort: labelled brain MRI datasets generated from the ICBM152 template.

No patient data can be downloaded by the default run, yet every experiment needs images whose
labels carry real, learnable signal. Each phantom subject is the real ICBM152 2009a template
(T1 + GM/WM maps shipped with nilearn) warped by its own anatomy, aged, made ill by its labels
(atrophy patterns, gliomas, strokes), imaged at one of several sites and written as NIfTI with a
manifest, so everything downstream runs its real code path.

Public API::

    generate_dataset(name, out_dir, n_subjects, seed=0, voxel_size=2.5, n_sites=3,
                     test_fraction=0.2, n_jobs=1, **overrides) -> manifest DataFrame
    PHANTOM_DATASETS  name -> PhantomDataset(description, modalities, label_columns, ...)
    phantom_brainage(out_dir, n_subjects, seed=0, voxel_size=2.5, **kw), phantom_adni(...), ...
    sample_cohort(...) / render_session(...) / load_template(...)  (labels or voxels in memory)

Modules: :mod:`.template` (template maps), :mod:`.deform` (fields, resampling), :mod:`.atrophy`
(ageing and disease morphology), :mod:`.lesions` (gliomas, strokes), :mod:`.contrast` (MR
contrasts, site effects), :mod:`.cohorts` (datasets and labels), :mod:`.render` (one visit),
:mod:`.generate` (files, splits, manifest).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pandas as pd

from brainfm.data.phantom.cohorts import PHANTOM_DATASETS, Options, PhantomDataset, SessionSpec, SubjectSpec, \
    sample_subject
from brainfm.data.phantom.contrast import CLASSES, MODALITIES
from brainfm.data.phantom.generate import BIDS_SUFFIX, assign_splits, generate_dataset, image_relpath, \
    mask_relpath, phantom_dataset, sample_cohort
from brainfm.data.phantom.lesions import BRATS_LABELS
from brainfm.data.phantom.render import Rendered, render_session
from brainfm.data.phantom.template import Template, load_template

__all__ = [
    "generate_dataset", "phantom_dataset", "PHANTOM_DATASETS", "PhantomDataset", "Options", "SubjectSpec", "SessionSpec",
    "sample_subject", "sample_cohort", "assign_splits", "render_session", "Rendered", "load_template", "Template",
    "image_relpath", "mask_relpath", "BIDS_SUFFIX", "BRATS_LABELS", "CLASSES", "MODALITIES",
    "phantom_pretrain", "phantom_brainage", "phantom_adni", "phantom_oasis", "phantom_abide", "phantom_ppmi",
    "phantom_tumor", "phantom_stroke",
]


def _dataset_function(name: str) -> Callable[..., pd.DataFrame]:
    def generate(out_dir: str | Path, n_subjects: int, seed: int = 0, voxel_size: float = 2.5,
                 **kwargs: Any) -> pd.DataFrame:
        return generate_dataset(name, out_dir, n_subjects, seed=seed, voxel_size=voxel_size, **kwargs)

    generate.__name__ = generate.__qualname__ = name
    generate.__doc__ = (f"Generate ``{name}`` ({PHANTOM_DATASETS[name].description}); returns the manifest.\n\n"
                        f"Keyword arguments as :func:`generate_dataset`.")
    return generate


phantom_pretrain = _dataset_function("phantom_pretrain")
phantom_brainage = _dataset_function("phantom_brainage")
phantom_adni = _dataset_function("phantom_adni")
phantom_oasis = _dataset_function("phantom_oasis")
phantom_abide = _dataset_function("phantom_abide")
phantom_ppmi = _dataset_function("phantom_ppmi")
phantom_tumor = _dataset_function("phantom_tumor")
phantom_stroke = _dataset_function("phantom_stroke")
