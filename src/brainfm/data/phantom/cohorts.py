"""The phantom datasets: who the subjects are, what their labels are, and how labels shape anatomy.

Each subject is drawn independently from its own seed ``(base_seed, dataset, subject_index)``, so
a cohort does not depend on generation order or parallelism, and growing ``n_subjects`` keeps the
first subjects unchanged. Labels are drawn first; anatomy, lesions and acquisition follow from
them (plus individual variation), which is where the learnable signal comes from:

=================  ===========================================================================
phantom_brainage   age ~ U(6, 90): ventricles, sulci, cortical thickness, myelination
phantom_adni       CN/MCI/AD (age 55-90, visits sc/m06/m12/m24): medial temporal and
                   temporoparietal atrophy, ventricles, progressing with individual rates
phantom_oasis      demented 0/1: AD-like atrophy in older subjects
phantom_abide      asd 0/1 (age 7-40): small frontal/temporal/amygdala and size differences
phantom_ppmi       pd 0/1 (~4:1): substantia nigra / midbrain / putamen change, subtle
phantom_tumor      glioma with BraTS labels; idh drives phenotype; survival from burden + age
phantom_stroke     MCA-territory infarct whose appearance follows days post stroke (dps)
phantom_pretrain   unlabelled mix of all of the above (distinct subject ids)
=================  ===========================================================================
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from brainfm.data.phantom import atrophy as atr
from brainfm.data.phantom.contrast import MODALITIES
from brainfm.data.phantom.lesions import BRATS_LABELS, StrokeSpec, TumorSpec, draw_stroke, draw_tumor, stroke_course
from brainfm.data.phantom.template import Template
from brainfm.errors import ConfigError

__all__ = ["PhantomDataset", "PHANTOM_DATASETS", "SessionSpec", "SubjectSpec", "sample_subject", "stream",
           "Options", "parse_options", "ADNI_VISITS"]

# random streams of one subject (independent so adding a draw to one never shifts another)
LABELS, ANATOMY, LESION, VISIT = 0, 1, 2, 3  # sites use stream(seed, f"{dataset}/site", k, modality)
ADNI_VISITS: tuple[tuple[str, float], ...] = (("sc", 0.0), ("m06", 6.0), ("m12", 12.0), ("m24", 24.0))
DPS_DAYS = (1.0, 3000.0)  # default range of days post stroke: acute to many years chronic


def _name_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def stream(base_seed: int, dataset: str, *keys: int) -> np.random.Generator:
    """An independent generator for ``(base_seed, dataset, *keys)``."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(base_seed), _name_key(dataset),
                                                                        *(int(k) for k in keys)])))


@dataclass(frozen=True)
class PhantomDataset:
    """What a phantom dataset contains (for configs, docs and the manifest)."""

    name: str
    description: str
    modalities: tuple[str, ...]
    label_columns: tuple[str, ...]
    prefix: str  # subject ids are sub-<prefix><NNNN>: never shared between datasets
    split: str  # "stratified" (fixed train/test), "cv" (split "" for the task) or "all_train"
    stratify: str | None = None  # label the fixed split is stratified on
    has_mask: bool = False
    segmentation: Mapping[str, Any] | None = None  # label map of the masks (registry ``segmentation`` form)


#: BraTS 2023 coding of the phantom gliomas (lesions.BRATS_LABELS) and the regions evaluated on it
TUMOR_SEGMENTATION: Mapping[str, Any] = {
    "labels": [{"value": BRATS_LABELS["NCR"], "name": "NCR", "description": "necrotic core"},
               {"value": BRATS_LABELS["ED"], "name": "ED", "description": "oedema"},
               {"value": BRATS_LABELS["ET"], "name": "ET", "description": "enhancing tumour"}],
    "regions": [{"name": "WT", "labels": [BRATS_LABELS[k] for k in ("NCR", "ED", "ET")], "description": "whole tumour"},
                {"name": "TC", "labels": [BRATS_LABELS[k] for k in ("NCR", "ET")], "description": "tumour core"},
                {"name": "ET", "labels": [BRATS_LABELS["ET"]], "description": "enhancing tumour"}],
}


PHANTOM_DATASETS: dict[str, PhantomDataset] = {d.name: d for d in (
    PhantomDataset("phantom_pretrain", "unlabelled pretraining mix: healthy lifespan, atrophy, gliomas, strokes; "
                   "modalities vary per subject", MODALITIES, ("age", "sex", "condition"), "PRE", "all_train"),
    PhantomDataset("phantom_brainage", "healthy lifespan cohort, age ~ U(6, 90)", ("T1",), ("age", "sex"), "BAGE",
                   "stratified", "age"),
    PhantomDataset("phantom_adni", "CN/MCI/AD staging, age 55-90, longitudinal visits sc/m06/m12/m24 "
                   "(subject-disjoint CV: split '')", ("T1",), ("diagnosis", "age", "sex"), "ADNI", "cv",
                   "diagnosis"),
    PhantomDataset("phantom_oasis", "dementia (0/1) in older adults, AD-like atrophy", ("T1",),
                   ("demented", "age", "sex"), "OAS", "stratified", "demented"),
    PhantomDataset("phantom_abide", "autism (0/1), age 7-40, subtle size/regional differences", ("T1",),
                   ("asd", "age", "sex"), "ABIDE", "stratified", "asd"),
    PhantomDataset("phantom_ppmi", "Parkinson's disease (0/1, about 4:1), subtle nigral/striatal change",
                   ("T1",), ("pd", "age", "sex"), "PPMI", "stratified", "pd"),
    PhantomDataset("phantom_tumor", "glioma with BraTS 2023 labels (1 NCR, 2 ED, 3 ET), IDH-like status, "
                   "survival", MODALITIES, ("survival_days", "event", "idh", "age", "sex"), "GLI", "stratified",
                   "idh", has_mask=True, segmentation=TUMOR_SEGMENTATION),
    PhantomDataset("phantom_stroke", "ischaemic stroke (T1 + lesion mask), days post stroke", ("T1",),
                   ("dps", "age", "sex"), "STR", "stratified", "dps", has_mask=True),
)}


@dataclass(frozen=True)
class Options:
    """Generator options a config may override (``generate_dataset(..., **overrides)``)."""

    modalities: tuple[str, ...] | None = None  # restrict to these modalities
    effect_scale: float = 1.0  # multiplies disease effect sizes (difficulty knob); gliomas: the hazard's spread
    aging_scale: float = 1.0  # multiplies age-related ventricle growth and cortical thinning
    pd_fraction: float = 0.8
    visits: tuple[str, ...] = tuple(v for v, _ in ADNI_VISITS)
    visit_prob: float = 0.85  # chance that a follow-up visit exists
    mix: tuple[float, float, float, float] = (0.4, 0.2, 0.25, 0.15)  # pretrain: healthy/atrophy/tumor/stroke
    dps_days: tuple[float, float] = DPS_DAYS  # strokes: days post stroke, log-uniform over this range

    def fingerprint(self) -> dict[str, Any]:
        return {"modalities": list(self.modalities) if self.modalities else None, "effect_scale": self.effect_scale,
                **({"aging_scale": self.aging_scale} if self.aging_scale != 1.0 else {}),
                "pd_fraction": self.pd_fraction, "visits": list(self.visits), "visit_prob": self.visit_prob,
                "mix": list(self.mix),
                **({"dps_days": list(self.dps_days)} if self.dps_days != DPS_DAYS else {})}


def parse_options(name: str, overrides: dict[str, Any]) -> Options:
    """Validate generator overrides; unknown keys and bad values are :class:`ConfigError`."""
    info = PHANTOM_DATASETS[name]
    known = {"modalities", "effect_scale", "aging_scale", "pd_fraction", "visits", "visit_prob", "mix", "dps_days"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"{name}: unknown phantom option(s) {unknown}; known: {sorted(known)}")
    kw: dict[str, Any] = {}
    if overrides.get("modalities") is not None:
        mods = tuple(str(m) for m in overrides["modalities"])
        bad = [m for m in mods if m not in info.modalities]
        if bad or not mods:
            raise ConfigError(f"{name}: modalities {list(mods)} not a non-empty subset of {list(info.modalities)}")
        kw["modalities"] = tuple(m for m in info.modalities if m in mods)
    if "effect_scale" in overrides:
        v = float(overrides["effect_scale"])
        if not 0 <= v <= 5:
            raise ConfigError(f"{name}: effect_scale must be in [0, 5], got {v}")
        kw["effect_scale"] = v
    if "aging_scale" in overrides:
        v = float(overrides["aging_scale"])
        if not 0 <= v <= 5:
            raise ConfigError(f"{name}: aging_scale must be in [0, 5], got {v}")
        kw["aging_scale"] = v
    if "pd_fraction" in overrides:
        v = float(overrides["pd_fraction"])
        if not 0 < v < 1:
            raise ConfigError(f"{name}: pd_fraction must be in (0, 1), got {v}")
        kw["pd_fraction"] = v
    if "visits" in overrides:
        codes = dict(ADNI_VISITS)
        visits = tuple(str(v) for v in overrides["visits"])
        if not visits or visits[0] != "sc" or any(v not in codes for v in visits) or len(set(visits)) != len(visits):
            raise ConfigError(f"{name}: visits must start with 'sc' and be distinct codes from {list(codes)}")
        kw["visits"] = visits
    if "visit_prob" in overrides:
        v = float(overrides["visit_prob"])
        if not 0 <= v <= 1:
            raise ConfigError(f"{name}: visit_prob must be in [0, 1], got {v}")
        kw["visit_prob"] = v
    if "mix" in overrides:
        m = overrides["mix"]
        if isinstance(m, dict):
            m = [m.get(k, 0.0) for k in ("healthy", "atrophy", "tumor", "stroke")]
        mix = np.asarray(m, dtype=float)
        if mix.shape != (4,) or (mix < 0).any() or mix.sum() <= 0:
            raise ConfigError(f"{name}: mix must give 4 non-negative weights (healthy, atrophy, tumor, stroke)")
        kw["mix"] = tuple(float(x) for x in mix / mix.sum())
    if "dps_days" in overrides:
        r = overrides["dps_days"]
        lo, hi = (float(r[0]), float(r[1])) if isinstance(r, (list, tuple)) and len(r) == 2 else (0.0, 0.0)
        if not 0 < lo < hi:
            raise ConfigError(f"{name}: dps_days must be [low, high] days with 0 < low < high, got {r!r}")
        kw["dps_days"] = (lo, hi)
    return Options(**kw)


@dataclass(frozen=True)
class SessionSpec:
    """One visit: its name (BIDS ``ses-`` label), time since baseline, age and brain shape."""

    name: str
    months: float
    age: float
    morph: atr.Morphology


@dataclass(frozen=True)
class SubjectSpec:
    """Everything needed to render a subject, and its labels; no voxels."""

    dataset: str
    index: int
    base_seed: int
    subject: str
    site_index: int
    site: str
    sex: str
    modalities: tuple[str, ...]
    sessions: tuple[SessionSpec, ...]
    labels: dict[str, Any] = field(default_factory=dict)
    condition: str = "healthy"
    tumor: TumorSpec | None = None
    stroke: StrokeSpec | None = None

    def rng(self, *keys: int) -> np.random.Generator:
        return stream(self.base_seed, self.dataset, self.index, *keys)


# ----------------------------------------------------------------------------- building blocks
def _sex(rng: np.random.Generator, p_male: float = 0.5) -> str:
    return "M" if rng.random() < p_male else "F"


def _brain_scale(rng: np.random.Generator, sex: str, age: float) -> tuple[float, float, float]:
    """Brain size relative to the template: sex, childhood growth and individual variation."""
    g = float(np.exp(rng.normal(0.0, 0.03))) * (1.025 if sex == "M" else 0.975)
    if age < 12:
        g *= 0.95 + 0.05 * (age - 6.0) / 6.0
    aniso = np.exp(rng.normal(0.0, 0.015, 3))
    return tuple(float(g * a) for a in aniso)  # type: ignore[return-value]


def _clipped_normal(rng: np.random.Generator, mean: float, sd: float, lo: float, hi: float) -> float:
    return float(np.clip(rng.normal(mean, sd), lo, hi))


def _single(age: float, morph: atr.Morphology) -> tuple[SessionSpec, ...]:
    return (SessionSpec("ses-01", 0.0, round(float(age), 2), morph),)


def _ad_morph(base: atr.Morphology, severity: float) -> atr.Morphology:
    return base.plus(vent_mm=atr.AD_VENT_MM * severity, thinning=0.06 * severity, regions=atr.ad_regions(severity))


@dataclass
class _Ctx:
    rng: np.random.Generator  # label stream
    lesion_rng: np.random.Generator
    tpl: Template
    opts: Options


# ----------------------------------------------------------------------------- datasets
def _healthy(c: _Ctx, age: float | None = None) -> dict[str, Any]:
    age = float(c.rng.uniform(6.0, 90.0)) if age is None else age
    sex = _sex(c.rng)
    morph = atr.aging(age, atr.draw_aging_traits(c.rng), _brain_scale(c.rng, sex, age), c.opts.aging_scale)
    return {"sex": sex, "sessions": _single(age, morph), "labels": {}, "condition": "healthy"}


def _brainage(c: _Ctx) -> dict[str, Any]:
    return _healthy(c)


def _adni(c: _Ctx) -> dict[str, Any]:
    es = c.opts.effect_scale
    dx = ("CN", "MCI", "AD")[int(c.rng.choice(3, p=[0.34, 0.45, 0.21]))]
    age0 = _clipped_normal(c.rng, {"CN": 73.5, "MCI": 72.5, "AD": 75.0}[dx], 6.5, 55.0, 88.0)
    sex = _sex(c.rng, 0.52)
    traits = atr.draw_aging_traits(c.rng)
    scale = _brain_scale(c.rng, sex, age0)
    if dx == "CN":  # a minority of CN carry preclinical pathology
        sev0 = abs(c.rng.normal(0.0, 0.08)) + (float(c.rng.uniform(0.0, 0.25)) if c.rng.random() < 0.15 else 0.0)
    elif dx == "MCI":
        sev0 = float(np.clip(c.rng.normal(0.38, 0.18), 0.02, None))
    else:
        sev0 = float(np.clip(c.rng.normal(0.8, 0.25), 0.3, None))
    rate = {"CN": 0.01, "MCI": 0.07, "AD": 0.13}[dx] * float(np.exp(c.rng.normal(0.0, 0.4)))
    present = c.rng.random(len(ADNI_VISITS)) < c.opts.visit_prob
    months = dict(ADNI_VISITS)
    sessions = []
    for k, code in enumerate(code for code, _ in ADNI_VISITS):
        if code not in c.opts.visits or (k > 0 and not present[k]):
            continue
        m = months[code]
        age = age0 + m / 12.0
        sev = es * (sev0 + rate * m / 12.0)
        sessions.append(SessionSpec(f"ses-{code}", m, round(age, 2), _ad_morph(atr.aging(age, traits, scale, c.opts.aging_scale), sev)))
    return {"sex": sex, "sessions": tuple(sessions), "labels": {"diagnosis": dx}, "condition": dx}


def _oasis(c: _Ctx) -> dict[str, Any]:
    demented = int(c.rng.random() < 0.45)
    age = (_clipped_normal(c.rng, 77.0, 7.0, 60.0, 96.0) if demented else _clipped_normal(c.rng, 72.0, 9.0, 55.0, 96.0))
    sex = _sex(c.rng, 0.42)
    traits = atr.draw_aging_traits(c.rng)
    scale = _brain_scale(c.rng, sex, age)
    sev = float(np.clip(c.rng.normal(0.55, 0.25), 0.15, None)) if demented else abs(c.rng.normal(0.0, 0.08))
    morph = _ad_morph(atr.aging(age, traits, scale, c.opts.aging_scale), c.opts.effect_scale * sev)
    return {"sex": sex, "sessions": _single(age, morph), "labels": {"demented": demented},
            "condition": "demented" if demented else "healthy"}


def _abide(c: _Ctx) -> dict[str, Any]:
    asd = int(c.rng.random() < 0.5)
    age = 7.0 + 33.0 * float(c.rng.beta(1.6, 3.2))
    sex = _sex(c.rng, 0.87 if asd else 0.80)
    traits = atr.draw_aging_traits(c.rng)
    scale = _brain_scale(c.rng, sex, age)
    sev = c.opts.effect_scale * (float(np.clip(c.rng.normal(0.8, 0.4), 0.1, None)) if asd else 0.0)
    young = 1.0 if age < 12 else max(0.4, 1.0 - (age - 12.0) / 30.0)
    morph = atr.aging(age, traits, scale, c.opts.aging_scale).plus(vent_mm=0.4 * sev, regions=atr.asd_regions(sev, age),
                                                scale=1.0 + 0.01 * sev * young)
    return {"sex": sex, "sessions": _single(age, morph), "labels": {"asd": asd},
            "condition": "asd" if asd else "healthy"}


def _ppmi(c: _Ctx) -> dict[str, Any]:
    pd = int(c.rng.random() < c.opts.pd_fraction)
    age = _clipped_normal(c.rng, 62.0, 9.0, 45.0, 82.0) if pd else _clipped_normal(c.rng, 60.0, 10.0, 40.0, 82.0)
    sex = _sex(c.rng, 0.63 if pd else 0.55)
    traits = atr.draw_aging_traits(c.rng)
    scale = _brain_scale(c.rng, sex, age)
    sev = c.opts.effect_scale * (float(np.clip(c.rng.normal(1.0, 0.5), 0.1, None)) if pd else 0.0)
    morph = atr.aging(age, traits, scale, c.opts.aging_scale).plus(vent_mm=0.3 * sev, regions=atr.pd_regions(sev))
    return {"sex": sex, "sessions": _single(age, morph), "labels": {"pd": pd}, "condition": "pd" if pd else "healthy"}


ETA_MEAN = 1.3  # mean log hazard ratio of the glioma cohort (sd 1.33; 400 subjects, seed 0)


def survival_time(rng: np.random.Generator, tumor: TumorSpec, age: float,
                  effect_scale: float = 1.0) -> tuple[float, int]:
    """Weibull proportional-hazards survival: burden, necrosis, enhancement, age and IDH raise hazard.

    ``effect_scale`` stretches the log hazard ratio about the cohort's mean (0: every glioma has
    the same hazard; above 1: risk factors matter more against the Weibull noise, with the median
    survival about unchanged). Administrative censoring uniform over 150-2400 days. Returns
    (days, event).
    """
    v = tumor.nominal_volumes_ml()
    eta = (0.65 * np.log(v["wt"] / 60.0) + 1.0 * v["ncr"] / v["tc"] + 0.6 * v["et"] / v["tc"]
           + 0.35 * (age - 60.0) / 10.0 + (0.0 if tumor.idh_mutant else 0.6))
    if effect_scale != 1.0:  # (not applied at 1: keeps the default cohort bit for bit)
        eta = ETA_MEAN + effect_scale * (eta - ETA_MEAN)
    shape, scale = 1.4, 2500.0
    t = scale * (-np.log(rng.random()) / np.exp(eta)) ** (1.0 / shape)
    censor = rng.uniform(150.0, 2400.0)
    return float(max(1.0, round(min(t, censor)))), int(t <= censor)


def _tumor(c: _Ctx) -> dict[str, Any]:
    idh = int(c.rng.random() < 0.22)  # 1 = non-wildtype (mutant-like)
    age = _clipped_normal(c.rng, 40.0, 11.0, 20.0, 75.0) if idh else _clipped_normal(c.rng, 63.0, 10.0, 30.0, 88.0)
    sex = _sex(c.rng, 0.58)
    traits = atr.draw_aging_traits(c.rng)
    scale = _brain_scale(c.rng, sex, age)
    tumor = draw_tumor(c.lesion_rng, c.tpl, bool(idh))
    days, event = survival_time(c.rng, tumor, age, c.opts.effect_scale)
    return {"sex": sex, "sessions": _single(age, atr.aging(age, traits, scale, c.opts.aging_scale)), "tumor": tumor,
            "labels": {"survival_days": days, "event": event, "idh": idh}, "condition": "tumor"}


def _stroke_morph(base: atr.Morphology, stroke: StrokeSpec) -> atr.Morphology:
    course = stroke_course(stroke.dps)
    ex_vacuo = 2.5 * course["shrink"] / 0.12 * (stroke.nominal_volume_ml() / 15.0) ** (1.0 / 3.0)
    vent = (ex_vacuo, 0.0) if stroke.hemisphere < 0 else (0.0, ex_vacuo)
    return base.plus(vent_mm=vent)


def _stroke(c: _Ctx) -> dict[str, Any]:
    lo, hi = c.opts.dps_days
    dps = float(np.exp(c.rng.uniform(np.log(lo), np.log(hi))))
    age = _clipped_normal(c.rng, 63.0, 12.0, 30.0, 90.0)
    sex = _sex(c.rng, 0.6)
    traits = atr.draw_aging_traits(c.rng)
    scale = _brain_scale(c.rng, sex, age)
    stroke = draw_stroke(c.lesion_rng, c.tpl, dps)
    morph = _stroke_morph(atr.aging(age, traits, scale, c.opts.aging_scale), stroke)
    return {"sex": sex, "sessions": _single(age, morph), "stroke": stroke, "labels": {"dps": round(dps, 2)},
            "condition": "stroke"}


def _pick_modalities(rng: np.random.Generator, probs: dict[str, float]) -> tuple[str, ...]:
    u = rng.random(len(MODALITIES))  # always four draws, whatever the probabilities
    return tuple(m for m, x in zip(MODALITIES, u) if x < probs.get(m, 0.0))


def _pretrain(c: _Ctx) -> dict[str, Any]:
    kind = ("healthy", "atrophy", "tumor", "stroke")[int(c.rng.choice(4, p=list(c.opts.mix)))]
    if kind == "healthy":
        out = _healthy(c)
        mods = _pick_modalities(c.rng, {"T1": 1.0, "T1c": 0.1, "T2": 0.9, "FLAIR": 0.5})
    elif kind == "atrophy":
        age = float(c.rng.uniform(60.0, 92.0))
        out = _healthy(c, age)
        sev = c.opts.effect_scale * float(c.rng.uniform(0.2, 1.3))
        out["sessions"] = _single(age, _ad_morph(out["sessions"][0].morph, sev))
        out["condition"] = "atrophy"
        mods = _pick_modalities(c.rng, {"T1": 1.0, "T2": 0.4, "FLAIR": 0.7})
    elif kind == "tumor":
        out = _tumor(c)
        out["labels"] = {}
        mods = MODALITIES
    else:
        out = _stroke(c)
        out["labels"] = {}
        mods = _pick_modalities(c.rng, {"T1": 1.0, "T2": 0.3, "FLAIR": 0.5})
    out["modalities"] = mods
    return out


_SAMPLERS: dict[str, Callable[[_Ctx], dict[str, Any]]] = {
    "phantom_pretrain": _pretrain, "phantom_brainage": _brainage, "phantom_adni": _adni, "phantom_oasis": _oasis,
    "phantom_abide": _abide, "phantom_ppmi": _ppmi, "phantom_tumor": _tumor, "phantom_stroke": _stroke,
}


def sample_subject(name: str, index: int, base_seed: int, tpl: Template, n_sites: int,
                   opts: Options | None = None) -> SubjectSpec:
    """Draw subject ``index`` of dataset ``name`` (labels, anatomy programme, lesion; no voxels)."""
    if name not in PHANTOM_DATASETS:
        raise ConfigError(f"unknown phantom dataset {name!r}; known: {sorted(PHANTOM_DATASETS)}")
    info = PHANTOM_DATASETS[name]
    opts = opts or Options()
    rng = stream(base_seed, name, index, LABELS)
    site_index = int(rng.integers(n_sites))
    ctx = _Ctx(rng=rng, lesion_rng=stream(base_seed, name, index, LESION), tpl=tpl, opts=opts)
    out = _SAMPLERS[name](ctx)
    mods = tuple(out.get("modalities", info.modalities))
    allowed = opts.modalities or info.modalities
    mods = tuple(m for m in mods if m in allowed) or (allowed[0],)
    return SubjectSpec(dataset=name, index=index, base_seed=int(base_seed),
                       subject=f"sub-{info.prefix}{index + 1:04d}", site_index=site_index,
                       site=f"{info.prefix.lower()}-site{site_index}", sex=out["sex"], modalities=mods,
                       sessions=out["sessions"], labels=out["labels"], condition=out["condition"],
                       tumor=out.get("tumor"), stroke=out.get("stroke"))
