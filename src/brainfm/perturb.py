"""Test-time perturbations of raw MRI volumes (paper §4.5): contrast (gamma), Gibbs ringing, bias field.

They are applied to the *raw* volume before preprocessing, one kind at a time, with the
paper's grids in :data:`PERTURBATIONS`; the identity setting (gamma 1, alpha 0, s 0) returns an
unchanged copy. Each is deterministic given ``seed`` (only the bias field is random).

Definitions (the paper gives only names and grids, so these are our explicit choices):

* **gamma** (contrast): foreground intensities are min-max normalised to [0, 1], raised to the
  power gamma and mapped back to their original range; background untouched. gamma < 1 brightens
  dark tissue, gamma > 1 darkens it.
* **gibbs** (k-space truncation): alpha is the fraction of k-space removed along each encoding
  axis: the centred 3D spectrum keeps only the central ``(1 - alpha) * N_i`` frequencies of every
  axis i (a shrunken acquisition matrix), which produces the classic ringing at edges. MONAI's
  ``GibbsNoise`` does **not** have these semantics: it keeps a sphere of radius
  ``(1 - alpha) * max(shape) * sqrt(2) / 2`` samples, which for (near-)cubic 3D volumes removes
  k-space corners even at alpha = 0 (not an identity) and leaves the axes untruncated up to
  alpha ~ 0.29, so alpha is not "the fraction removed". That rule
  is available as ``mode="monai"`` (checked against MONAI in the tests) for comparison.
* **bias** (RF inhomogeneity): multiplicative field ``exp(s * L)`` where ``L`` is a random
  Legendre polynomial of degree 3 over the grid in [-1, 1]^3 (the MONAI ``RandBiasField`` basis),
  without constant term and scaled to max |L| = 1: the field lies in [e^-s, e^s] (s = 0.4:
  0.67 to 1.49), and for one seed the same spatial pattern is scaled by s, so severity is monotone.
  MONAI draws each coefficient uniformly in ``coeff_range``, which makes the field's amplitude grow
  with the number of terms; we normalise instead so that s has a direct meaning.

``mask`` restricts the effect to the foreground: for already skull-stripped inputs pass the brain
support so that Gibbs ringing does not spill into the zero background (which would otherwise turn
the whole field of view into "foreground" for the downstream crop and z-score).
"""

from __future__ import annotations

import numpy as np

from brainfm.config.perturbations import ALIASES, IDENTITY, PAPER_GRIDS, canonical_kind

__all__ = ["PERTURBATIONS", "IDENTITY", "ALIASES", "apply_perturbation", "gamma_contrast", "gibbs_ringing",
           "bias_field", "apply_bias_field", "canonical_kind"]

PERTURBATIONS = PAPER_GRIDS


def _foreground(data: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    return (data != 0) if mask is None else np.asarray(mask, dtype=bool)


def gamma_contrast(data: np.ndarray, gamma: float, mask: np.ndarray | None = None) -> np.ndarray:
    """Gamma correction of the foreground normalised to [0, 1] and mapped back to its range."""
    if gamma <= 0:
        raise ValueError(f"gamma must be positive, got {gamma}")
    out = np.array(data, dtype=np.float32, copy=True)
    if gamma == 1.0:
        return out
    fg = _foreground(data, mask)
    vals = out[fg].astype(np.float64)
    if vals.size == 0:
        return out
    lo, hi = vals.min(), vals.max()
    if hi <= lo:
        return out
    u = (vals - lo) / (hi - lo)
    out[fg] = (lo + (hi - lo) * u ** float(gamma)).astype(np.float32)
    return out


def _kspace_mask(shape: tuple[int, ...], alpha: float, mode: str, axes: tuple[int, ...]) -> np.ndarray:
    """Boolean mask over the *centred* spectrum of ``shape`` (True = frequency kept)."""
    if mode == "box":
        keep = np.ones(shape, dtype=bool)
        for ax in axes:
            n = shape[ax]
            f = np.fft.fftshift(np.fft.fftfreq(n))  # cycles/voxel in [-0.5, 0.5)
            ok = np.abs(f) <= 0.5 * (1.0 - alpha) + 1e-12
            view = [1] * len(shape)
            view[ax] = n
            keep &= ok.reshape(view)
        return keep
    if mode == "monai":  # monai.transforms.GibbsNoise._apply_mask, re-derived
        r = (1.0 - alpha) * max(shape) * np.sqrt(2.0) / 2.0
        center = (np.asarray(shape) - 1) / 2.0
        grids = np.ogrid[tuple(slice(0, n) for n in shape)]
        dist = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, center)))
        return dist <= r
    raise ValueError(f"unknown Gibbs mode {mode!r} (use 'box' or 'monai')")


def gibbs_ringing(data: np.ndarray, alpha: float, mask: np.ndarray | None = None, mode: str = "box",
                  axes: tuple[int, ...] | None = None) -> np.ndarray:
    """Truncate k-space: remove the outer ``alpha`` fraction of frequencies along each axis (``mode="box"``)."""
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"Gibbs alpha must be in [0, 1), got {alpha}")
    x = np.asarray(data, dtype=np.float32)
    if alpha == 0.0 and mode == "box":
        return x.copy()
    axes = tuple(range(x.ndim)) if axes is None else tuple(axes)
    k = np.fft.fftshift(np.fft.fftn(x.astype(np.float64)))
    k *= _kspace_mask(x.shape, float(alpha), mode, axes)
    out = np.real(np.fft.ifftn(np.fft.ifftshift(k))).astype(np.float32)
    if mask is not None:
        fg = np.asarray(mask, dtype=bool)
        out[~fg] = x[~fg]
    return out


def bias_field(shape: tuple[int, ...], strength: float, seed: int = 0, degree: int = 3) -> np.ndarray:
    """Smooth multiplicative field exp(strength * L), max |L| = 1, L a random Legendre polynomial."""
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"bias field needs a 2D or 3D shape, got {shape}")
    if strength == 0:
        return np.ones(shape, dtype=np.float32)
    rng = np.random.default_rng(int(seed))
    coeff = np.zeros((degree + 1,) * len(shape))
    idx = [i for i in np.ndindex(*coeff.shape) if 0 < sum(i) <= degree]
    for i, c in zip(idx, rng.standard_normal(len(idx))):
        coeff[i] = c
    coords = [np.linspace(-1.0, 1.0, n) for n in shape]
    if len(shape) == 3:
        log_field = np.polynomial.legendre.leggrid3d(*coords, coeff)
    else:
        log_field = np.polynomial.legendre.leggrid2d(*coords, coeff)
    log_field /= max(np.abs(log_field).max(), 1e-12)
    return np.exp(float(strength) * log_field).astype(np.float32)


def apply_bias_field(data: np.ndarray, strength: float, seed: int = 0, mask: np.ndarray | None = None) -> np.ndarray:
    if strength < 0:
        raise ValueError(f"bias-field strength must be >= 0, got {strength}")
    out = np.array(data, dtype=np.float32, copy=True)
    if strength == 0:
        return out
    field = bias_field(out.shape, strength, seed)
    if mask is None:
        return out * field
    fg = np.asarray(mask, dtype=bool)
    out[fg] *= field[fg]
    return out


def apply_perturbation(data: np.ndarray, kind: str, severity: float, seed: int = 0,
                       mask: np.ndarray | None = None) -> np.ndarray:
    """Perturb a raw volume: ``kind`` in {"gamma", "gibbs", "bias"} (aliases: contrast, gibbs_ringing,
    bias_field) at ``severity`` (gamma, alpha or s). Returns a new float32 array."""
    k = canonical_kind(kind)
    severity = float(severity)
    if k == "gamma":
        return gamma_contrast(data, severity, mask)
    if k == "gibbs":
        return gibbs_ringing(data, severity, mask)
    return apply_bias_field(data, severity, seed, mask)
