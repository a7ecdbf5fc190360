"""Skull-stripping adapters: deepbet's bundled model on a real brain with a synthetic skull; none; hdbet."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from scipy import ndimage

from brainfm.data.nifti import Volume
from brainfm.errors import ConfigError, InputError
from brainfm.preprocess.skullstrip import NoStrip, get_skull_stripper, skull_strip


def test_deepbet_removes_a_skull_from_a_real_brain():
    """ICBM152 T1 (2 mm, shipped with nilearn) plus a bright shell and scalp; deepbet on the CPU."""
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    img = load_mni152_template(resolution=2)
    brain = np.asarray(load_mni152_brain_mask(resolution=2).dataobj) > 0
    t1 = np.where(brain, np.asarray(img.dataobj, dtype=np.float32), 0)
    skull = ndimage.binary_dilation(brain, iterations=4) & ~ndimage.binary_dilation(brain, iterations=2)
    scalp = ndimage.binary_dilation(brain, iterations=6) & ~ndimage.binary_dilation(brain, iterations=5)
    head = (t1 + 0.9 * skull + 0.6 * scalp).astype(np.float32)
    vol = Volume(head, img.affine, (2.0, 2.0, 2.0), "mni152+skull")
    stripper = get_skull_stripper("deepbet", device="cpu")
    assert get_skull_stripper("deepbet", device="cpu") is stripper  # cached per process
    stripped, mask = skull_strip(vol, stripper)
    assert mask.dtype == bool and mask.shape == head.shape
    dice = 2 * (mask & brain).sum() / (mask.sum() + brain.sum())
    assert dice > 0.9
    assert (mask & scalp).sum() < 0.02 * scalp.sum()
    assert (stripped.data[~mask] == 0).all() and np.array_equal(stripped.data[mask], head[mask])


def test_none_keeps_non_zero_voxels_and_rejects_empty_brains():
    data = np.zeros((10, 10, 10), np.float32)
    data[2:7, 3:8, 1:9] = 5.0
    vol = Volume(data, np.eye(4), (1.0, 1.0, 1.0), "x.nii.gz")
    out, mask = skull_strip(vol, get_skull_stripper("none"))
    np.testing.assert_array_equal(mask, data != 0)
    np.testing.assert_array_equal(out.data, data)

    class Nothing(NoStrip):
        def mask(self, volume):
            return np.zeros(volume.data.shape, bool)

    with pytest.raises(InputError, match="no brain voxels") as info:
        skull_strip(vol, Nothing())
    assert "x.nii.gz" in str(info.value)


@pytest.mark.skipif(importlib.util.find_spec("HD_BET") is not None, reason="HD_BET is installed here")
def test_hdbet_without_the_package_says_how_to_install_it():
    with pytest.raises(ConfigError, match="pip install hd-bet"):
        get_skull_stripper("hdbet")


def test_unknown_method():
    with pytest.raises(ConfigError, match="unknown skull_strip"):
        get_skull_stripper("bet2")
