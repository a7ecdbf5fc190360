"""Linear CKA against the Gram-matrix (HSIC) definition and its invariances."""

import numpy as np
import pytest

from brainfm.analysis.cka import linear_cka


def _hsic_cka(x, y):
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = h @ x @ x.T @ h, h @ y @ y.T @ h
    return np.sum(k * l_) / np.sqrt(np.sum(k * k) * np.sum(l_ * l_))


def test_equals_gram_definition_and_invariances():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 10))
    y = x @ rng.normal(size=(10, 7)) + 0.5 * rng.normal(size=(40, 7))
    assert abs(linear_cka(x, y) - _hsic_cka(x, y)) < 1e-10
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    assert abs(linear_cka(x @ q * 3.0 + 5.0, y) - linear_cka(x, y)) < 1e-10
    assert abs(linear_cka(x, x) - 1) < 1e-12
    assert linear_cka(x, rng.normal(size=(40, 7))) < 0.5


def test_bad_shapes_are_errors():
    with pytest.raises(ValueError, match="same number of rows"):
        linear_cka(np.ones((3, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="constant"):
        linear_cka(np.ones((5, 2)), np.random.default_rng(0).normal(size=(5, 2)))
