"""FeatureStore round trip and fuse_modalities against hand-computed averages."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from brainfm.errors import ConfigError, InputError, ManifestError
from brainfm.features import FeatureStore, fuse_modalities, write_feature_dir


def _index(rows):
    return pd.DataFrame(rows, columns=["dataset", "subject", "session", "modality"])


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    idx = _index([("d", f"s{i}", "0", "T1") for i in range(4)])
    cls, l2 = rng.normal(size=(4, 5)), rng.normal(size=(4, 3))
    write_feature_dir(tmp_path / "f", idx, cls, {"block2": l2}, None, {"encoder": "x", "layer_indices": [2]})
    fs = FeatureStore(tmp_path / "f")
    pd.testing.assert_frame_equal(fs.index, idx)
    np.testing.assert_allclose(fs.cls, cls.astype(np.float32))
    assert fs.cls.dtype == np.float32 and len(fs) == 4 and fs.embed_dim == 5
    assert fs.layers == ["block2"] and np.array_equal(fs.layer("block2"), fs.layer(2))
    assert fs.patch_central is None and fs.meta["encoder"] == "x" and fs.meta["n_volumes"] == 4
    with pytest.raises(ConfigError, match="was not extracted"):
        fs.layer("block5")
    with pytest.raises(ConfigError, match="was not extracted"):
        fs.layer(5)
    with pytest.raises(ValueError, match="aligned"):
        write_feature_dir(tmp_path / "g", idx, cls[:3])


def test_broken_directories(tmp_path):
    with pytest.raises(InputError, match="not a feature store"):
        FeatureStore(tmp_path)
    idx = _index([("d", "s0", "0", "T1"), ("d", "s1", "0", "T1")])
    write_feature_dir(tmp_path / "f", idx, np.zeros((2, 3)))
    np.save(tmp_path / "f" / "cls.npy", np.zeros((3, 3), np.float32))  # stale array, other row count
    with pytest.raises(InputError, match=r"expected \(2, dim\)"):
        FeatureStore(tmp_path / "f")
    meta = json.loads((tmp_path / "f" / "meta.json").read_text())
    meta["n_volumes"] = 7
    (tmp_path / "f" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="meta.json says 7"):
        FeatureStore(tmp_path / "f")


def _fusion_case():
    rows = [("d", "a", "0", "T1"), ("d", "a", "0", "FLAIR"), ("d", "b", "0", "FLAIR"), ("d", "b", "0", "T1"),
            ("d", "b", "0", "T2"), ("d", "c", "1", "T1"), ("d", "a", "1", "T1"), ("d", "a", "1", "FLAIR"),
            ("d", "e", "0", "T2")]
    X = np.arange(len(rows) * 2, dtype=np.float32).reshape(-1, 2)
    return _index(rows), X


def test_fuse_modalities_hand_computed():
    idx, X = _fusion_case()
    keys, F = fuse_modalities(idx, X, ["T1", "FLAIR"], on_missing="drop")
    # groups in order of first appearance; c/1 lacks FLAIR (dropped); e/0 has neither (not a sample)
    assert keys.values.tolist() == [["a", "0"], ["b", "0"], ["a", "1"]]
    expect = np.array([(X[0] + X[1]) / 2, (X[3] + X[2]) / 2, (X[6] + X[7]) / 2])
    np.testing.assert_allclose(F, expect)
    assert F.dtype == np.float32 and keys.attrs["n_dropped"] == 1
    k1, F1 = fuse_modalities(idx, X, ["T2"])
    assert k1.values.tolist() == [["b", "0"], ["e", "0"]] and np.array_equal(F1, X[[4, 8]])
    k2, F2 = fuse_modalities(idx, X, "FLAIR")  # a string is one modality
    assert k2.values.tolist() == [["a", "0"], ["b", "0"], ["a", "1"]] and np.array_equal(F2, X[[1, 2, 7]])


def test_fuse_modalities_errors():
    idx, X = _fusion_case()
    with pytest.raises(ManifestError) as err:
        fuse_modalities(idx, X, ["T1", "FLAIR"])
    assert "subject=c" in str(err.value) and "FLAIR" in str(err.value)
    with pytest.raises(ManifestError, match="ambiguous"):
        fuse_modalities(idx, X, ["T1"], by=("subject",))  # a has T1 in two sessions
    with pytest.raises(ConfigError, match="on_missing"):
        fuse_modalities(idx, X, ["T1"], on_missing="ignore")
    with pytest.raises(ConfigError, match="duplicate"):
        fuse_modalities(idx, X, ["T1", "T1"])
    with pytest.raises(ValueError, match="aligned"):
        fuse_modalities(idx, X[:3], ["T1"])
