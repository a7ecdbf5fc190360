"""Segmentation cases from a manifest: four co-registered modalities and a mask, checked one by one.

A case is one (subject, session) with a ``mask_path``. Before anything is written for nnU-Net,
each case is checked from its files: every modality present, every image and the mask 3D and on
one voxel grid (same shape and affine), and the mask coded only with the label map's values.
A case that fails is *quarantined*: its problem is logged with the case named, recorded, and the
other cases go on (one broken download should not cost a benchmark).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from brainfm.errors import ConfigError, ManifestError
from brainfm.data.datasets.labelmap import LabelMap

__all__ = ["MODALITIES", "Case", "Quarantined", "collect_cases", "check_case", "check_cases", "case_id_for"]

log = logging.getLogger("brainfm.segmentation")

#: nnU-Net channel order of the paper's four inputs (``_0000`` .. ``_0003``)
MODALITIES: tuple[str, ...] = ("T1", "T1c", "T2", "FLAIR")
_AFFINE_ATOL_MM = 1e-3
_SAFE = re.compile(r"[^A-Za-z0-9.-]+")


@dataclass(frozen=True)
class Case:
    """One segmentation case: its nnU-Net identifier, who it is, its split and its files (absolute)."""

    case_id: str
    subject: str
    session: str
    split: str
    images: tuple[Path, ...]
    mask: Path


@dataclass(frozen=True)
class Quarantined:
    """A case left out, and why (the message names the case and the file)."""

    case_id: str
    subject: str
    session: str
    reason: str


def case_id_for(subject: str, session: str, several_sessions: bool) -> str:
    """nnU-Net identifier: the subject (plus the session when a subject has several), filename-safe.

    Underscores are replaced too, so an identifier can never end like a ``_0000`` channel suffix.
    """
    raw = f"{subject}-{session}" if several_sessions else subject
    return _SAFE.sub("-", raw).strip("-")


def collect_cases(manifest: pd.DataFrame, modalities: Sequence[str] = MODALITIES,
                  root: str | Path | None = None) -> tuple[list[Case], list[Quarantined]]:
    """Group manifest rows into cases (without opening any file).

    Sessions lacking a modality or a mask are quarantined here; everything else is returned as
    :class:`Case` for :func:`check_case`. ``root`` defaults to ``manifest.attrs["root"]``.
    """
    if "mask_path" not in manifest.columns:
        raise ManifestError("manifest has no 'mask_path' column: it lists no segmentation masks")
    base = Path(root if root is not None else manifest.attrs.get("root", "."))
    modalities = tuple(modalities)
    sessions_per_subject = manifest.groupby("subject")["session"].nunique()
    cases: list[Case] = []
    bad: list[Quarantined] = []
    seen: dict[str, tuple[str, str]] = {}
    for (subject, session), rows in manifest.groupby(["subject", "session"], sort=True):
        subject, session = str(subject), str(session)
        cid = case_id_for(subject, session, bool(sessions_per_subject[subject] > 1))
        if cid in seen:
            raise ManifestError(f"case identifier {cid!r} is shared by {seen[cid]} and {(subject, session)}; "
                                "rename one subject")
        seen[cid] = (subject, session)
        by_mod = {str(r.modality): str(r.path) for r in rows.itertuples()}
        missing = [m for m in modalities if m not in by_mod]
        masks = sorted({str(p) for p in rows["mask_path"].fillna("") if str(p)})
        splits = sorted({str(s) for s in rows["split"].fillna("")})
        if missing:
            bad.append(Quarantined(cid, subject, session, f"case {cid}: missing modality {missing} "
                                                            f"(has {sorted(by_mod)}; needs {list(modalities)})"))
            continue
        if not masks:
            bad.append(Quarantined(cid, subject, session, f"case {cid}: no mask_path"))
            continue
        if len(masks) > 1:
            bad.append(Quarantined(cid, subject, session, f"case {cid}: rows disagree on the mask: {masks}"))
            continue
        cases.append(Case(cid, subject, session, splits[-1] if splits else "",
                          tuple((base / by_mod[m]).resolve() for m in modalities), (base / masks[0]).resolve()))
    return cases, bad


def _grid(path: Path) -> tuple[tuple[int, ...], np.ndarray]:
    import nibabel as nib

    img = nib.load(str(path))
    return tuple(int(s) for s in img.shape), np.asarray(img.affine, dtype=float)


def check_case(case: Case, label_map: LabelMap, modalities: Sequence[str] = MODALITIES) -> str | None:
    """``None`` when the case is usable, else a message naming the case, the file and the problem."""
    import nibabel as nib

    cid = case.case_id
    try:
        shape, affine = _grid(case.mask)
    except Exception as exc:  # nibabel raises several types for damaged files
        return f"case {cid}: cannot read mask {case.mask} ({exc.__class__.__name__}: {exc})"
    if len(shape) != 3:
        return f"case {cid}: mask {case.mask} is {len(shape)}D with shape {shape}, expected 3D"
    for modality, path in zip(modalities, case.images):
        try:
            ishape, iaffine = _grid(path)
        except Exception as exc:
            return f"case {cid}: cannot read {modality} image {path} ({exc.__class__.__name__}: {exc})"
        if ishape != shape:
            return (f"case {cid}: {modality} image {path} has shape {ishape} but the mask {case.mask} has {shape}; "
                    "image and mask must share one voxel grid")
        if not np.allclose(iaffine, affine, atol=_AFFINE_ATOL_MM):
            return (f"case {cid}: {modality} image {path} and mask {case.mask} have different affines "
                    f"(max difference {np.abs(iaffine - affine).max():.4g} mm); they must share one voxel grid")
    try:
        mask = np.asanyarray(nib.load(str(case.mask)).dataobj)
    except Exception as exc:
        return f"case {cid}: cannot read mask {case.mask} ({exc.__class__.__name__}: {exc})"
    unknown = label_map.unknown_values(mask)
    if unknown:
        return (f"case {cid}: mask {case.mask} has label value(s) {unknown} not in the label map "
                f"({label_map.source}: background 0 and {list(label_map.values)})")
    return None


def check_cases(cases: Iterable[Case], label_map: LabelMap, modalities: Sequence[str] = MODALITIES,
                n_jobs: int = 1) -> tuple[list[Case], list[Quarantined]]:
    """Run :func:`check_case` on every case; log and return the quarantined ones separately."""
    cases = list(cases)
    if int(n_jobs) < 1:
        raise ConfigError(f"n_jobs must be >= 1, got {n_jobs}")
    with ThreadPoolExecutor(max_workers=int(n_jobs)) as pool:
        problems = list(pool.map(lambda c: check_case(c, label_map, modalities), cases))
    good, bad = [], []
    for case, problem in zip(cases, problems):
        if problem is None:
            good.append(case)
        else:
            log.error("quarantined: %s", problem)
            bad.append(Quarantined(case.case_id, case.subject, case.session, problem))
    return good, bad
