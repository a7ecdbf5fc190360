"""Render one visit of one phantom subject: warp the template, add pathology, synthesise contrasts.

For every output voxel we follow its position back to the template through

1. the visit's head pose (a small rigid motion: each visit is positioned anew),
2. the subject's anatomy (brain size and an elastic B-spline warp, fixed across visits),
3. pathology displacements in template space (ventricular growth, regional contraction, the mass
   effect of a tumour or the swelling/shrinkage of an infarct),

and read the tissue maps there with one trilinear pass. Tissue-level changes (cortical thinning,
regional grey-matter loss, tumour sub-regions, ischaemia and cavitation) then act on the sampled
fractions, and each modality is synthesised from the same fractions with the site's protocol.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from brainfm.data.phantom.atrophy import Region
from brainfm.data.phantom.cohorts import ANATOMY, VISIT, SubjectSpec, stream
from brainfm.data.phantom.contrast import CLASSES, MODALITIES, site_contrast, synthesize
from brainfm.data.phantom.deform import rotation_matrix, sample_grid, smooth_field
from brainfm.data.phantom.lesions import BRATS_LABELS, mass_displacement, stroke_course, stroke_fractions, \
    tumor_fractions
from brainfm.data.phantom.template import CHANNELS, Template

__all__ = ["Rendered", "render_session", "BRAIN_CENTER_MNI"]

BRAIN_CENTER_MNI = np.array([0.0, -18.0, 18.0])  # rotation/scaling centre, roughly the brain's middle
ELASTIC_SPACING_MM = 28.0
ELASTIC_STD_MM = 2.2
TEXTURE_STD = 0.035
_C = {name: i for i, name in enumerate(CLASSES)}


@dataclass
class Rendered:
    """One visit: images per modality (float32), the label map (uint8 or None), class fractions."""

    images: dict[str, np.ndarray]
    mask: np.ndarray | None
    fractions: np.ndarray  # (len(CLASSES), X, Y, Z)
    ventricles: np.ndarray  # (X, Y, Z) ventricular CSF fraction (ground truth for checks)
    affine: np.ndarray


def _gauss(pts: np.ndarray, r: Region) -> tuple[np.ndarray, np.ndarray]:
    """Indices of points within 3 sigma of the region and their Gaussian weights."""
    c = np.asarray(r.center, dtype=np.float32)[:, None]
    s = np.asarray(r.sigma, dtype=np.float32)[:, None]
    near = np.ones(pts.shape[1], dtype=bool)
    for a in range(3):
        near &= np.abs(pts[a] - c[a]) < 3.0 * s[a]
    idx = np.flatnonzero(near)
    q = ((pts[:, idx] - c) / s) ** 2
    return idx, np.exp(-0.5 * q.sum(0))


def _box(pts: np.ndarray, center: np.ndarray, radius: float) -> np.ndarray:
    """Indices of points within ``radius`` of ``center`` along every axis."""
    c = center.astype(np.float32)
    near = np.ones(pts.shape[1], dtype=bool)
    for a in range(3):
        near &= np.abs(pts[a] - c[a]) < radius
    return np.flatnonzero(near)


def _to_vox(tpl: Template, pts_mm: np.ndarray) -> np.ndarray:
    inv = np.linalg.inv(tpl.affine)
    return (inv[:3, :3].astype(np.float32) @ pts_mm + inv[:3, 3:4].astype(np.float32)).astype(np.float32)


def render_session(spec: SubjectSpec, session: int, tpl: Template, modalities: tuple[str, ...] | None = None
                   ) -> Rendered:
    """Render visit ``session`` of ``spec`` on the template grid (deterministic in the spec)."""
    sess = spec.sessions[session]
    morph = sess.morph
    modalities = spec.modalities if modalities is None else modalities
    shape = tpl.shape
    n = int(np.prod(shape))
    vs = tpl.voxel_size
    # --- subject-level draws (identical for every visit)
    rng_a = spec.rng(ANATOMY)
    elastic = smooth_field(rng_a, shape, ELASTIC_SPACING_MM / vs, 3, ELASTIC_STD_MM)
    shear = rng_a.normal(0.0, 0.015, 3)
    subject_gain = {m: np.exp(rng_a.normal(0.0, 0.03, len(CLASSES))).astype(np.float32) for m in MODALITIES}
    texture = ndi.gaussian_filter(rng_a.standard_normal(shape, dtype=np.float32), 0.8)
    texture *= np.float32(TEXTURE_STD / max(float(texture.std()), 1e-6))
    # --- visit pose
    rng_v = spec.rng(VISIT, session)
    rot = rotation_matrix(np.deg2rad(np.clip(rng_v.normal(0.0, 2.5, 3), -7.0, 7.0)))
    trans = np.clip(rng_v.normal(0.0, 2.5, 3), -6.0, 6.0)
    c0 = BRAIN_CENTER_MNI.astype(np.float32)[:, None]
    p = tpl.mni_grid.reshape(3, n)
    x1 = (rot.astype(np.float32) @ (p - c0) + c0 + trans.astype(np.float32)[:, None]).astype(np.float32)
    # --- subject anatomy: brain size (template coords = S^-1 (x - c0)) plus elastic warp
    s = np.diag(morph.scale) + np.array([[0, shear[0], shear[1]], [0, 0, shear[2]], [0, 0, 0]])
    e = sample_grid(elastic, _to_vox(tpl, x1), padding="border").reshape(3, n)
    x2 = (np.linalg.inv(s).astype(np.float32) @ (x1 - c0) + c0 + e).astype(np.float32)
    del e, x1
    # --- pathology displacements in template space
    x3 = x2.copy()
    al, ar = morph.vent_mm
    if abs(al) > 1e-6 or abs(ar) > 1e-6:
        vf = np.float32(al) * tpl.vfield[:3] + np.float32(ar) * tpl.vfield[3:]
        x3 += sample_grid(vf, _to_vox(tpl, x2), box=tpl.vfield_box).reshape(3, n)
    for r in morph.regions:
        if r.shrink != 0.0:
            idx, g = _gauss(x2, r)
            x3[:, idx] += np.float32(r.shrink) * g * (x2[:, idx] - np.asarray(r.center, np.float32)[:, None])
    tumor_f = stroke_l = None
    if spec.tumor is not None:
        t = spec.tumor
        reach = t.radius_mm * max(t.r_ed, 1.0) * 1.6 + 6.0
        les_idx = _box(x2, t.center, max(reach, 3.5 * 1.3 * t.radius_mm))
        pts = x2[:, les_idx].astype(np.float64)
        x3[:, les_idx] += mass_displacement(pts, t.center, t.radius_mm, t.mass).astype(np.float32)
        tumor_f = tumor_fractions(t, pts)
    if spec.stroke is not None:
        st = spec.stroke
        course = stroke_course(st.dps)
        les_idx = _box(x2, st.center, st.radius_mm * 2.0 + 6.0)
        les_idx_mass = _box(x2, st.center, 3.5 * 1.3 * st.radius_mm)
        mass = course["swelling"] - course["shrink"]
        pts_m = x2[:, les_idx_mass].astype(np.float64)
        x3[:, les_idx_mass] += mass_displacement(pts_m, st.center, st.radius_mm, mass).astype(np.float32)
        stroke_l = stroke_fractions(st, x2[:, les_idx].astype(np.float64)).astype(np.float32)
    # --- read the template once
    wanted = ("gm", "wm", "csf", "brain", "csf_near", "gm_near", "vent", "vent_near")
    maps = sample_grid(tpl.maps[[CHANNELS.index(k) for k in wanted]], _to_vox(tpl, x3),
                       box=tpl.maps_box).reshape(len(wanted), n)
    gm, wm, csf, brain_p, csf_near, gm_near, vent, vent_near = maps
    brain = (brain_p > 0.5).astype(np.float32)
    total = gm + wm + csf
    norm = np.where(total > 1e-3, brain / np.maximum(total, 1e-3), 0.0).astype(np.float32)
    gm *= norm
    wm *= norm
    csf *= norm
    csf = np.where((total <= 1e-3) & (brain > 0), 1.0, csf).astype(np.float32)
    # --- cortical thinning / thickening and regional GM change (at the tissue's template position)
    thin = np.float32(morph.thinning) * csf_near
    for r in morph.regions:
        if r.gm_loss != 0.0:
            idx, g = _gauss(x3, r)
            thin[idx] += np.float32(r.gm_loss) * g
    loss = np.clip(thin, 0.0, 0.9)
    d = gm * loss
    gm -= d
    csf += d
    gain = np.clip(-thin, 0.0, 0.6) * gm_near
    d = wm * gain
    wm -= d
    gm += d
    fr = np.zeros((len(CLASSES), n), dtype=np.float32)
    if morph.wmh > 0:  # periventricular white-matter hyperintensities (oedema-like signal)
        d = wm * np.clip(np.float32(morph.wmh) * vent_near**1.5, 0.0, 0.9)
        wm -= d
        fr[_C["ed"]] += d
    label = None
    # --- focal lesions
    if tumor_f is not None:
        core = np.clip(tumor_f["ncr"] + tumor_f["net"] + tumor_f["et"], 0.0, 1.0).astype(np.float32)
        b = brain[les_idx]
        keep = 1.0 - core
        for arr in (gm, wm, csf):
            arr[les_idx] *= keep
        ed = tumor_f["ed"].astype(np.float32)
        tissue = gm[les_idx] + wm[les_idx]
        fr[_C["ed"], les_idx] = fr[_C["ed"], les_idx] * keep + ed * tissue
        gm[les_idx] *= 1.0 - ed
        wm[les_idx] *= 1.0 - ed
        for k in ("ncr", "net", "et"):
            fr[_C[k], les_idx] = tumor_f[k].astype(np.float32) * b
        label = np.zeros(n, dtype=np.uint8)
        inside = b > 0
        core_lab = (core > 0.5) & inside
        et_lab = core_lab & (tumor_f["et"] >= np.maximum(tumor_f["ncr"], tumor_f["net"]))
        ed_lab = ~core_lab & inside & (ed * tissue > 0.4)
        sub = np.zeros(len(les_idx), dtype=np.uint8)
        sub[ed_lab] = BRATS_LABELS["ED"]
        sub[core_lab] = BRATS_LABELS["NCR"]
        sub[et_lab] = BRATS_LABELS["ET"]
        label[les_idx] = sub
    if stroke_l is not None:
        ed = fr[_C["ed"], les_idx]  # ageing white-matter hyperintensity is tissue too
        tissue = gm[les_idx] + wm[les_idx] + ed
        lesion = stroke_l * brain[les_idx]
        w_isch = lesion * np.float32((1.0 - course["cavitation"]) * course["ischaemia"])
        w_cav = lesion * np.float32(course["cavitation"])
        fr[_C["isch"], les_idx] = w_isch * tissue
        csf[les_idx] += w_cav * tissue
        spared = 1.0 - w_isch - w_cav
        gm[les_idx] *= spared
        wm[les_idx] *= spared
        fr[_C["ed"], les_idx] = ed * spared
        label = np.zeros(n, dtype=np.uint8)
        label[les_idx] = ((lesion > 0.5) & (tissue > 0.3)).astype(np.uint8)
    fr[_C["gm"]], fr[_C["wm"]], fr[_C["csf"]] = gm, wm, csf
    fr = fr.reshape(len(CLASSES), *shape)
    brain = brain.reshape(shape)
    images = {}
    for m in modalities:
        mi = MODALITIES.index(m)
        site = site_contrast(stream(spec.base_seed, f"{spec.dataset}/site", spec.site_index, mi), m)
        rng_m = spec.rng(VISIT, session, 100 + mi)
        images[m] = synthesize(fr, m, site, subject_gain[m], brain, vs, rng_m, myelin=morph.myelin,
                               texture=texture)
    return Rendered(images=images, mask=None if label is None else label.reshape(shape), fractions=fr,
                    ventricles=(vent * norm).reshape(shape), affine=tpl.affine.copy())
