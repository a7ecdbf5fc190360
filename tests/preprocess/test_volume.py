"""Array ops of the protocol against independent references (scipy, brute force, torch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from brainfm.preprocess.volume import (
    bbox_of,
    clip_percentiles,
    crop_to_bbox,
    from_dhw,
    normalize_intensity,
    resize,
    to_dhw,
    zscore_nonzero,
)


def _blob(shape=(20, 24, 18), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    inside = ((x - 9) / 6.0) ** 2 + ((y - 13) / 8.0) ** 2 + ((z - 7) / 5.0) ** 2 < 1
    return np.where(inside, rng.gamma(4.0, 30.0, shape), 0).astype(np.float32)


def test_bbox_matches_brute_force():
    data = _blob()
    nz = np.argwhere(data != 0)
    lo, hi = nz.min(0), nz.max(0) + 1
    box = bbox_of(data != 0)
    assert [(s.start, s.stop) for s in box] == list(zip(lo.tolist(), hi.tolist()))
    cropped, box2 = crop_to_bbox(data)
    assert box2 == box and cropped.shape == tuple(hi - lo)
    assert np.count_nonzero(cropped) == np.count_nonzero(data)
    # every face of the box touches the foreground
    for ax in range(3):
        assert (np.take(cropped, 0, axis=ax) != 0).any() and (np.take(cropped, -1, axis=ax) != 0).any()
    with pytest.raises(ValueError, match="empty"):
        bbox_of(np.zeros((4, 4, 4), bool))


@pytest.mark.parametrize("out_shape", [(32, 32, 32), (7, 30, 11)])
def test_trilinear_resize_equals_scipy_grid_mode_zoom(out_shape):
    """torch align_corners=False == scipy zoom(order=1, grid_mode=True, mode='nearest') (edge clamping)."""
    data = _blob()
    ours = resize(data, out_shape)
    zoom = [o / i for o, i in zip(out_shape, data.shape)]
    ref = ndimage.zoom(data.astype(np.float64), zoom, order=1, grid_mode=True, mode="nearest")
    assert ours.shape == out_shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-3)


def test_nearest_resize_equals_torch_nearest_exact_and_keeps_labels():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, size=(9, 13, 6)).astype(np.uint8)
    for shape in [(16, 16, 16), (4, 20, 3)]:
        ours = resize(labels, shape, mode="nearest")
        ref = F.interpolate(torch.from_numpy(labels.astype(np.float32))[None, None], size=shape,
                            mode="nearest-exact")[0, 0].numpy()
        assert ours.dtype == np.uint8
        np.testing.assert_array_equal(ours, ref.astype(np.uint8))
        assert set(np.unique(ours)) <= set(np.unique(labels))


def test_resize_2d_and_identity():
    img = _blob()[:, :, 7]
    out = resize(img, (40, 48))
    ref = ndimage.zoom(img.astype(np.float64), (2, 2), order=1, grid_mode=True, mode="nearest")
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-3)
    same = resize(img, img.shape)
    np.testing.assert_array_equal(same, img)
    assert same is not img


def test_clip_percentiles_of_nonzero_voxels():
    data = _blob()
    fg = data != 0
    lo, hi = np.percentile(data[fg], [0.5, 99.5])
    out = clip_percentiles(data, 0.5, 99.5)
    assert (out[~fg] == 0).all()
    assert out[fg].min() == pytest.approx(lo, rel=1e-6) and out[fg].max() == pytest.approx(hi, rel=1e-6)
    inner = fg & (data >= lo) & (data <= hi)
    np.testing.assert_array_equal(out[inner], data[inner])
    # roughly 0.5 % of the foreground sits at each bound
    n = fg.sum()
    at_hi, at_lo = np.isclose(out[fg], hi, rtol=1e-6).sum(), np.isclose(out[fg], lo, rtol=1e-6).sum()
    assert abs(at_hi / n - 0.005) < 0.003 and abs(at_lo / n - 0.005) < 0.003


def test_zscore_on_foreground_keeps_background_zero():
    data = _blob()
    fg = data != 0
    z = zscore_nonzero(data)
    assert (z[~fg] == 0).all()
    assert z[fg].mean() == pytest.approx(0.0, abs=1e-5)
    assert z[fg].std() == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(z[fg], (data[fg] - data[fg].mean()) / data[fg].std(), rtol=1e-4, atol=1e-5)


def test_normalize_intensity_is_clip_then_zscore_over_the_original_foreground():
    data = _blob() - 40.0  # negative foreground values too: the foreground is fixed before clipping
    data[_blob() == 0] = 0
    fg = data != 0
    lo, hi = np.percentile(data[fg], [0.5, 99.5])
    ref = np.clip(data[fg].astype(np.float64), lo, hi)
    ref = (ref - ref.mean()) / ref.std()
    out = normalize_intensity(data, (0.5, 99.5))
    np.testing.assert_allclose(out[fg], ref, rtol=1e-4, atol=1e-5)
    assert (out[~fg] == 0).all()


def test_dhw_round_trip():
    vol = _blob()
    dhw = to_dhw(vol)
    assert dhw.shape == (vol.shape[2], vol.shape[0], vol.shape[1])
    np.testing.assert_array_equal(dhw[5], vol[:, :, 5])  # item k along D is axial slice k
    np.testing.assert_array_equal(from_dhw(dhw), vol)
