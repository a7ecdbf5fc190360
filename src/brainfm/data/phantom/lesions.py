"""Focal lesions: BraTS-style gliomas (with an IDH-like phenotype) and MCA-territory strokes.

A lesion is a noise-perturbed ellipsoid in template (MNI) space. Its sub-regions are level sets of
the same perturbed distance ``d`` (1 at the tumour-core boundary), each with its own irregular
edge, so they are nested by construction: necrosis inside the enhancing rim inside the oedema.
The lesion also displaces the surrounding tissue radially (mass effect; negative for the volume
loss of an old stroke).

Phenotypes follow the radiology:

* IDH wild-type (glioblastoma-like): older patients, large necrotic core, thick enhancing ring,
  wide oedema, strong mass effect, anywhere in the hemispheres;
* IDH mutant: younger patients, mostly frontal, non-enhancing core (bright on T2, relatively dark
  on FLAIR: the T2/FLAIR mismatch), little or no necrosis and enhancement, little oedema;
* stroke: appearance is a function of days post stroke (dps): acute swelling and ischaemic
  tissue, subacute ischaemia, then cavitation into CSF with volume loss and ex-vacuo ventricular
  enlargement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from brainfm.data.phantom.deform import rotation_matrix
from brainfm.data.phantom.template import Template

__all__ = ["FourierNoise", "TumorSpec", "StrokeSpec", "draw_tumor", "draw_stroke", "tumor_fractions",
           "stroke_fractions", "stroke_course", "BRATS_LABELS", "mass_displacement"]

BRATS_LABELS = {"NCR": 1, "ED": 2, "ET": 3}  # BraTS 2023: WT = {1,2,3}, TC = {1,3}, ET = {3}


@dataclass(frozen=True)
class FourierNoise:
    """A smooth zero-mean, unit-variance random field from random Fourier features (mm)."""

    k: np.ndarray  # (K, 3) wave vectors, rad/mm
    phase: np.ndarray  # (K,)

    @staticmethod
    def draw(rng: np.random.Generator, length_mm: float, n: int = 12) -> FourierNoise:
        return FourierNoise(rng.normal(0.0, 1.0 / length_mm, (n, 3)), rng.uniform(0, 2 * np.pi, n))

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        return np.sqrt(2.0 / len(self.phase)) * np.cos(self.k @ pts + self.phase[:, None]).sum(0)


@dataclass(frozen=True)
class TumorSpec:
    """Geometry and phenotype of one glioma."""

    center: np.ndarray  # MNI mm
    rotation: np.ndarray  # (3, 3)
    axes_mm: np.ndarray  # tumour-core semi-axes
    r_ncr: float  # necrosis radius as a fraction of the core (0 = none)
    r_ed: float  # oedema extent as a multiple of the core
    focal_et: tuple[float, float, float, float] | None  # (ux, uy, uz, radius) in core units; None = ring
    ring_et: bool
    irregularity: float
    noise_core: FourierNoise
    noise_edema: FourierNoise
    mass: float
    idh_mutant: bool

    @property
    def radius_mm(self) -> float:
        return float(np.prod(self.axes_mm) ** (1.0 / 3.0))

    def nominal_volumes_ml(self) -> dict[str, float]:
        """Analytic sub-region volumes (ml) of the unperturbed ellipsoids."""
        tc = 4.0 / 3.0 * np.pi * float(np.prod(self.axes_mm)) / 1000.0
        ncr = tc * self.r_ncr**3
        if self.ring_et:
            et = tc - ncr
        elif self.focal_et is not None:
            et = tc * self.focal_et[3] ** 3
        else:
            et = 0.0
        return {"tc": tc, "ncr": ncr, "et": et, "wt": tc * self.r_ed**3}


@dataclass(frozen=True)
class StrokeSpec:
    """Geometry and timing of one ischaemic stroke."""

    center: np.ndarray
    rotation: np.ndarray
    axes_mm: np.ndarray
    irregularity: float
    noise: FourierNoise
    dps: float
    hemisphere: int  # -1 left, +1 right

    @property
    def radius_mm(self) -> float:
        return float(np.prod(self.axes_mm) ** (1.0 / 3.0))

    def nominal_volume_ml(self) -> float:
        return 4.0 / 3.0 * np.pi * float(np.prod(self.axes_mm)) / 1000.0


def _pick_center(u: np.ndarray, tpl: Template, candidates: list[np.ndarray]) -> np.ndarray:
    """Centre from four uniforms ``u`` in the first non-empty candidate mask (strictest first).

    Drawing the uniforms before knowing the grid keeps every other random choice (and hence the
    labels) independent of the voxel size.
    """
    for ok in candidates:
        idx = np.flatnonzero(ok.ravel())
        if len(idx):
            break
    else:
        raise RuntimeError("no admissible lesion centre in the template")  # programming error
    v = np.array(np.unravel_index(idx[min(int(u[0] * len(idx)), len(idx) - 1)], ok.shape), dtype=np.float64)
    v += u[1:4] - 0.5
    return tpl.affine[:3, :3] @ v + tpl.affine[:3, 3]


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    return rotation_matrix(rng.uniform(-np.pi, np.pi, 3))


def draw_tumor(rng: np.random.Generator, tpl: Template, idh_mutant: bool) -> TumorSpec:
    """A glioma whose location, size and sub-regions depend on the IDH-like status.

    The phenotypes overlap as they do clinically: about 15% of wild-type tumours do not enhance
    and about 15% of mutant tumours enhance around a necrotic core (grade-4 astrocytoma-like).
    """
    enhancing = rng.random() < (0.15 if idh_mutant else 0.85)
    if idh_mutant:
        tc_ml = float(np.exp(rng.normal(np.log(22.0), 0.6)))
        frontal = rng.random() < 0.75
        mass = float(rng.uniform(0.05, 0.2))
        r_ed = float(rng.uniform(1.2, 1.6) if enhancing else rng.uniform(1.08, 1.4))
    else:
        tc_ml = float(np.exp(rng.normal(np.log(32.0), 0.6)))
        frontal = rng.random() < 0.25
        mass = float(rng.uniform(0.2, 0.4))
        r_ed = float(rng.uniform(1.45, 2.2) if enhancing else rng.uniform(1.2, 1.7))
    focal = None
    if enhancing:
        ring = True
        r_ncr = float(rng.uniform(0.45, 0.75) if not idh_mutant else rng.uniform(0.3, 0.6))
    else:
        ring = False
        r_ncr = float(rng.uniform(0.15, 0.35)) if rng.random() < 0.25 else 0.0
        if rng.random() < 0.4:
            u = rng.normal(0.0, 1.0, 3)
            u = u / np.linalg.norm(u) * rng.uniform(0.0, 0.5)
            focal = (float(u[0]), float(u[1]), float(u[2]), float(rng.uniform(0.2, 0.35)))
    tc_ml = float(np.clip(tc_ml, 3.0, 110.0))
    radius = (tc_ml * 1000.0 * 3.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
    elong = np.exp(rng.normal(0.0, 0.15, 3))
    axes = radius * elong / np.prod(elong) ** (1.0 / 3.0)
    rotation = _random_rotation(rng)
    irregularity = float(rng.uniform(0.1, 0.22))
    noise_core = FourierNoise.draw(rng, rng.uniform(5.0, 9.0))
    noise_edema = FourierNoise.draw(rng, rng.uniform(7.0, 12.0))
    u = rng.random(4)
    mni = tpl.mni_coords()
    gm, wm = tpl.channel("gm"), tpl.channel("wm")
    ok = ((gm + wm) > 0.9) & (wm > 0.4) & (np.abs(mni[0]) > 12.0) & (mni[2] > -25.0) & (mni[2] < 55.0)
    ok &= (mni[1] > 5.0) if frontal else (mni[1] <= 5.0)
    center = _pick_center(u, tpl, [ok & (tpl.depth_mm > min(0.7 * radius, 25.0)), ok & (tpl.depth_mm > 10.0), ok])
    return TumorSpec(center=center, rotation=rotation, axes_mm=axes, r_ncr=r_ncr, r_ed=r_ed, focal_et=focal,
                     ring_et=ring, irregularity=irregularity, noise_core=noise_core, noise_edema=noise_edema,
                     mass=mass, idh_mutant=bool(idh_mutant))


def draw_stroke(rng: np.random.Generator, tpl: Template, dps: float) -> StrokeSpec:
    """An MCA-territory infarct: cortical-subcortical (70%) or deep lenticulostriate (30%)."""
    hemi = 1 if rng.random() < 0.5 else -1
    cortical = rng.random() < 0.7
    if cortical:
        vol = float(np.clip(np.exp(rng.normal(np.log(14.0), 0.9)), 0.8, 150.0))
    else:
        vol = float(np.clip(np.exp(rng.normal(np.log(3.0), 0.7)), 0.4, 25.0))
    radius = (vol * 1000.0 * 3.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
    elong = np.exp(rng.normal(0.0, 0.25, 3))
    axes = radius * elong / np.prod(elong) ** (1.0 / 3.0)
    rotation = _random_rotation(rng)
    irregularity = float(rng.uniform(0.12, 0.25))
    noise = FourierNoise.draw(rng, rng.uniform(5.0, 9.0))
    u = rng.random(4)
    mni = tpl.mni_coords()
    tissue = (tpl.channel("gm") + tpl.channel("wm")) > 0.8
    ax = np.abs(mni[0])
    side = (mni[0] * hemi) > 0
    if cortical:
        ok = side & (ax > 28) & (ax < 58) & (mni[1] > -62) & (mni[1] < 28) & (mni[2] > -12) & (mni[2] < 48)
        cands = [ok & tissue & (tpl.depth_mm > 3.0), ok & tissue]
    else:
        d = np.sqrt((ax - 24.0) ** 2 + (mni[1] - 2.0) ** 2 + (mni[2] - 6.0) ** 2)
        cands = [side & (d < 8.0) & tissue, side & (d < 12.0) & (tpl.channel("brain") > 0.5)]
    return StrokeSpec(center=_pick_center(u, tpl, cands), rotation=rotation, axes_mm=axes,
                      irregularity=irregularity, noise=noise, dps=float(dps), hemisphere=hemi)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _distance(pts: np.ndarray, center: np.ndarray, rotation: np.ndarray, axes: np.ndarray) -> np.ndarray:
    u = rotation.T @ (pts - center[:, None])
    return np.sqrt(((u / axes[:, None]) ** 2).sum(0))


def _perturbed(d: np.ndarray, noise: FourierNoise, amp: float, pts: np.ndarray) -> np.ndarray:
    return d / np.maximum(1.0 + amp * noise(pts), 0.3)


def tumor_fractions(spec: TumorSpec, pts: np.ndarray) -> dict[str, np.ndarray]:
    """Soft fractions of ncr/net/et (core) and the oedema weight at MNI points (3, N)."""
    r = spec.radius_mm
    w = 0.8 / r  # ~0.8 mm transition
    d0 = _distance(pts, spec.center, spec.rotation, spec.axes_mm)
    d = _perturbed(d0, spec.noise_core, spec.irregularity, pts)
    core = _sigmoid((1.0 - d) / w)
    inner = _sigmoid((spec.r_ncr - d) / w) if spec.r_ncr > 0 else np.zeros_like(d)
    if spec.ring_et:
        et = np.clip(core - inner, 0.0, 1.0)
        ncr, net = inner, np.zeros_like(d)
    else:
        if spec.focal_et is not None:
            ux, uy, uz, rf = spec.focal_et
            c = spec.center + spec.rotation @ (np.array([ux, uy, uz]) * spec.axes_mm)
            df = _perturbed(_distance(pts, c, spec.rotation, spec.axes_mm * rf), spec.noise_edema, 0.15, pts)
            et = np.minimum(_sigmoid((1.0 - df) / (w / rf)), core)
        else:
            et = np.zeros_like(d)
        ncr = np.minimum(inner, core - et)
        net = np.clip(core - et - ncr, 0.0, 1.0)
    de = _perturbed(d0, spec.noise_edema, 1.2 * spec.irregularity, pts)
    edema = np.clip(_sigmoid((spec.r_ed - de) / (1.5 * w)) - core, 0.0, 1.0)
    return {"ncr": ncr, "net": net, "et": et, "ed": edema}


def mass_displacement(pts: np.ndarray, center: np.ndarray, radius_mm: float, mass: float) -> np.ndarray:
    """Where the tissue now at ``pts`` came from (mm offsets): radial push (mass > 0) or pull."""
    rel = pts - center[:, None]
    r2 = (rel**2).sum(0)
    s = 1.3 * radius_mm
    return -mass * np.exp(-r2 / (2.0 * s * s)) * rel


def stroke_course(dps: float) -> dict[str, float]:
    """Appearance of an infarct ``dps`` days after onset.

    swelling: acute mass effect (peaks at ~4 days); ischaemia: fraction of lesion tissue that is
    oedematous/ischaemic (rises over the first two weeks); cavitation: fraction turned into CSF
    (centred at ~45 days, complete after ~1 year); shrink: chronic volume loss that keeps growing
    slowly with log time; vent_mm: ex-vacuo ventricular growth per unit of that loss.
    """
    t = float(np.log10(max(dps, 0.5)))
    swelling = 0.14 * float(np.exp(-((t - 0.6) ** 2) / (2 * 0.35**2)))
    ischaemia = 0.4 + 0.6 * float(_sigmoid(np.array((t - 0.8) / 0.12)))
    cavitation = float(_sigmoid(np.array((t - np.log10(45.0)) / 0.2)))
    shrink = cavitation * (0.12 + 0.06 * max(0.0, t - 2.0))
    return {"swelling": swelling, "ischaemia": ischaemia, "cavitation": cavitation, "shrink": shrink}


def stroke_fractions(spec: StrokeSpec, pts: np.ndarray) -> np.ndarray:
    """Soft lesion extent at MNI points (3, N)."""
    d = _perturbed(_distance(pts, spec.center, spec.rotation, spec.axes_mm), spec.noise, spec.irregularity, pts)
    return _sigmoid((1.0 - d) / (0.8 / spec.radius_mm))
