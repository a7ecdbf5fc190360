"""Reference encoders: image statistics (properties), prior (constant), phantom oracle (ground-truth table)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from brainfm.errors import InputError
from brainfm.features import FeatureStore, extract_features
from brainfm.models import create_encoder
from brainfm.models.reference import N_STATS, PERCENTILES, image_statistics


def _brain(seed: int, shape=(10, 24, 24)) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(np.float32)
    c = np.array(shape) / 2 + rng.uniform(-1, 1, 3)
    ball = ((zz - c[0]) / shape[0]) ** 2 + ((yy - c[1]) / shape[1]) ** 2 + ((xx - c[2]) / shape[2]) ** 2 < 0.2
    vol = ball * (1.0 + 0.3 * rng.standard_normal(shape)).clip(0.05, None)
    return torch.from_numpy(vol.astype(np.float32))


@pytest.mark.parametrize("seed", range(4))
def test_image_stats_deterministic_scale_invariant_and_sensitive(seed):
    enc = create_encoder("image_stats")
    vol = _brain(seed)
    a = enc.forward_features(enc.preprocess(vol))["cls"]
    b = enc.forward_features(enc.preprocess(vol.clone()))["cls"]
    assert a.shape == (1, enc.embed_dim) and torch.equal(a, b)
    # a global gain (scanner scaling) does not change intensity statistics relative to the brain median
    torch.testing.assert_close(enc.forward_features(enc.preprocess(vol * 3.7))["cls"], a, rtol=1e-4, atol=1e-5)
    # a contrast change (gamma) and a darker half do
    gamma = enc.forward_features(enc.preprocess(vol ** 1.5))["cls"]
    assert (gamma - a).abs().max() > 1e-2
    darker = vol.clone()
    darker[:, :, : vol.shape[2] // 2] *= 0.6
    groups = image_statistics(darker)
    base = image_statistics(vol)
    assert (groups["grid"] - base["grid"]).abs().max() > 1e-2
    # batching two volumes gives each its own features
    both = enc.forward_features(torch.cat([enc.preprocess(vol), enc.preprocess(darker)]))["cls"]
    torch.testing.assert_close(both[0], a[0])


def test_image_stats_global_percentiles_match_numpy():
    vol = _brain(7)
    g = image_statistics(vol)["global"].numpy()
    v = vol.numpy().astype(np.float64)
    brain = v[v > 0.01 * v.max()]
    rel = brain / np.median(brain)
    np.testing.assert_allclose(g[: len(PERCENTILES)], np.quantile(rel, PERCENTILES), rtol=1e-9)
    assert np.all(np.diff(g[: len(PERCENTILES)]) >= 0)
    assert g[len(PERCENTILES)] == pytest.approx(rel.mean())
    # region volume fractions: core and periphery partition the brain
    assert image_statistics(vol)["core_periphery"].numpy()[N_STATS - 1::N_STATS].sum() == pytest.approx(1.0)


def test_image_stats_empty_volume_is_zero():
    groups = image_statistics(torch.zeros(4, 8, 8))
    assert all(float(t.abs().sum()) == 0.0 for t in groups.values())


def test_reference_encoders_extract_through_the_store(volume_store, tmp_path):
    stats = extract_features(create_encoder("image_stats"), volume_store, tmp_path / "s", layers=[0, 1, 2],
                             central_range=(0.35, 0.55), progress=False)
    assert stats.cls.shape[1] == 3 * N_STATS + 27 * 5 and stats.patch_central.shape == stats.cls.shape
    assert stats.meta["encoder_config"]["reference"] == "baseline" and len(stats.layers) == 3
    again = extract_features(create_encoder("image_stats"), volume_store, tmp_path / "s2", progress=False)
    np.testing.assert_array_equal(again.cls, stats.cls)
    prior = extract_features(create_encoder("prior"), volume_store, tmp_path / "p", layers=[0], progress=False)
    assert prior.meta["encoder_config"]["reference"] == "prior" and not prior.cls.any()


def test_phantom_oracle_reads_truth_next_to_the_manifest(volume_store, tmp_path):
    index = volume_store.index
    truth = index[["subject", "session", "modality"]].copy()
    truth["t_frac_gm"] = np.arange(len(truth), dtype=float)
    truth["t_log_brain"] = 7.0
    (tmp_path / "data").mkdir()
    truth.sample(frac=1.0, random_state=0).to_parquet(tmp_path / "data" / "truth.parquet")
    manifest = tmp_path / "data" / "manifest.parquet"
    fs = extract_features(create_encoder("phantom_oracle"), volume_store, tmp_path / "o", layers=[0],
                          central_range=(0.35, 0.55), manifest=manifest, progress=False)
    n = len(truth)  # columns sorted: t_frac_gm, t_log_brain; each standardised over the scans
    np.testing.assert_allclose(fs.cls[:, 0], (np.arange(n) - (n - 1) / 2) / np.arange(n).std(), rtol=1e-5)
    assert not fs.cls[:, 1].any()
    assert fs.meta["encoder_config"]["reference"] == "oracle" and fs.patch_central is not None
    assert isinstance(FeatureStore(tmp_path / "o").index, pd.DataFrame)
    with pytest.raises(InputError, match="phantom datasets only"):
        extract_features(create_encoder("phantom_oracle"), volume_store, tmp_path / "o2",
                         manifest=tmp_path / "elsewhere" / "manifest.parquet", progress=False)
    truth.iloc[1:].to_parquet(tmp_path / "data" / "truth.parquet")
    with pytest.raises(InputError, match="no ground truth for 1 scan"):
        extract_features(create_encoder("phantom_oracle"), volume_store, tmp_path / "o3", manifest=manifest,
                         progress=False)


def test_image_stats_subsamples_large_brains_deterministically():
    vol = _brain(3, shape=(12, 40, 40))
    full = image_statistics(vol)
    sub = image_statistics(vol, max_voxels=2000)
    assert torch.equal(sub["global"], image_statistics(vol, max_voxels=2000)["global"])
    # a regular lattice of a noisy ball keeps its intensity distribution
    torch.testing.assert_close(sub["global"][: len(PERCENTILES)], full["global"][: len(PERCENTILES)], atol=0.08,
                               rtol=0.0)
