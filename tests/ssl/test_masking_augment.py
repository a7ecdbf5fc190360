"""iBOT masks, multi-crop and 3D SimCLR views: shapes, ratios, determinism, reference filters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from scipy.stats import binomtest

from brainfm.ssl.augment import MultiCrop, VolumeAugment, gaussian_blur, random_resized_crop_box
from brainfm.ssl.masking import block_mask, sample_crop_masks


def test_block_mask_exact_counts_and_determinism():
    for n in (0, 1, 3, 10, 57, 128, 196):
        m = block_mask((14, 14), n, np.random.default_rng(n))
        assert m.shape == (14, 14) and int(m.sum()) == n
    a = block_mask((16, 16), 80, np.random.default_rng(42))
    b = block_mask((16, 16), 80, np.random.default_rng(42))
    assert np.array_equal(a, b)


def test_block_mask_is_blocky():
    # blocks: a masked patch has more masked 4-neighbours than under uniform random masking
    rng = np.random.default_rng(0)
    neigh = []
    for _ in range(50):
        m = block_mask((16, 16), 64, rng)
        pad = np.pad(m, 1)
        cnt = pad[:-2, 1:-1].astype(int) + pad[2:, 1:-1] + pad[1:-1, :-2] + pad[1:-1, 2:]
        neigh.append(cnt[m].mean())
    assert np.mean(neigh) > 4 * 64 / 256 + 1.0  # random masking would give ~1.0


def test_mask_probability_and_ratio_range():
    rng = np.random.default_rng(1)
    grid = (16, 16)
    n = 2000
    masks = sample_crop_masks(n, grid, rng, mask_prob=0.5, ratio_range=(0.1, 0.5))
    counts = masks.reshape(n, -1).sum(1)
    masked = counts > 0
    assert binomtest(int(masked.sum()), n, 0.5).pvalue > 1e-3
    ratios = counts[masked] / 256
    assert ratios.min() >= math.floor(0.1 * 256) / 256 and ratios.max() <= 0.5
    assert ratios.mean() == pytest.approx(0.3, abs=0.02)  # mean of U[0.1, 0.5] (floor costs < 1/256)
    none = sample_crop_masks(50, grid, rng, mask_prob=0.0)
    assert not none.any()


def test_random_resized_crop_box_area_and_bounds():
    rng = np.random.default_rng(2)
    for _ in range(500):
        top, left, h, w = random_resized_crop_box(64, 48, (0.05, 0.32), rng)
        assert 0 <= top and top + h <= 64 and 0 <= left and left + w <= 48
        assert 0.04 <= h * w / (64 * 48) <= 0.34  # rounding of h and w
        assert 3 / 4 - 0.15 <= w / h <= 4 / 3 + 0.15


@pytest.mark.parametrize("sigma", [1.0, 1.5])
def test_gaussian_blur_matches_scipy(sigma):
    rng = np.random.default_rng(3)
    img = rng.normal(size=(20, 24)).astype(np.float64)
    got = gaussian_blur(torch.tensor(img)[None], sigma, 2)[0].numpy()
    # torch 'reflect' padding is scipy's 'mirror'; radius ceil(3 sigma) == int(3 sigma + 0.5) for these sigmas
    ref = gaussian_filter(img, sigma, mode="mirror", truncate=3.0)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-9)
    vol = rng.normal(size=(8, 9, 10))
    got3 = gaussian_blur(torch.tensor(vol)[None], sigma, 3)[0].numpy()
    np.testing.assert_allclose(got3, gaussian_filter(vol, sigma, mode="mirror", truncate=3.0), rtol=1e-6, atol=1e-9)


def test_multicrop_shapes_determinism_and_stage2_upsampling():
    img = torch.rand(1, 64, 64)
    mc = MultiCrop(n_local=8)
    g, loc = mc(img, np.random.default_rng(5), 32, 16)
    assert g.shape == (2, 1, 32, 32) and loc.shape == (8, 1, 16, 16)
    g2, loc2 = mc(img, np.random.default_rng(5), 32, 16)
    assert torch.equal(g, g2) and torch.equal(loc, loc2)
    g3, _ = mc(img, np.random.default_rng(6), 32, 16)
    assert not torch.equal(g, g3)
    hi = MultiCrop(n_local=2, upsample_to=128)
    g, loc = hi(img, np.random.default_rng(7), 96, 48)
    assert g.shape == (2, 1, 96, 96) and loc.shape == (2, 1, 48, 48)
    rgb = torch.rand(3, 40, 40)
    g, loc = MultiCrop(n_local=0)(rgb, np.random.default_rng(0), 16, 8)
    assert g.shape == (2, 3, 16, 16) and loc.shape == (0, 3, 8, 8)


def test_multicrop_full_scale_crop_without_blur_is_a_resize_or_its_flip():
    img = torch.rand(1, 32, 32)
    mc = MultiCrop(global_scale=(1.0, 1.0), n_local=0, blur_prob=(0.0, 0.0, 0.0), hflip_prob=0.5)
    seen = set()
    for seed in range(12):
        g, _ = mc(img, np.random.default_rng(seed), 32, 16)
        for crop in g:
            if torch.allclose(crop, img):
                seen.add("id")
            elif torch.allclose(crop, img.flip(-1)):
                seen.add("flip")
            else:
                raise AssertionError("full-scale crop should be the image or its mirror")
    assert seen == {"id", "flip"}


@pytest.mark.parametrize("shape", [(20, 24, 16), (12, 24, 20), (6, 7, 9)])
def test_volume_augment_identity_and_flip_match_resize(shape):
    vol = torch.rand(*shape)
    ident = VolumeAugment(size=12, crop_scale=(1.0, 1.0), flip_prob=0.0, affine_prob=0.0, blur_prob=0.0,
                          noise_prob=0.0)
    out = ident(vol, np.random.default_rng(0))
    ref = F.interpolate(vol[None, None], size=(12, 12, 12), mode="trilinear", align_corners=False)[0]
    assert out.shape == (1, 12, 12, 12)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    flip = VolumeAugment(size=12, crop_scale=(1.0, 1.0), flip_prob=1.0, affine_prob=0.0, blur_prob=0.0,
                         noise_prob=0.0)
    torch.testing.assert_close(flip(vol, np.random.default_rng(0)), ref.flip(1, 2, 3), rtol=1e-5, atol=1e-5)


def test_volume_augment_views_differ_and_are_reproducible():
    vol = torch.rand(16, 16, 16)
    aug = VolumeAugment(size=8)
    a = aug(vol, np.random.default_rng(3))
    b = aug(vol, np.random.default_rng(3))
    c = aug(vol, np.random.default_rng(4))
    assert torch.equal(a, b) and not torch.equal(a, c) and torch.isfinite(a).all()
