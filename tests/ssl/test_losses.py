"""SSL losses against hand-computed values and brute-force references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from scipy.special import log_softmax, softmax

from brainfm.ssl.losses import (
    SoftmaxCenter,
    dino_cross_entropy,
    ibot_patch_loss,
    koleo_loss,
    nt_xent_loss,
    sinkhorn_knopp,
)


def test_dino_uniform_teacher_and_uniform_student_is_log_k():
    k = 37
    s = torch.zeros(3, 5, k)  # constant logits: uniform student
    t = torch.full((2, 5, k), 1.0 / k)
    assert dino_cross_entropy(s, t, 0.1).item() == pytest.approx(math.log(k), rel=1e-6)
    assert dino_cross_entropy(s, t, 0.1, ignore_diagonal=True).item() == pytest.approx(math.log(k), rel=1e-6)


def test_dino_uniform_teacher_equals_logsumexp_minus_mean():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(4, 3, 11))
    temp = 0.1
    t = np.full((2, 3, 11), 1.0 / 11)
    expected = np.mean(-log_softmax(s / temp, axis=-1).mean(-1))  # every (s, t, b) pair has the same target
    got = dino_cross_entropy(torch.tensor(s), torch.tensor(t), temp).item()
    assert got == pytest.approx(expected, rel=1e-6)


def test_dino_identical_distributions_gives_entropy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(1, 6, 9))
    temp = 0.2
    p = softmax(logits / temp, axis=-1)
    entropy = -(p * np.log(p)).sum(-1).mean()
    got = dino_cross_entropy(torch.tensor(logits), torch.tensor(p), temp).item()
    assert got == pytest.approx(entropy, rel=1e-6)


def test_dino_ignore_diagonal_matches_brute_force_loop():
    rng = np.random.default_rng(2)
    s = rng.normal(size=(2, 4, 7))
    t = softmax(rng.normal(size=(2, 4, 7)), axis=-1)
    temp = 0.1
    total, count = 0.0, 0
    for si in range(2):
        for ti in range(2):
            if si == ti:
                continue
            for b in range(4):
                total += -(t[ti, b] * log_softmax(s[si, b] / temp)).sum()
                count += 1
    got = dino_cross_entropy(torch.tensor(s), torch.tensor(t), temp, ignore_diagonal=True).item()
    assert got == pytest.approx(total / count, rel=1e-6)


def _sinkhorn_reference(logits: np.ndarray, temp: float, n_iters: int) -> np.ndarray:
    q = np.exp(logits / temp).T  # K x B
    k, b = q.shape
    q /= q.sum()
    for _ in range(n_iters):
        q /= q.sum(axis=1, keepdims=True)
        q /= k
        q /= q.sum(axis=0, keepdims=True)
        q /= b
    return (q * b).T


def test_sinkhorn_matches_reference_and_rows_sum_to_one():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(24, 16))
    got = sinkhorn_knopp(torch.tensor(logits, dtype=torch.float64), 0.07, 3).numpy()
    ref = _sinkhorn_reference(logits, 0.07, 3)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-6)


def test_sinkhorn_converges_to_equal_prototype_mass_and_is_shift_invariant():
    rng = np.random.default_rng(4)
    logits = torch.tensor(rng.normal(size=(32, 8)))
    q = sinkhorn_knopp(logits, 0.5, n_iters=200)
    np.testing.assert_allclose(q.sum(0).numpy(), 32 / 8, rtol=1e-4)  # each prototype gets B/K
    np.testing.assert_allclose(sinkhorn_knopp(logits + 123.0, 0.5, 3).numpy(), sinkhorn_knopp(logits, 0.5, 3).numpy(),
                               rtol=1e-4)  # computed in float32: the shift costs ~1e-5 relative
    uniform = sinkhorn_knopp(torch.zeros(5, 10), 0.04, 3)
    np.testing.assert_allclose(uniform.numpy(), 0.1, rtol=1e-6)


def test_sinkhorn_survives_large_logits():
    logits = torch.tensor([[60.0, 0.0, -5.0], [0.0, 61.0, 2.0]])  # exp(60/0.04) overflows without the shift
    q = sinkhorn_knopp(logits, 0.04, 3)
    assert torch.isfinite(q).all()


def test_softmax_center_ema_and_probabilities():
    c = SoftmaxCenter(4, momentum=0.9)
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0], [3.0, 2.0, 1.0, 0.0]])
    p0 = c.probs(logits, 0.5)
    np.testing.assert_allclose(p0.numpy(), softmax(logits.numpy() / 0.5, axis=-1), rtol=1e-6)
    c.update(logits)
    np.testing.assert_allclose(c.center.numpy(), 0.1 * logits.numpy().mean(0, keepdims=True), rtol=1e-6)
    c.update(logits)
    np.testing.assert_allclose(c.center.numpy(), (0.9 * 0.1 + 0.1) * logits.numpy().mean(0, keepdims=True), rtol=1e-6)
    p1 = c.probs(logits, 0.5)
    np.testing.assert_allclose(p1.numpy(), softmax((logits.numpy() - c.center.numpy()) / 0.5, axis=-1), rtol=1e-6)


def test_ibot_uniform_case_and_weighting():
    k = 16
    # crop 0: 2 masked patches, crop 1: 4 masked patches, crops 2-3 unmasked -> 4 crops
    n_per_crop = [2, 4]
    weights = torch.cat([torch.full((n,), 1.0 / n) for n in n_per_crop])
    s = torch.zeros(6, k)
    t = torch.full((6, k), 1.0 / k)
    got = ibot_patch_loss(s, t, weights, n_crops=4, student_temp=0.1).item()
    assert got == pytest.approx(2 * math.log(k) / 4, rel=1e-6)  # each masked crop contributes log K
    # brute force with random inputs
    rng = np.random.default_rng(5)
    s = rng.normal(size=(6, k))
    t = softmax(rng.normal(size=(6, k)), axis=-1)
    per = -(t * log_softmax(s / 0.1, axis=-1)).sum(-1)
    expected = (per[:2].mean() + per[2:].mean()) / 4
    got = ibot_patch_loss(torch.tensor(s), torch.tensor(t), weights.double(), n_crops=4).item()
    assert got == pytest.approx(expected, rel=1e-6)
    assert ibot_patch_loss(torch.zeros(0, k, requires_grad=True), torch.zeros(0, k), torch.zeros(0), 4).item() == 0


def test_koleo_hand_case_and_brute_force():
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]) * 3.0  # normalised inside
    assert koleo_loss(x).item() == pytest.approx(-math.log(math.sqrt(2.0)), abs=1e-6)
    rng = np.random.default_rng(6)
    f = rng.normal(size=(20, 5))
    fn = f / np.linalg.norm(f, axis=1, keepdims=True)
    d = cdist(fn, fn)
    np.fill_diagonal(d, np.inf)
    expected = -np.log(d.min(axis=1) + 1e-8).mean()
    assert koleo_loss(torch.tensor(f)).item() == pytest.approx(expected, rel=1e-5)


def test_koleo_identical_inputs_are_finite_but_large():
    x = torch.ones(4, 8, requires_grad=True)
    loss = koleo_loss(x)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 15  # -log(eps)-scale: why blank slices are filtered
    assert torch.isfinite(x.grad).all()


def _nt_xent_reference(z1: np.ndarray, z2: np.ndarray, tau: float) -> float:
    z = np.concatenate([z1, z2])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z1)
    sim = z @ z.T / tau
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        others = [sim[i, m] for m in range(2 * n) if m != i]
        total += -(sim[i, j] - np.log(np.sum(np.exp(others))))
    return total / (2 * n)


def test_nt_xent_matches_brute_force():
    rng = np.random.default_rng(7)
    z1, z2 = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    got = nt_xent_loss(torch.tensor(z1), torch.tensor(z2), 0.5).item()
    assert got == pytest.approx(_nt_xent_reference(z1, z2, 0.5), rel=1e-5)


def test_nt_xent_perfect_pairs_with_orthogonal_negatives():
    e = torch.eye(3)
    tau = 0.5
    # positive similarity 1, four negatives with similarity 0: -log(e^2 / (e^2 + 4))
    expected = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 4))
    assert nt_xent_loss(e, e.clone(), tau).item() == pytest.approx(expected, rel=1e-5)


def test_losses_stay_float32_inside_bf16_autocast():
    from brainfm.ssl.losses import dino_cross_entropy, ibot_patch_loss, koleo_loss, nt_xent_loss

    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 5, 64, generator=g)
    t = torch.softmax(torch.randn(2, 5, 64, generator=g) / 0.05, dim=-1)
    ref = dino_cross_entropy(s, t, 0.1, ignore_diagonal=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = dino_cross_entropy(s, t, 0.1, ignore_diagonal=True)
        others = [ibot_patch_loss(s[0], t[0], torch.ones(5), 1), koleo_loss(s[0]), nt_xent_loss(s[0], s[1])]
    assert got.dtype == torch.float32 and all(o.dtype == torch.float32 for o in others)
    torch.testing.assert_close(got, ref)  # exactly the float32 value, not one rounded to bf16
