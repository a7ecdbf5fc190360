"""MR contrast synthesis from tissue fractions, and the acquisition effects of a site.

A voxel's signal is the fraction-weighted sum of class intensities (partial volume), so every
contrast is a different linear read-out of the same anatomy: T1 orders WM > GM > CSF, T2 and
FLAIR reverse it (FLAIR nulls free water), and T1c is T1 plus gadolinium uptake in enhancing
tumour. Lesion classes carry their own intensities, which is what makes tumour sub-regions,
IDH-like appearance and stroke age visible at all.

A site (scanner + protocol) then changes the read-out the way real sites do: per-class contrast,
a gamma curve, a smooth multiplicative bias field, Rician noise, a global intensity scale and the
slice thickness (blur and decimation along z, resampled back to the grid).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from brainfm.data.phantom.deform import smooth_field

__all__ = ["CLASSES", "MODALITIES", "INTENSITY", "SiteContrast", "site_contrast", "synthesize"]

CLASSES: tuple[str, ...] = ("csf", "gm", "wm", "ncr", "net", "et", "ed", "isch")
MODALITIES: tuple[str, ...] = ("T1", "T1c", "T2", "FLAIR")
# Relative class intensities (white matter on T1 = 1). ncr: necrosis; net: non-enhancing tumour
# (IDH-mutant-like: bright on T2, relatively dark on FLAIR = the T2/FLAIR mismatch); et:
# enhancing tumour; ed: vasogenic oedema; isch: ischaemic (acute/subacute stroke) tissue.
INTENSITY: dict[str, np.ndarray] = {
    #                     csf   gm    wm    ncr   net   et    ed    isch
    "T1": np.array([0.26, 0.62, 1.00, 0.24, 0.46, 0.56, 0.56, 0.44], dtype=np.float32),
    "T1c": np.array([0.28, 0.66, 1.00, 0.26, 0.48, 1.55, 0.60, 0.46], dtype=np.float32),
    "T2": np.array([1.00, 0.56, 0.38, 0.92, 0.86, 0.62, 0.76, 0.78], dtype=np.float32),
    "FLAIR": np.array([0.10, 0.62, 0.44, 0.34, 0.46, 0.72, 0.96, 0.92], dtype=np.float32),
}
_GM, _WM = CLASSES.index("gm"), CLASSES.index("wm")


@dataclass(frozen=True)
class SiteContrast:
    """How one site acquires one modality."""

    class_gain: np.ndarray  # (n_classes,) multiplicative contrast change
    gamma: float
    bias_std: float  # std of the log bias field
    bias_spacing_mm: float
    noise: float  # Rician sigma relative to the mean brain signal
    slice_mm: float  # slice thickness along z
    scale: float  # scanner units


# slice thicknesses (mm) a site may use: 3D T1 sequences are near-isotropic, T2/FLAIR often 2D
_SLICE_MM = {"T1": (1.0, 1.0, 1.2, 1.5, 2.0), "T1c": (1.0, 1.2, 2.0, 3.0, 5.0), "T2": (1.0, 2.0, 3.0, 4.0, 5.0),
             "FLAIR": (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)}


def site_contrast(rng: np.random.Generator, modality: str = "T1") -> SiteContrast:
    """Draw one site's protocol for one modality (call with a site- and modality-specific rng)."""
    return SiteContrast(
        class_gain=np.exp(rng.normal(0.0, 0.04, len(CLASSES))).astype(np.float32),
        gamma=float(np.exp(rng.normal(0.0, 0.07))),
        bias_std=float(rng.uniform(0.02, 0.10)),
        bias_spacing_mm=float(rng.uniform(45.0, 80.0)),
        noise=float(rng.uniform(0.012, 0.04)),
        slice_mm=float(rng.choice(_SLICE_MM[modality])),
        scale=float(np.exp(rng.uniform(np.log(300.0), np.log(3000.0)))),
    )


def _zresample(vol: np.ndarray, factor: float, rng: np.random.Generator | None, noise: float) -> np.ndarray:
    """Acquire thick slices (blur + decimate along z, Rician noise per slice), interpolate back."""
    nz = vol.shape[2]
    if factor > 1.15:
        vol = ndi.gaussian_filter1d(vol, factor * 0.4247, axis=2, mode="nearest")
        pos = np.arange(0.0, nz - 1 + 1e-6, factor)
        if pos[-1] < nz - 1:
            pos = np.append(pos, nz - 1.0)
        coarse = _lerp_z(vol, pos)
    else:
        coarse, pos = vol, None
    if rng is not None and noise > 0:
        n1 = rng.standard_normal(coarse.shape, dtype=np.float32)
        n2 = rng.standard_normal(coarse.shape, dtype=np.float32)
        coarse = np.sqrt((coarse + noise * n1) ** 2 + (noise * n2) ** 2)
    if pos is None:
        return coarse
    # back to the fine grid: fractional coarse index of every fine slice
    return _lerp_z(coarse, np.interp(np.arange(nz, dtype=np.float64), pos, np.arange(len(pos), dtype=np.float64)))


def _lerp_z(vol: np.ndarray, pos: np.ndarray) -> np.ndarray:
    i0 = np.clip(np.floor(pos).astype(int), 0, vol.shape[2] - 1)
    i1 = np.clip(i0 + 1, 0, vol.shape[2] - 1)
    w = (pos - i0).astype(np.float32)
    return vol[:, :, i0] * (1 - w) + vol[:, :, i1] * w


def synthesize(fractions: np.ndarray, modality: str, site: SiteContrast, subject_gain: np.ndarray,
               brain: np.ndarray, voxel_size: float, rng: np.random.Generator, *, myelin: float = 1.0,
               texture: np.ndarray | None = None) -> np.ndarray:
    """One image (float32, scanner units, 0 outside ``brain``) from class fractions (C, X, Y, Z).

    ``subject_gain`` is the subject's own small contrast deviation; ``myelin`` < 1 moves white
    matter towards grey matter (unmyelinated young brains); ``texture`` is a shared multiplicative
    micro-structure field. ``rng`` draws the visit's bias field and noise.
    """
    mu = INTENSITY[modality] * site.class_gain * subject_gain
    mu = mu.copy()
    mu[_WM] = mu[_GM] + (mu[_WM] - mu[_GM]) * myelin
    img = np.tensordot(mu.astype(np.float32), fractions, axes=(0, 0))
    if texture is not None:
        img *= 1.0 + texture
    np.maximum(img, 0.0, out=img)
    img **= np.float32(site.gamma)
    bias = smooth_field(rng, img.shape, site.bias_spacing_mm / voxel_size, 1, site.bias_std)[0]
    img *= np.exp(bias)
    level = float(img[brain > 0].mean()) if (brain > 0).any() else 1.0
    img = _zresample(img, site.slice_mm / voxel_size, rng, site.noise * level)
    img *= np.float32(site.scale)
    img *= brain
    return img.astype(np.float32, copy=False)
