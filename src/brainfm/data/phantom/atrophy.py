"""Brain shape at one visit: ageing, neurodegeneration and neurodevelopmental differences.

All effects act on the template's tissue maps in template (MNI) space:

* **ventricular growth** moves sampling positions along the ventricle field by ``vent_mm``
  (per hemisphere), which widens the ventricles by about that much at their walls;
* **cortical thinning** turns a fraction of grey matter next to CSF into CSF (sulcal widening);
  negative thinning turns white matter next to grey matter into grey matter (the thicker cortex
  of children);
* **regional effects** are Gaussian blobs around MNI centres with their own GM loss (or gain)
  and a contraction (or swelling) of the tissue towards the centre: medial temporal and
  temporoparietal atrophy for AD, substantia nigra / putamen for PD, frontal and amygdala
  enlargement for ASD;
* ``myelin`` < 1 lowers white-matter contrast (unmyelinated young brains, and again in old age);
* ``wmh`` turns periventricular white matter into hyperintense (oedema-like) tissue in old age.

Every effect is a smooth function of age or disease severity plus an individual deviation, so
labels are learnable but never exactly recoverable from one feature.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

__all__ = ["Region", "Morphology", "AgingTraits", "draw_aging_traits", "aging", "ad_regions", "pd_regions",
           "asd_regions", "AD_VENT_MM", "HIPPOCAMPUS"]

HIPPOCAMPUS: tuple[float, float, float] = (28.0, -22.0, -14.0)  # right; left is x -> -x
AD_VENT_MM = 1.8  # extra ventricular wall growth (mm) per unit AD severity


@dataclass(frozen=True)
class Region:
    """A Gaussian region of tissue change around an MNI centre (mm)."""

    center: tuple[float, float, float]
    sigma: tuple[float, float, float]
    gm_loss: float = 0.0  # > 0: fraction of GM turned into CSF at the centre; < 0: WM -> GM
    shrink: float = 0.0  # > 0: tissue contracts towards the centre (fraction of distance); < 0: swells


@dataclass(frozen=True)
class Morphology:
    """Everything about a brain's shape at one visit that is not a focal lesion."""

    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)  # brain size relative to the template
    vent_mm: tuple[float, float] = (0.0, 0.0)  # ventricular wall growth, left and right
    thinning: float = 0.0  # cortical GM -> CSF next to CSF (fraction); < 0 thickens
    myelin: float = 1.0
    wmh: float = 0.0  # fraction of periventricular white matter that is hyperintense (ageing)
    regions: tuple[Region, ...] = field(default_factory=tuple)

    def plus(self, *, vent_mm: float | tuple[float, float] = 0.0, thinning: float = 0.0,
             regions: tuple[Region, ...] = (), scale: float = 1.0) -> Morphology:
        """This morphology with extra effects added (ventricles and thinning add up)."""
        v = (vent_mm, vent_mm) if np.isscalar(vent_mm) else tuple(vent_mm)
        return replace(self, vent_mm=(self.vent_mm[0] + float(v[0]), self.vent_mm[1] + float(v[1])),
                       thinning=self.thinning + thinning, regions=self.regions + tuple(regions),
                       scale=tuple(s * scale for s in self.scale))


@dataclass(frozen=True)
class AgingTraits:
    """Individual deviations from the average ageing curve (standard-normal draws)."""

    vent_base: float
    vent_rate: float
    thin_base: float
    thin_rate: float
    wmh: float


def draw_aging_traits(rng: np.random.Generator) -> AgingTraits:
    return AgingTraits(*(float(v) for v in rng.standard_normal(5)))


def _vent_curve(age: float) -> float:
    """Mean ventricular wall growth (mm) relative to a 20-40 year old; nonlinear after 60."""
    return (1.0 * max(0.0, age - 25.0) / 35.0 + 2.2 * max(0.0, age - 60.0) ** 2 / 900.0
            - 0.5 * max(0.0, (18.0 - age) / 12.0))


def _thin_curve(age: float) -> float:
    """Mean cortical thinning fraction; negative (thicker cortex) in childhood."""
    return (0.2 * max(0.0, age - 20.0) / 50.0 + 0.45 * max(0.0, age - 60.0) ** 2 / 900.0
            - 0.12 * max(0.0, (20.0 - age) / 14.0))


def _myelin_curve(age: float) -> float:
    """White-matter contrast: rises with myelination in childhood, declines after 50."""
    return 1.0 - 0.35 * float(np.exp(-(age - 4.0) / 5.0)) - 0.12 * max(0.0, age - 50.0) / 40.0


def _wmh_curve(age: float) -> float:
    """Periventricular white-matter hyperintensity load, from the mid-fifties on."""
    return 0.45 * max(0.0, age - 50.0) ** 2 / 1600.0


def aging(age: float, traits: AgingTraits, scale: tuple[float, float, float] = (1.0, 1.0, 1.0),
          strength: float = 1.0) -> Morphology:
    """Healthy brain at ``age`` years for an individual with ``traits``.

    ``strength`` multiplies the mean ventricle growth and cortical thinning curves (the
    generator's ``aging_scale``): coarse demo grids need a larger effect to stay visible.
    """
    vent = 0.7 * traits.vent_base + strength * _vent_curve(age) * float(np.exp(0.3 * traits.vent_rate))
    thin = 0.03 * traits.thin_base + strength * _thin_curve(age) * float(np.exp(0.25 * traits.thin_rate))
    wmh = min(_wmh_curve(age) * float(np.exp(0.5 * traits.wmh)), 0.8)
    return Morphology(scale=scale, vent_mm=(vent, vent), thinning=thin, myelin=min(_myelin_curve(age), 1.0),
                      wmh=wmh)


def _bilateral(center: tuple[float, float, float], sigma: tuple[float, float, float], gm_loss: float = 0.0,
               shrink: float = 0.0) -> tuple[Region, Region]:
    x, y, z = center
    return (Region((abs(x), y, z), sigma, gm_loss, shrink), Region((-abs(x), y, z), sigma, gm_loss, shrink))


def ad_regions(severity: float) -> tuple[Region, ...]:
    """AD-like atrophy: medial temporal lobe first and most, then temporoparietal cortex."""
    s = max(float(severity), 0.0)
    if s == 0:
        return ()
    return (
        *_bilateral(HIPPOCAMPUS, (6.0, 11.0, 6.0), gm_loss=min(0.5 * s, 0.85), shrink=min(0.12 * s, 0.3)),
        *_bilateral((24.0, -4.0, -20.0), (5.0, 5.0, 5.0), gm_loss=min(0.35 * s, 0.8)),  # amygdala
        *_bilateral((24.0, -10.0, -32.0), (6.0, 8.0, 5.0), gm_loss=min(0.35 * s, 0.8)),  # entorhinal
        *_bilateral((56.0, -30.0, -8.0), (10.0, 18.0, 10.0), gm_loss=min(0.2 * s, 0.6)),  # lateral temporal
        *_bilateral((44.0, -58.0, 38.0), (14.0, 14.0, 14.0), gm_loss=min(0.2 * s, 0.6)),  # inferior parietal
        *_bilateral((6.0, -56.0, 32.0), (8.0, 12.0, 10.0), gm_loss=min(0.2 * s, 0.6)),  # precuneus / PCC
    )


def pd_regions(severity: float) -> tuple[Region, ...]:
    """PD-like change: substantia nigra and midbrain, posterior putamen (subtle on T1)."""
    s = max(float(severity), 0.0)
    if s == 0:
        return ()
    return (
        *_bilateral((11.0, -17.0, -10.0), (4.0, 5.0, 4.0), gm_loss=min(0.5 * s, 0.85), shrink=min(0.06 * s, 0.2)),
        Region((0.0, -20.0, -12.0), (8.0, 6.0, 6.0), shrink=min(0.08 * s, 0.25)),  # midbrain
        *_bilateral((26.0, -4.0, 2.0), (6.0, 9.0, 6.0), gm_loss=min(0.15 * s, 0.5)),  # posterior putamen
        *_bilateral((13.0, 12.0, 10.0), (4.0, 5.0, 4.0), gm_loss=min(0.08 * s, 0.5)),  # caudate
    )


def asd_regions(severity: float, age: float) -> tuple[Region, ...]:
    """ASD-like differences: thicker frontal/temporal cortex, larger amygdala in childhood."""
    s = max(float(severity), 0.0)
    if s == 0:
        return ()
    young = 1.0 if age < 12 else max(0.4, 1.0 - (age - 12.0) / 30.0)
    return (
        *_bilateral((32.0, 38.0, 22.0), (16.0, 16.0, 16.0), gm_loss=-0.10 * s * young),
        *_bilateral((52.0, -20.0, -6.0), (12.0, 14.0, 10.0), gm_loss=-0.06 * s * young),
        *_bilateral((22.0, -4.0, -18.0), (5.0, 5.0, 5.0), shrink=-0.08 * s * young),
    )
