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


def test_reference_rows_are_left_out_of_cka(tmp_path):
    import pandas as pd

    from brainfm.analysis.cka import cka_from_feature_stores
    from brainfm.features.store import write_feature_dir

    rng = np.random.default_rng(0)
    index = pd.DataFrame({"subject": [f"s{i}" for i in range(20)], "session": "0", "modality": "T1"})
    stores = {}
    for name, ref in (("braindino", None), ("other", None), ("prior", "prior")):
        x = np.zeros((20, 4), np.float32) if ref else rng.normal(size=(20, 4)).astype(np.float32)
        path = tmp_path / name
        path.mkdir()
        write_feature_dir(path, index, x, {"a": x, "b": x}, None, {"encoder_config": {"reference": ref} if ref else {}})
        stores[name] = path
    table = cka_from_feature_stores(stores, "braindino")
    assert set(table["backbone"]) == {"other"}
