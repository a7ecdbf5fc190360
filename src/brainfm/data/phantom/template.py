"""The ICBM152 2009a template, resampled once per voxel size, and the maps derived from it.

Every phantom subject is a warp of these maps, so they are computed once per process (and, when
the caller names a cache directory, once per machine). The template lives in MNI space, so the
working grid's affine maps voxel indices straight to MNI millimetres; region centres taken from
the literature (hippocampus at (+-28, -22, -14), ...) can therefore be used as they are.

Channels of :attr:`Template.maps` (all float32, on the working grid):

``gm``, ``wm``, ``csf``
    tissue probabilities; CSF = brain mask - GM - WM, clipped at 0 (the template ships no CSF map).
``brain``
    the binary brain mask (what "skull-stripped" means for the phantom).
``csf_near``
    closeness to CSF or to the brain surface (smoothed, 0..1): where cortical thinning opens sulci.
``gm_near``
    closeness to grey matter (smoothed, 0..1): where a thicker cortex eats into white matter.
``vent``
    CSF of the lateral/third ventricles, used to measure ventricular volume.
``vent_near``
    closeness to the ventricles (smoothed, 0..1): where periventricular white-matter
    hyperintensities of ageing appear.

:attr:`Template.vfield` holds, per hemisphere, the unit-scaled gradient of the smoothed ventricle
map: displacing sampling positions along it by ``alpha`` millimetres grows the ventricles by about
``alpha`` at their walls and leaves distant tissue alone.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from brainfm.atomic import atomic_path
from brainfm.errors import ConfigError, InputError

__all__ = ["Template", "CHANNELS", "load_template", "clear_template_cache", "TEMPLATE_VERSION"]

log = logging.getLogger(__name__)

TEMPLATE_VERSION = 2
CHANNELS: tuple[str, ...] = ("gm", "wm", "csf", "brain", "csf_near", "gm_near", "vent", "vent_near")
_FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
# box (MNI mm) that contains the lateral and third ventricles but no sulcal CSF
_VENT_BOX = ((-30.0, 30.0), (-50.0, 35.0), (-5.0, 35.0))
_VENT_MIN_ML = 1.0
_VFIELD_SIGMA_MM = 4.0

_lock = threading.Lock()
_CACHE: dict[float, Template] = {}


@dataclass(frozen=True)
class Template:
    """Template maps on an isotropic working grid (RAS, MNI millimetres)."""

    voxel_size: float
    affine: np.ndarray  # (4, 4) voxel index -> MNI mm
    maps: np.ndarray  # (len(CHANNELS), X, Y, Z) float32
    vfield: np.ndarray  # (6, X, Y, Z) float32: left (3) then right (3) ventricle growth directions
    depth_mm: np.ndarray  # (X, Y, Z) float32: distance to the brain surface, 0 outside

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.maps.shape[1:])  # type: ignore[return-value]

    def channel(self, name: str) -> np.ndarray:
        return self.maps[CHANNELS.index(name)]

    @functools.cached_property
    def mni_grid(self) -> np.ndarray:
        """MNI mm of every voxel (3, X, Y, Z), float32 (computed once, read-only)."""
        idx = np.indices(self.shape, dtype=np.float32).reshape(3, -1)
        grid = (self.affine[:3, :3] @ idx + self.affine[:3, 3:4]).reshape(3, *self.shape).astype(np.float32)
        grid.setflags(write=False)
        return grid

    @functools.cached_property
    def maps_box(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Where any map is non-zero (:func:`~brainfm.data.phantom.deform.nonzero_box`): sampling skips the rest."""
        from brainfm.data.phantom.deform import nonzero_box

        return nonzero_box(self.maps)

    @functools.cached_property
    def vfield_box(self) -> tuple[np.ndarray, np.ndarray] | None:
        from brainfm.data.phantom.deform import nonzero_box

        return nonzero_box(self.vfield)

    def mni_coords(self, mask: np.ndarray | None = None) -> np.ndarray:
        """MNI mm of every voxel (3, X, Y, Z), or of the voxels in ``mask`` (3, N)."""
        if mask is None:
            return self.mni_grid
        idx = np.stack(np.nonzero(mask)).astype(np.float64)
        return self.affine[:3, :3] @ idx + self.affine[:3, 3:4]

    def mni_to_vox(self, mni: np.ndarray) -> np.ndarray:
        """Continuous voxel indices of MNI points given as (3, ...) or (3,)."""
        mni = np.asarray(mni, dtype=np.float64)
        flat = mni.reshape(3, -1)
        vox = np.linalg.solve(self.affine[:3, :3], flat - self.affine[:3, 3:4])
        return vox.reshape(mni.shape)

    def fingerprint(self) -> str:
        """Short hash of the maps, to tell apart cached grids."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.maps[:, ::4, ::4, ::4]).tobytes())
        return h.hexdigest()[:12]


def _load_icbm152() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The 1 mm ICBM152 2009a maps shipped inside nilearn (no download)."""
    try:
        from nilearn import datasets
    except ImportError as exc:  # pragma: no cover - nilearn is a hard dependency
        raise InputError("nilearn", "the phantom cohort needs nilearn's bundled ICBM152 template") from exc
    t1 = datasets.load_mni152_template(resolution=1)
    gm = datasets.load_mni152_gm_template(resolution=1)
    wm = datasets.load_mni152_wm_template(resolution=1)
    mask = datasets.load_mni152_brain_mask(resolution=1)
    affine = np.asarray(t1.affine, dtype=np.float64)
    for name, img in (("gm", gm), ("wm", wm), ("mask", mask)):
        if img.shape != t1.shape or not np.allclose(img.affine, affine):
            raise InputError(f"nilearn MNI152 {name} template", "grid differs from the T1 template")
    brain = (np.asarray(mask.get_fdata(), dtype=np.float32) > 0.5).astype(np.float32)
    g = np.clip(np.asarray(gm.get_fdata(), dtype=np.float32), 0, 1) * brain
    w = np.clip(np.asarray(wm.get_fdata(), dtype=np.float32), 0, 1) * brain
    excess = np.maximum(g + w - 1.0, 0.0)  # never observed, but keep probabilities summing to <= 1
    w = w - excess
    csf = np.clip(brain - g - w, 0.0, 1.0)
    return {"gm": g, "wm": w, "csf": csf, "brain": brain}, affine


def _ventricles(csf: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Soft map of the lateral and third ventricles at 1 mm (CSF in large central components)."""
    idx = [np.arange(n, dtype=np.float64) * affine[a, a] + affine[a, 3] for a, n in enumerate(csf.shape)]
    box = np.ones(csf.shape, dtype=bool)
    for a, (lo, hi) in enumerate(_VENT_BOX):
        shape = [1, 1, 1]
        shape[a] = -1
        ax = idx[a].reshape(shape)
        box &= (ax > lo) & (ax < hi)
    lab, n = ndi.label((csf > 0.5) & box)
    if n == 0:
        raise InputError("nilearn MNI152 template", "no ventricles found in the CSF map")
    vox_ml = abs(np.linalg.det(affine[:3, :3])) / 1000.0
    sizes = ndi.sum_labels(np.ones_like(csf), lab, index=np.arange(1, n + 1)) * vox_ml
    keep = np.isin(lab, 1 + np.flatnonzero(sizes >= _VENT_MIN_ML))
    keep = ndi.binary_dilation(keep, iterations=1)
    return (csf * keep).astype(np.float32)


def _resample(vol: np.ndarray, src_affine: np.ndarray, dst_affine: np.ndarray, shape: tuple[int, ...],
              voxel_size: float) -> np.ndarray:
    """Anti-aliased trilinear resampling of a 1 mm map onto the working grid."""
    src_vox = float(abs(src_affine[0, 0]))
    sigma = np.sqrt(max(voxel_size**2 - src_vox**2, 0.0)) * _FWHM_TO_SIGMA / src_vox
    if sigma > 0.1:
        vol = ndi.gaussian_filter(vol, sigma, mode="constant")
    m = np.linalg.solve(src_affine, dst_affine)
    coords = np.indices(shape, dtype=np.float64).reshape(3, -1)
    coords = m[:3, :3] @ coords + m[:3, 3:4]
    out = ndi.map_coordinates(vol, coords, order=1, mode="constant", cval=0.0, prefilter=False)
    return out.reshape(shape).astype(np.float32)


def _near(x: np.ndarray, sigma_vox: float) -> np.ndarray:
    s = ndi.gaussian_filter(x, sigma_vox, mode="nearest")
    q = float(np.quantile(s[s > 1e-3], 0.99)) if (s > 1e-3).any() else 1.0
    return np.clip(s / max(q, 1e-6), 0.0, 1.0).astype(np.float32)


def _build(voxel_size: float) -> Template:
    maps1, affine1 = _load_icbm152()
    vent1 = _ventricles(maps1["csf"], affine1)
    shape1 = np.array(maps1["gm"].shape)
    extent = shape1 * abs(affine1[0, 0])
    shape = tuple(int(round(e / voxel_size)) for e in extent)
    center = affine1[:3, :3] @ ((shape1 - 1) / 2.0) + affine1[:3, 3]
    affine = np.eye(4)
    affine[:3, :3] = np.eye(3) * voxel_size
    affine[:3, 3] = center - voxel_size * (np.array(shape) - 1) / 2.0
    xs = affine1[0, 3] + np.arange(shape1[0]) * affine1[0, 0]
    left_w = np.clip(0.5 - xs / 2.0, 0.0, 1.0).astype(np.float32)[:, None, None]  # x < 0 is left (RAS)
    res = {k: _resample(v, affine1, affine, shape, voxel_size) for k, v in maps1.items()}
    vl = _resample(vent1 * left_w, affine1, affine, shape, voxel_size)
    vr = _resample(vent1 * (1 - left_w), affine1, affine, shape, voxel_size)
    brain = (res["brain"] > 0.5).astype(np.float32)
    tissue = np.stack([res["gm"], res["wm"], res["csf"]]) * brain
    total = tissue.sum(0)
    # renormalise partial-volume loss from resampling inside the mask
    tissue = np.where(total > 1e-3, tissue / np.maximum(total, 1e-3), np.stack([0 * brain, 0 * brain, brain]))
    tissue *= brain
    gm, wm, csf = tissue
    csf_near = _near(csf + (1.0 - brain), 3.0 / voxel_size) * brain
    gm_near = _near(gm, 2.0 / voxel_size) * brain
    vent = np.minimum(vl + vr, csf)
    vent_near = _near(vent, 5.0 / voxel_size) * brain
    # ventricle growth directions: gradient of the smoothed per-hemisphere ventricle map (per mm)
    sig_v = _VFIELD_SIGMA_MM / voxel_size
    fields = []
    for v in (vl, vr):
        s = ndi.gaussian_filter(v, sig_v, mode="constant")
        fields.extend(np.gradient(s, voxel_size))
    vfield = np.stack(fields).astype(np.float32)
    peak = max(np.sqrt((vfield[:3] ** 2).sum(0)).max(), np.sqrt((vfield[3:] ** 2).sum(0)).max())
    vfield /= max(float(peak), 1e-12)
    depth = ndi.distance_transform_edt(brain > 0.5, sampling=voxel_size).astype(np.float32)
    maps = np.stack([gm, wm, csf, brain, csf_near, gm_near, vent, vent_near]).astype(np.float32)
    return Template(float(voxel_size), affine, np.ascontiguousarray(maps), np.ascontiguousarray(vfield), depth)


def _cache_file(cache_dir: Path, voxel_size: float) -> Path:
    return Path(cache_dir) / f"icbm152_2009a_{voxel_size:g}mm_v{TEMPLATE_VERSION}.npz"


def load_template(voxel_size: float = 2.5, cache_dir: str | Path | None = None) -> Template:
    """The template maps at ``voxel_size`` mm, computed once per process (and per ``cache_dir``)."""
    voxel_size = float(voxel_size)
    if not np.isfinite(voxel_size) or not 0.5 <= voxel_size <= 8.0:
        raise ConfigError(f"phantom voxel_size must be between 0.5 and 8 mm, got {voxel_size}")
    with _lock:
        path = _cache_file(Path(cache_dir), voxel_size) if cache_dir is not None else None
        tpl = _CACHE.get(voxel_size)
        damaged = False
        if tpl is None and path is not None and path.exists():
            try:
                with np.load(path) as z:
                    tpl = Template(float(z["voxel_size"]), z["affine"], z["maps"], z["vfield"], z["depth_mm"])
            except Exception as exc:  # a damaged cache is rebuilt, not trusted
                log.warning("ignoring unreadable template cache %s (%s)", path, exc)
                tpl, damaged = None, True
        if tpl is None:
            tpl = _build(voxel_size)
        if path is not None and (damaged or not path.exists()):
            with atomic_path(path, suffix=".npz") as tmp:
                np.savez(tmp, voxel_size=tpl.voxel_size, affine=tpl.affine, maps=tpl.maps, vfield=tpl.vfield,
                         depth_mm=tpl.depth_mm)
        _CACHE[voxel_size] = tpl
        return tpl


def clear_template_cache() -> None:
    """Forget the per-process template cache (tests; memory)."""
    with _lock:
        _CACHE.clear()
