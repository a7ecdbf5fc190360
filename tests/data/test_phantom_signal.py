"""Phantom cohort: the labels carry the signal they are meant to carry (4 mm grid, small cohorts)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from brainfm.data.phantom import CLASSES, load_template, render_session, sample_subject
from brainfm.data.phantom.cohorts import Options
from brainfm.data.phantom.truth import session_truth

VS = 4.0
C = {k: i for i, k in enumerate(CLASSES)}


@pytest.fixture(scope="module")
def tpl():
    return load_template(VS)


@pytest.fixture(scope="module")
def tumors(tpl):
    return [sample_subject("phantom_tumor", i, 0, tpl, 3) for i in range(240)]


def _find(tpl, name, pred, n, seed=0, opts=None, limit=2000):
    out = []
    for i in range(limit):
        s = sample_subject(name, i, seed, tpl, 3, opts)
        if pred(s):
            out.append(s)
            if len(out) == n:
                return out
    raise AssertionError(f"only {len(out)} subjects of {name} match")


def _sphere(tpl, centers, radius):
    grid = tpl.mni_grid
    m = np.zeros(tpl.shape, dtype=bool)
    for c in centers:
        m |= ((grid - np.asarray(c, np.float32)[:, None, None, None]) ** 2).sum(0) < radius**2
    return m


def _gm_in(r, mask):
    return float(r.fractions[C["gm"]][mask].sum() / max(r.fractions.sum(0)[mask].sum(), 1e-6))


HIPP = [(28, -22, -14), (-28, -22, -14)]


def test_ventricles_and_csf_grow_with_age(tpl):
    specs = [sample_subject("phantom_brainage", i, 0, tpl, 3) for i in range(16)]
    ages, vent, csf, dark = [], [], [], []
    for s in specs:
        r = render_session(s, 0, tpl)
        brain = r.fractions.sum()
        ages.append(s.sessions[0].age)
        vent.append(r.ventricles.sum() / brain)
        csf.append(r.fractions[C["csf"]].sum() / brain)
        v = r.images["T1"][r.images["T1"] > 0]
        dark.append(float((v < 0.6 * np.median(v)).mean()))  # CSF-dark voxels seen on the image
    assert min(ages) < 30 and max(ages) > 70
    assert spearmanr(ages, vent)[0] > 0.7
    assert spearmanr(ages, csf)[0] > 0.7
    assert spearmanr(ages, dark)[0] > 0.5


def test_adni_medial_temporal_gm_orders_diagnoses_and_declines(tpl):
    hipp = _sphere(tpl, HIPP, 8.0)
    gm = {}
    for dx in ("CN", "MCI", "AD"):
        specs = _find(tpl, "phantom_adni", lambda s, dx=dx: s.labels["diagnosis"] == dx, 6)
        gm[dx] = np.mean([_gm_in(render_session(s, 0, tpl), hipp) for s in specs])
    assert gm["AD"] < gm["MCI"] < gm["CN"]
    # progression: the same AD subject loses medial temporal GM between screening and month 24
    s = _find(tpl, "phantom_adni", lambda s: s.labels["diagnosis"] == "AD" and s.sessions[-1].name == "ses-m24", 1)[0]
    first, last = render_session(s, 0, tpl), render_session(s, len(s.sessions) - 1, tpl)
    assert _gm_in(last, hipp) < _gm_in(first, hipp)
    assert last.ventricles.sum() > first.ventricles.sum()


def test_contrasts_order_tissues_and_lesions(tpl):
    s = _find(tpl, "phantom_tumor", lambda s: s.labels["idh"] == 0, 1)[0]
    r = render_session(s, 0, tpl)
    fr = r.fractions

    def med(m, cls, thr=0.85):
        return float(np.median(r.images[m][fr[C[cls]] > thr]))

    assert med("T1", "wm") > med("T1", "gm", 0.7) > med("T1", "csf")
    assert med("T2", "csf") > med("T2", "gm", 0.7) > med("T2", "wm")
    assert med("FLAIR", "gm", 0.7) > med("FLAIR", "csf") and med("FLAIR", "wm") > med("FLAIR", "csf")
    et = r.mask == 3
    for m in ("T1", "T1c"):
        r.images[m] = r.images[m] / med(m, "wm")  # each modality relative to its own white matter
    assert np.median(r.images["T1c"][et]) > 1.2 > 1.0 > np.median(r.images["T1"][et])
    ed = r.mask == 2
    assert np.median(r.images["FLAIR"][ed]) > med("FLAIR", "gm", 0.7)


def test_survival_shortens_with_tumor_burden(tpl, tumors):
    from lifelines import CoxPHFitter

    specs = tumors
    df = pd.DataFrame({
        "log_wt": [np.log(s.tumor.nominal_volumes_ml()["wt"]) for s in specs],
        "idh": [s.labels["idh"] for s in specs],
        "age10": [s.sessions[0].age / 10 for s in specs],
        "T": [s.labels["survival_days"] for s in specs],
        "E": [s.labels["event"] for s in specs],
    })
    assert 0.4 < df["E"].mean() < 0.9 and (df["E"] == 0).any()
    cph = CoxPHFitter().fit(df, "T", "E")
    assert cph.params_["log_wt"] > 0 and cph.summary.loc["log_wt", "p"] < 0.01
    assert cph.params_["idh"] < 0 and cph.params_["age10"] > 0
    died = df[df["E"] == 1]
    assert spearmanr(died["log_wt"], died["T"])[0] < 0
    # the rendered masks carry the burden that drives survival
    masks = [render_session(s, 0, tpl, modalities=("T1",)).mask for s in specs[:8]]
    for region, labels, min_rho in (("tc", (1, 3), 0.9), ("wt", (1, 2, 3), 0.7)):
        rendered = [np.isin(m, labels).sum() * VS**3 / 1000 for m in masks]
        nominal = [s.tumor.nominal_volumes_ml()[region] for s in specs[:8]]
        assert spearmanr(rendered, nominal)[0] > min_rho, region


def test_tumor_effect_scale_stretches_the_hazard_not_the_anatomy(tpl):
    """Same gliomas and Weibull draws: 0 leaves survival to noise, 2 ties it tighter to burden."""
    def cohort(es):
        specs = [sample_subject("phantom_tumor", i, 0, tpl, 3, Options(effect_scale=es)) for i in range(150)]
        burden = [np.log(s.tumor.nominal_volumes_ml()["wt"]) for s in specs]
        return specs, spearmanr(burden, [s.labels["survival_days"] for s in specs])[0]

    base, rho1 = cohort(1.0)
    off, rho0 = cohort(0.0)
    strong, rho2 = cohort(2.0)
    assert all(a.tumor.nominal_volumes_ml() == b.tumor.nominal_volumes_ml() for a, b in zip(base, strong))
    assert [s.labels for s in base] == [s.labels for s in (sample_subject("phantom_tumor", i, 0, tpl, 3)
                                                          for i in range(150))]  # 1 is the default, bit for bit
    assert abs(rho0) < 0.2 and rho2 < rho1 < -0.2
    # the median survival stays put (the hazard is stretched about the cohort's mean)
    med = [np.median([s.labels["survival_days"] for s in c]) for c in (off, base, strong)]
    assert max(med) < 2 * min(med)


def test_stroke_dps_range_option(tpl):
    dps = np.array([sample_subject("phantom_stroke", i, 0, tpl, 3, Options(dps_days=(1.0, 365.0))).labels["dps"]
                    for i in range(200)])
    assert dps.min() >= 1.0 and dps.max() <= 365.0
    assert 0.4 < np.mean(dps < np.sqrt(365.0)) < 0.6  # log-uniform: half below the geometric midpoint
    wide = [sample_subject("phantom_stroke", i, 0, tpl, 3).labels["dps"] for i in range(200)]
    assert max(wide) > 365.0


def test_idh_mutants_are_younger_frontal_and_less_enhancing(tpl, tumors):
    specs = tumors
    mut = [s for s in specs if s.labels["idh"] == 1]
    wt = [s for s in specs if s.labels["idh"] == 0]
    assert 0.14 < len(mut) / len(specs) < 0.30
    assert np.mean([s.sessions[0].age for s in wt]) - np.mean([s.sessions[0].age for s in mut]) > 10
    assert np.mean([s.tumor.center[1] > 5 for s in mut]) > np.mean([s.tumor.center[1] > 5 for s in wt]) + 0.25

    def enhancement(s):
        r = render_session(s, 0, tpl, modalities=("T1", "T1c"))
        tc = np.isin(r.mask, (1, 3))
        rel = {m: r.images[m] / np.median(r.images[m][r.fractions[C["wm"]] > 0.85]) for m in ("T1", "T1c")}
        return (r.mask == 3).sum() / tc.sum(), float(np.mean(rel["T1c"][tc] - rel["T1"][tc]))

    e_mut = np.array([enhancement(s) for s in mut[:6]])
    e_wt = np.array([enhancement(s) for s in wt[:6]])
    assert e_mut[:, 0].mean() < e_wt[:, 0].mean() - 0.25
    assert e_mut[:, 1].mean() < e_wt[:, 1].mean()


def test_chronic_strokes_look_like_csf_acute_ones_do_not(tpl):
    def big(s):
        return s.stroke.nominal_volume_ml() > 4

    acute = _find(tpl, "phantom_stroke", lambda s: big(s) and s.labels["dps"] < 7, 4)
    chronic = _find(tpl, "phantom_stroke", lambda s: big(s) and s.labels["dps"] > 365, 4)

    def lesion(s):
        r = render_session(s, 0, tpl)
        m = r.mask > 0
        assert m.sum() > 0 and (r.images["T1"][m] > 0).all()
        t1 = r.images["T1"] / np.median(r.images["T1"][r.fractions[C["wm"]] > 0.85])
        return float(np.mean(t1[m])), float(r.fractions[C["csf"]][m].mean())

    a, c = np.array([lesion(s) for s in acute]), np.array([lesion(s) for s in chronic])
    assert c[:, 0].mean() < a[:, 0].mean() - 0.1  # darker on T1
    assert c[:, 1].mean() > a[:, 1].mean() + 0.3  # cavitated into CSF
    # the ground truth (the phantom_oracle's features) carries the same stage
    def truth(s):
        doc = session_truth(render_session(s, 0, tpl), tpl)
        return dict(zip(doc["names"], doc["modalities"]["T1"]))

    ta, tc = [truth(s) for s in acute], [truth(s) for s in chronic]
    assert min(t["lesion_csf"] for t in tc) > max(t["lesion_csf"] for t in ta)
    assert np.mean([t["contrast_lesion"] for t in tc]) < np.mean([t["contrast_lesion"] for t in ta]) - 0.1


@pytest.mark.parametrize("name,label,centers,radius,sign", [
    ("phantom_ppmi", "pd", [(11, -17, -10), (-11, -17, -10)], 6.0, -1),
    ("phantom_abide", "asd", [(32, 38, 22), (-32, 38, 22)], 14.0, +1),
    ("phantom_oasis", "demented", HIPP, 8.0, -1),
])
def test_subtle_conditions_move_their_regions(tpl, name, label, centers, radius, sign):
    """The same visit rendered with and without the condition's regional programme: paired change."""
    region = _sphere(tpl, centers, radius)
    far = _sphere(tpl, [(0, -80, 20)], 10.0)  # occipital cortex: untouched by these conditions
    diffs = []
    for s in _find(tpl, name, lambda s: s.labels[label] == 1, 3):
        sess = s.sessions[0]
        assert sess.morph.regions  # the label switches a regional programme on
        null = dataclasses.replace(s, sessions=(dataclasses.replace(
            sess, morph=dataclasses.replace(sess.morph, regions=())),))
        with_fx, without = render_session(s, 0, tpl), render_session(null, 0, tpl)
        diffs.append(sign * (_gm_in(with_fx, region) - _gm_in(without, region)))
        assert abs(_gm_in(with_fx, far) - _gm_in(without, far)) < 0.01
    assert min(diffs) > 0 and np.mean(diffs) > 0.005
    # controls carry a weaker programme (none, or preclinical), effect_scale=0 switches it off
    def strength(s):
        return max((abs(r.gm_loss) + abs(r.shrink) for r in s.sessions[0].morph.regions), default=0.0)

    cases = _find(tpl, name, lambda s: s.labels[label] == 1, 20)
    controls = _find(tpl, name, lambda s: s.labels[label] == 0, 20)
    assert np.mean([strength(c) for c in controls]) < 0.3 * np.mean([strength(c) for c in cases])
    s = cases[0]
    off = sample_subject(name, s.index, 0, tpl, 3, Options(effect_scale=0.0))
    assert off.labels == s.labels and off.sessions[0].morph.regions == ()


def test_class_balance_and_age_ranges(tpl):
    ppmi = [sample_subject("phantom_ppmi", i, 0, tpl, 3).labels["pd"] for i in range(200)]
    assert 0.71 < np.mean(ppmi) < 0.89  # about 4:1
    adni = [sample_subject("phantom_adni", i, 0, tpl, 3) for i in range(150)]
    ages = [sess.age for s in adni for sess in s.sessions]
    assert min(ages) >= 55 and max(ages) <= 90
    dx = pd.Series([s.labels["diagnosis"] for s in adni]).value_counts(normalize=True)
    assert dx["MCI"] > dx["CN"] > dx["AD"] > 0.1
    abide = [sample_subject("phantom_abide", i, 0, tpl, 3).sessions[0].age for i in range(100)]
    assert 7 <= min(abide) and max(abide) <= 40
    ba = [sample_subject("phantom_brainage", i, 0, tpl, 3).sessions[0].age for i in range(100)]
    assert 6 <= min(ba) < 20 and 75 < max(ba) <= 90


def test_site_changes_appearance_not_anatomy(tpl):
    s = sample_subject("phantom_brainage", 0, 0, tpl, 3)
    other = dataclasses.replace(s, site_index=(s.site_index + 1) % 3)
    a, b = render_session(s, 0, tpl), render_session(other, 0, tpl)
    np.testing.assert_array_equal(a.fractions, b.fractions)
    ia, ib = a.images["T1"], b.images["T1"]
    assert (ia > 0).sum() == (ib > 0).sum()
    brain = ia > 0
    ratio = np.median(ia[brain]) / np.median(ib[brain])
    assert not 0.95 < ratio < 1.05  # scanner scale differs
    assert np.corrcoef(ia[brain], ib[brain])[0, 1] > 0.7  # same anatomy
