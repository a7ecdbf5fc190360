"""Pretraining slice sampling: N(128, 50) without replacement over 256 positions; blank flags."""

from __future__ import annotations

import hashlib

import numpy as np
from scipy import stats

from brainfm.preprocess.slices import (
    blank_flags,
    sample_slice_indices,
    slice_probabilities,
    stable_seed,
    volume_rng,
)


def test_probabilities_are_the_truncated_normal_on_the_integer_grid():
    p = slice_probabilities(256, 128, 50)
    ref = stats.norm.pdf(np.arange(256), loc=128, scale=50)
    np.testing.assert_allclose(p, ref / ref.sum(), rtol=1e-12)
    assert p.argmax() == 128 and abs(p.sum() - 1) < 1e-12


def test_draws_are_distinct_sorted_and_exactly_n():
    rng = np.random.default_rng(0)
    for _ in range(50):
        idx = sample_slice_indices(rng, 256, 128, 128, 50)
        assert len(idx) == 128 and len(np.unique(idx)) == 128
        assert (np.diff(idx) > 0).all() and idx.min() >= 0 and idx.max() < 256
    assert np.array_equal(sample_slice_indices(rng, 64, 64, 32, 12.5), np.arange(64))


def test_single_draw_follows_the_normal_pmf():
    rng = np.random.default_rng(1)
    draws = np.concatenate([sample_slice_indices(rng, 256, 1, 128, 50) for _ in range(20000)])
    p = slice_probabilities(256, 128, 50)
    # pool into 16 bins of 16 positions for a well-conditioned chi-square
    obs = np.bincount(draws // 16, minlength=16)
    exp = p.reshape(16, 16).sum(1) * len(draws)
    assert stats.chisquare(obs, exp).pvalue > 1e-3
    assert abs(draws.mean() - (np.arange(256) * p).sum()) < 1.0


def _gumbel_top_k(rng: np.random.Generator, p: np.ndarray, k: int) -> np.ndarray:
    """Independent reference: Gumbel-top-k == successive sampling without replacement (Plackett-Luce)."""
    keys = np.log(p) + rng.gumbel(size=p.shape)
    return np.argpartition(-keys, k)[:k]


def test_inclusion_frequencies_match_sampling_without_replacement():
    reps = 4000
    p = slice_probabilities(256, 128, 50)
    rng = np.random.default_rng(2)
    ours = np.zeros(256)
    ref = np.zeros(256)
    for _ in range(reps):
        ours[sample_slice_indices(rng, 256, 128, 128, 50)] += 1
        ref[_gumbel_top_k(rng, p, 128)] += 1
    ours /= reps
    ref /= reps
    assert np.abs(ours - ref).max() < 0.05
    # the histogram has the normal's shape (peak at the centre, symmetric, decaying to the ends) ...
    smooth = np.convolve(ours, np.ones(9) / 9, mode="valid")
    centre = len(smooth) // 2
    assert (np.diff(smooth[centre + 5:]) < 0.01).all() and (np.diff(smooth[:centre - 5]) > -0.01).all()
    assert abs(ours[:128].sum() - ours[128:].sum()) / ours.sum() < 0.02
    # measured: ~0.83 at the centre, ~0.08 at the ends (the pdf ratio would be 0.048)
    assert 0.75 < ours[118:138].mean() < 0.9 and ours[:10].mean() < 0.15 and ours[-10:].mean() < 0.15
    # ... but flatter than the pdf itself: 128 of 256 without replacement saturates the centre
    assert ours[:10].mean() / ours[118:138].mean() > p[:10].mean() / p[118:138].mean()


def test_per_volume_seeding_is_stable_and_distinct():
    key = ("ds", "sub-01", "ses-1", "T1")
    a = sample_slice_indices(volume_rng(0, key), 256, 128, 128, 50)
    b = sample_slice_indices(volume_rng(0, key), 256, 128, 128, 50)
    c = sample_slice_indices(volume_rng(0, ("ds", "sub-02", "ses-1", "T1")), 256, 128, 128, 50)
    d = sample_slice_indices(volume_rng(1, key), 256, 128, 128, 50)
    assert np.array_equal(a, b) and not np.array_equal(a, c) and not np.array_equal(a, d)
    # the hash is sha256-based, not Python's salted hash(): independent recomputation
    text = "\x1f".join(["slices", *key]).encode()
    assert stable_seed("slices", *key) == int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def test_blank_flags_threshold():
    s = np.zeros((4, 10, 10), np.float32)
    s[1, :5, :5] = 1.0  # 25 %
    s[2, 0, 0] = -3.0  # 1 %: exactly at the threshold is not blank
    s[3, 0, 0] = 0.0
    np.testing.assert_array_equal(blank_flags(s, 0.01), [True, False, False, True])
    np.testing.assert_array_equal(blank_flags(s, 0.3), [True, True, True, True])
    np.testing.assert_array_equal(blank_flags(s, 0.0), [False, False, False, False])
