"""Validated NIfTI input/output.

Every image enters the workflow through :func:`load_volume`, which turns each way a file can be
unusable (missing, truncated gzip, bad header, wrong dimensionality, NaN/Inf voxels, empty or
constant content, degenerate affine, implausibly small grid) into an :class:`InputError` naming
the file and the reason, so that a 51k-volume preprocessing run can quarantine the file and
continue instead of dying hours in. nibabel reads lazily: the whole voxel array is read *inside*
the guard, otherwise a truncated ``.nii.gz`` would only fail later, far from its file name.

Arrays come back as float32 ``(x, y, z)`` in RAS+ orientation (``nib.as_closest_canonical``
semantics), so axial slices are ``data[:, :, k]`` for every dataset whatever its storage order.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from brainfm.atomic import atomic_path
from brainfm.errors import InputError

__all__ = ["Volume", "load_volume", "load_mask", "save_volume", "MIN_DIM"]

MIN_DIM = 8  # fewer voxels than this along an axis is not a brain volume (a slice, a localiser, a thumbnail)


@dataclass(frozen=True)
class Volume:
    """A validated 3D image: float32 ``data`` (x, y, z) RAS+, its voxel-to-world ``affine`` and ``zooms`` (mm)."""

    data: np.ndarray
    affine: np.ndarray
    zooms: tuple[float, float, float]
    path: str | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    def with_data(self, data: np.ndarray) -> Volume:
        """Same grid, new voxels (e.g. after skull stripping or a perturbation)."""
        if data.shape != self.data.shape:
            raise ValueError(f"shape {data.shape} does not match the volume grid {self.data.shape}")
        return Volume(np.asarray(data, dtype=np.float32), self.affine, self.zooms, self.path)


def _open_image(path: Path) -> nib.Nifti1Image:
    if not path.exists():
        raise InputError(path, "file does not exist")
    if not path.is_file():
        raise InputError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty (0 bytes)")
    if path.name.endswith(".gz"):
        return _open_gzipped(path)
    try:
        return nib.load(str(path))
    except MemoryError:
        raise
    except Exception as exc:  # ImageFileError, HeaderDataError, unknown format
        raise InputError(path, f"not a readable NIfTI image (bad header: {type(exc).__name__}: {exc})") from exc


def _open_gzipped(path: Path) -> nib.Nifti1Image:
    """Decompress the whole file first: unlike nibabel's lazy reader, this checks the gzip CRC.

    nibabel stops reading at the last voxel and never looks at the gzip trailer, so a flipped
    byte in the middle of a ``.nii.gz`` silently yields garbage voxels; ``gzip.read`` to EOF
    detects it (CRC/length mismatch) as well as truncation.
    """
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except MemoryError:
        raise
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile (CRC, not gzip) is an OSError
        raise InputError(path, f"corrupt or truncated gzip stream ({type(exc).__name__}: {exc})") from exc
    sizeof_hdr = {int.from_bytes(raw[:4], "little"), int.from_bytes(raw[:4], "big")} if len(raw) >= 4 else set()
    klass = nib.Nifti2Image if 540 in sizeof_hdr else nib.Nifti1Image
    try:
        return klass.from_bytes(raw)
    except MemoryError:
        raise
    except Exception as exc:  # HeaderDataError, ImageFileError, short buffer
        raise InputError(path, f"not a readable NIfTI image (bad header: {type(exc).__name__}: {exc})") from exc


def _spatial_shape(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The 3D grid of ``shape``, squeezing trailing singleton dims (a 4D file holding one volume)."""
    dims = list(shape)
    while len(dims) > 3 and dims[-1] == 1:
        dims.pop()
    if len(dims) < 3:
        raise InputError(path, f"image is {len(shape)}D with shape {tuple(shape)}; a 3D volume is required")
    if len(dims) > 3:
        raise InputError(path, f"image is {len(dims)}D with shape {tuple(shape)} (e.g. a time series or multi-echo "
                               "stack); split it into 3D volumes first")
    return dims[0], dims[1], dims[2]


def _check_affine(path: Path, affine: np.ndarray) -> None:
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise InputError(path, "voxel-to-world affine is not finite (NaN/Inf in the header's qform/sform)")
    lin = affine[:3, :3]
    scale = float(np.abs(lin).max()) or 1.0
    if abs(np.linalg.det(lin / scale)) < 1e-6 or np.linalg.cond(lin) > 1e6:
        raise InputError(path, "voxel-to-world affine is singular (zero voxel size or collapsed axes)")


def _read_voxels(path: Path, img: nib.Nifti1Image) -> np.ndarray:
    try:
        return np.asarray(img.get_fdata(dtype=np.float32, caching="unchanged"))
    except MemoryError:
        raise
    except Exception as exc:  # truncated/corrupt gzip stream (EOFError, zlib.error, BadGzipFile, CRC), short file
        raise InputError(path, f"voxel data cannot be read; the file is truncated or corrupt "
                               f"({type(exc).__name__}: {exc})") from exc


def _to_ras(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorder/flip axes to the closest RAS+ orientation (what ``nib.as_closest_canonical`` does)."""
    ornt = nib.io_orientation(affine)
    if np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]):
        return data, affine
    out = nib.apply_orientation(data, ornt)
    new_affine = affine @ nib.orientations.inv_ornt_aff(ornt, data.shape)
    return np.ascontiguousarray(out), new_affine


def load_volume(path: str | Path, *, canonical: bool = True, min_dim: int = MIN_DIM) -> Volume:
    """Load and validate a 3D MRI volume; raise :class:`InputError` naming ``path`` if it is unusable.

    ``canonical`` reorients to RAS+ so that axis 2 runs inferior to superior. A 4D file whose
    fourth dimension is 1 is accepted and squeezed; any other non-3D image is rejected.
    """
    path = Path(path)
    img = _open_image(path)
    shape = _spatial_shape(path, tuple(int(s) for s in img.shape))
    if min(shape) < min_dim:
        raise InputError(path, f"implausibly small grid {shape}: every axis needs at least {min_dim} voxels")
    affine = np.asarray(img.affine, dtype=np.float64)
    _check_affine(path, affine)
    data = _read_voxels(path, img)
    data = data.reshape(shape)
    n_bad = int(data.size - np.count_nonzero(np.isfinite(data)))
    if n_bad:
        raise InputError(path, f"{n_bad} voxel(s) are NaN or Inf")
    lo, hi = float(data.min()), float(data.max())
    if hi == lo:
        raise InputError(path, "all-zero volume" if hi == 0 else f"constant volume (every voxel = {hi:g})")
    if canonical:
        data, affine = _to_ras(data, affine)
    zooms = tuple(float(z) for z in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    return Volume(np.ascontiguousarray(data, dtype=np.float32), affine, zooms, str(path))  # type: ignore[arg-type]


def load_mask(path: str | Path, like: Volume | None = None, *, canonical: bool = True,
              atol_mm: float = 1e-3) -> np.ndarray:
    """Load an integer label map (segmentation), checked to lie on the grid of ``like``.

    Returns uint8 labels (int32 if a label exceeds 255) in the same orientation as ``like``.
    An all-background label map is allowed (a scan without a lesion); non-integer or negative
    labels are not, because they mean an image or an interpolated mask was passed by mistake.
    """
    path = Path(path)
    img = _open_image(path)
    shape = _spatial_shape(path, tuple(int(s) for s in img.shape))
    affine = np.asarray(img.affine, dtype=np.float64)
    _check_affine(path, affine)
    data = _read_voxels(path, img).reshape(shape)
    if not np.isfinite(data).all():
        raise InputError(path, "label map has NaN or Inf voxels")
    if np.any(data < 0) or np.any(data != np.round(data)):
        raise InputError(path, "label map must hold non-negative integer labels (got negative or fractional values)")
    if canonical:
        data, affine = _to_ras(data, affine)
    if like is not None:
        if tuple(data.shape) != tuple(like.data.shape):
            raise InputError(path, f"label map grid {tuple(data.shape)} differs from its image "
                                   f"{like.path or ''} grid {tuple(like.data.shape)}")
        if not np.allclose(affine, like.affine, atol=atol_mm, rtol=0):
            raise InputError(path, f"label map affine differs from its image {like.path or ''} "
                                   f"(max difference {np.abs(affine - like.affine).max():.3g} mm)")
    dtype = np.uint8 if data.max() <= 255 else np.int32
    return np.ascontiguousarray(data, dtype=dtype)


def save_volume(path: str | Path, data: np.ndarray, affine: np.ndarray, *,
                dtype: np.dtype | type | None = None) -> None:
    """Write a 3D NIfTI atomically (a killed job never leaves a half-written ``.nii.gz``)."""
    path = Path(path)
    arr = np.asarray(data)
    if arr.ndim != 3:
        raise ValueError(f"save_volume expects a 3D array, got shape {arr.shape}")
    if dtype is not None:
        arr = arr.astype(dtype)
    img = nib.Nifti1Image(arr, np.asarray(affine, dtype=np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    with atomic_path(path, suffix=suffix) as tmp:
        nib.save(img, str(tmp))
