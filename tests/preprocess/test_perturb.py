"""Test-time perturbations (paper §4.5): identities, definitions, monotonicity, MONAI comparison."""

from __future__ import annotations

import numpy as np
import pytest

from brainfm.errors import ConfigError
import torch

from brainfm.perturb import (
    IDENTITY,
    PERTURBATIONS,
    apply_perturbation,
    bias_field,
    gamma_contrast,
    gibbs_ringing,
)


def _head(shape=(24, 28, 20), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r2 = x**2 + y**2 + z**2
    vol = np.where(r2 < 0.6, 300.0, 0.0) + np.where(r2 < 0.25, 200.0, 0.0)
    vol += np.where(r2 < 0.6, rng.normal(0, 10, shape), 0.0)
    return vol.astype(np.float32)


def test_grids_are_the_papers():
    assert PERTURBATIONS["gamma"] == (0.5, 0.8, 1.0, 1.2, 1.5, 2.0)
    assert PERTURBATIONS["gibbs"] == (0.0, 0.1, 0.2, 0.3, 0.4)
    assert PERTURBATIONS["bias"] == (0.0, 0.1, 0.2, 0.3, 0.4)
    assert all(IDENTITY[k] in v for k, v in PERTURBATIONS.items())


@pytest.mark.parametrize("kind", ["gamma", "gibbs", "bias", "contrast", "bias_field"])
def test_identity_settings_return_the_input(kind):
    vol = _head()
    clean = {"gamma": 1.0, "contrast": 1.0}.get(kind, 0.0)
    out = apply_perturbation(vol, kind, clean, seed=3)
    np.testing.assert_array_equal(out, vol)
    assert out is not vol


def test_gamma_matches_the_definition():
    vol = _head()
    fg = vol != 0
    lo, hi = vol[fg].min(), vol[fg].max()
    for g in (0.5, 2.0):
        out = gamma_contrast(vol, g)
        ref = lo + (hi - lo) * ((vol[fg].astype(np.float64) - lo) / (hi - lo)) ** g
        np.testing.assert_allclose(out[fg], ref, rtol=1e-5)
        assert (out[~fg] == 0).all()
        assert out[fg].min() == pytest.approx(lo) and out[fg].max() == pytest.approx(hi)
    # gamma < 1 brightens, > 1 darkens; the change grows with |log gamma|
    assert gamma_contrast(vol, 0.5)[fg].mean() > vol[fg].mean() > gamma_contrast(vol, 2.0)[fg].mean()
    err = {g: np.abs(gamma_contrast(vol, g) - vol).mean() for g in PERTURBATIONS["gamma"]}
    assert err[1.0] == 0 and err[1.2] < err[1.5] < err[2.0] and err[0.8] < err[0.5]
    with pytest.raises(ValueError):
        gamma_contrast(vol, 0.0)


def _high_freq_error(out, ref):
    """Energy of the difference in the outer half of every axis' frequencies."""
    k = np.fft.fftshift(np.abs(np.fft.fftn(out - ref)) ** 2)
    grids = np.meshgrid(*[np.abs(np.fft.fftshift(np.fft.fftfreq(n))) for n in out.shape], indexing="ij")
    return float(k[np.maximum.reduce(grids) > 0.25].sum())


def test_gibbs_removes_the_stated_fraction_and_grows_monotonically():
    vol = _head()
    spectra = {}
    errs = []
    for a in PERTURBATIONS["gibbs"][1:]:
        out = gibbs_ringing(vol, a)
        spec = np.fft.fftshift(np.fft.fftn(out.astype(np.float64)))
        keep = np.abs(spec) > 1e-6 * np.abs(spec).max()
        for ax, n in enumerate(vol.shape):  # kept extent along each axis is (1 - alpha) of it
            line = keep.any(axis=tuple(i for i in range(3) if i != ax))
            assert abs(line.sum() - (1 - a) * n) <= 1.5
        spectra[a] = keep.mean()
        errs.append(_high_freq_error(out, vol))
    assert all(np.diff(errs) > 0)
    assert all(np.diff(list(spectra.values())) < 0)


def test_gibbs_reproduces_the_gibbs_phenomenon_overshoot():
    """A unit step truncated in k-space overshoots by ~9 % of the jump (Gibbs constant 0.0895)."""
    n = 128
    step = np.zeros((n, 8, 8), np.float32)
    step[n // 4: 3 * n // 4] = 1.0
    out = gibbs_ringing(step, 0.4, axes=(0,))
    overshoot = out[:, 4, 4].max() - 1.0
    assert 0.07 < overshoot < 0.11
    np.testing.assert_allclose(out[:, 0, 0], out[:, 5, 3], atol=1e-5)  # untouched axes stay untouched


@pytest.mark.parametrize("shape", [(32, 24), (16, 16, 16)])
@pytest.mark.parametrize("alpha", [0.0, 0.2, 0.4])
def test_monai_mode_equals_monai_gibbs_noise(shape, alpha):
    from monai.transforms import GibbsNoise

    img = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    ref = GibbsNoise(alpha=alpha)(torch.from_numpy(img)[None])[0].numpy()
    ours = gibbs_ringing(img, alpha, mode="monai")
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    if len(shape) == 3 and alpha == 0.0:  # MONAI alpha=0 is not an identity for a 3D cube (corners removed)
        assert np.abs(ref - img).max() > 1e-3
        np.testing.assert_array_equal(gibbs_ringing(img, 0.0), img)


def test_gibbs_mask_keeps_the_background():
    vol = _head()
    fg = vol != 0
    out = apply_perturbation(vol, "gibbs", 0.3, mask=fg)
    assert (out[~fg] == 0).all() and not np.array_equal(out[fg], vol[fg])
    unmasked = apply_perturbation(vol, "gibbs", 0.3)
    assert np.count_nonzero(unmasked[~fg]) > 0  # ringing spills into the background without a mask


def test_bias_field_definition_and_monotonicity():
    shape = (20, 24, 16)
    f = bias_field(shape, 0.3, seed=5)
    log = np.log(f.astype(np.float64))
    assert np.abs(log).max() == pytest.approx(0.3, rel=1e-5)
    assert f.min() >= np.exp(-0.3) - 1e-6 and f.max() <= np.exp(0.3) + 1e-6
    # same pattern at every strength, scaled by s
    np.testing.assert_allclose(np.log(bias_field(shape, 0.1, seed=5)), log / 3, atol=1e-5)
    np.testing.assert_array_equal(bias_field(shape, 0.3, seed=5), f)
    assert not np.allclose(bias_field(shape, 0.3, seed=6), f)
    # smooth: the log field is exactly a polynomial of degree <= 3 in the Legendre basis
    coords = [np.linspace(-1, 1, n) for n in shape]
    grid = np.meshgrid(*coords, indexing="ij")
    basis = np.polynomial.legendre.legvander3d(*(g.ravel() for g in grid), [3, 3, 3])
    coef, res, *_ = np.linalg.lstsq(basis, log.ravel(), rcond=None)
    assert np.abs(basis @ coef - log.ravel()).max() < 1e-5

    vol = _head()
    fg = vol != 0
    errs = [np.abs(apply_perturbation(vol, "bias", s, seed=1) - vol)[fg].mean() for s in PERTURBATIONS["bias"]]
    assert errs[0] == 0 and all(np.diff(errs) > 0)
    out = apply_perturbation(vol, "bias", 0.4, seed=1)
    assert (out[~fg] == 0).all()
    np.testing.assert_array_equal(out, apply_perturbation(vol, "bias", 0.4, seed=1))


def test_bad_arguments():
    vol = _head()
    with pytest.raises(ConfigError, match="unknown perturbation"):
        apply_perturbation(vol, "motion", 0.1)
    with pytest.raises(ValueError):
        apply_perturbation(vol, "gibbs", 1.0)
    with pytest.raises(ValueError):
        apply_perturbation(vol, "bias", -0.1)
