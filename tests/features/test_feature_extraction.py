"""extract_features: pooling equals a hand loop, batching/determinism/row subsets, 3D path, atomicity, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from brainfm.errors import ConfigError, InputError
from brainfm.features import FeatureStore, central_indices, extract_features
from brainfm.models import Encoder, create_encoder, export_dinov3_teacher


def _hand_loop(encoder, store, layers=(), central=None):
    """One slice at a time, plain Python means: the reference for the batched extractor."""
    cls, lay, cen = [], [], []
    with torch.no_grad():
        for i in range(len(store)):
            x = encoder.preprocess(torch.from_numpy(store[i]))
            per = [encoder.forward_features(x[k:k + 1], layers=layers, return_patch=True) for k in range(len(x))]
            cls.append(np.mean([o["cls"][0].numpy() for o in per], axis=0))
            if layers:
                lay.append([np.mean([o["layers"][j][0].numpy() for o in per], axis=0) for j in range(len(layers))])
            if central:
                k0, k1 = central_indices(len(x), central)
                cen.append(np.mean([per[k]["patch"][0].reshape(-1, per[k]["patch"].shape[-1]).numpy()
                                    for k in range(k0, k1)], axis=(0, 1)))
    return np.array(cls), lay, (np.array(cen) if central else None)


def test_pooling_equals_hand_loop(encoder, volume_store, tmp_path):
    fs = extract_features(encoder, volume_store, tmp_path / "f", batch_size=3, layers=[0, 1],
                          central_range=(0.3, 0.7), progress=False)
    cls, lay, cen = _hand_loop(encoder, volume_store, layers=[0, 1], central=(0.3, 0.7))
    assert fs.cls.shape == (6, 64) and fs.cls.dtype == np.float32
    np.testing.assert_allclose(fs.cls, cls, atol=2e-5)
    np.testing.assert_allclose(fs.layer("block0"), [v[0] for v in lay], atol=2e-5)
    np.testing.assert_allclose(fs.layer(1), [v[1] for v in lay], atol=2e-5)
    np.testing.assert_allclose(fs.patch_central, cen, atol=2e-5)
    assert np.std(fs.cls, axis=0).mean() > 1e-3  # volumes really differ: the comparison is not vacuous
    pd_index = volume_store.index
    assert fs.index[["subject", "modality"]].values.tolist() == pd_index[["subject", "modality"]].values.tolist()
    assert "shard" not in fs.index.columns and "offset" not in fs.index.columns


def test_batching_invariance_and_determinism(encoder, volume_store, tmp_path):
    a = extract_features(encoder, volume_store, tmp_path / "a", batch_size=3, layers=[0], central_range=(0.2, 0.5),
                         progress=False)
    b = extract_features(encoder, volume_store, tmp_path / "b", batch_size=64, layers=[0],
                         central_range=(0.2, 0.5), progress=False)
    c = extract_features(encoder, volume_store, tmp_path / "c", batch_size=3, layers=[0], central_range=(0.2, 0.5),
                         progress=False)
    for x, y in ((a.cls, b.cls), (a.layer(0), b.layer(0)), (a.patch_central, b.patch_central)):
        np.testing.assert_allclose(x, y, atol=1e-5)
    assert np.array_equal(a.cls, c.cls) and np.array_equal(a.patch_central, c.patch_central)


def test_row_subset_keeps_order_and_values(encoder, volume_store, tmp_path):
    full = extract_features(encoder, volume_store, tmp_path / "full", batch_size=8, progress=False)
    sub = extract_features(encoder, volume_store, tmp_path / "sub", batch_size=8, rows=[4, 1, -1], progress=False)
    assert sub.index["subject"].tolist() == [volume_store.index["subject"][i] for i in (4, 1, 5)]
    np.testing.assert_allclose(sub.cls, full.cls[[4, 1, 5]], atol=1e-5)
    assert sub.meta["rows"] == [4, 1, 5]


def test_meta_records_encoder_weights_and_timing(tiny_kwargs, encoder, volume_store, tmp_path):
    export_dinov3_teacher(encoder, tmp_path / "teacher.pth")
    enc = create_encoder("braindino", weights=tmp_path / "teacher.pth", **tiny_kwargs)
    fs = extract_features(enc, volume_store, tmp_path / "f", batch_size=5, progress=False)
    np.testing.assert_allclose(fs.cls, extract_features(encoder, volume_store, tmp_path / "g", batch_size=5,
                                                        progress=False).cls, atol=1e-6)
    m = fs.meta
    assert m["encoder"] == "braindino" and m["embed_dim"] == 64 and m["n_volumes"] == 6
    assert m["weights"]["sha256"] == enc.weights_info["sha256"] and m["weights"]["format"] == "dinov3_teacher"
    # the whole load info travels with the features: layout, RoPE precision, LayerNorm eps
    assert m["weights"] == json.loads(json.dumps(enc.weights_info))
    assert m["weights"]["layout"] == "DINOv3 teacher" and m["weights"]["rope_dtype"] == "float32"
    assert m["weights"]["layernorm_eps"] == 1e-5
    assert m["n_slices"] == 7 and m["total_slices"] == 42 and m["seconds"] > 0 and m["slices_per_s"] > 0
    assert m["protocol"]["store_protocol"] == {"test": "features"} and m["encoder_config"]["img_size"] == 32


def test_bf16_autocast_is_close_to_fp32(encoder, volume_store, tmp_path):
    a = extract_features(encoder, volume_store, tmp_path / "a", batch_size=16, progress=False)
    b = extract_features(encoder, volume_store, tmp_path / "b", batch_size=16, precision="bf16", progress=False)
    cos = (a.cls * b.cls).sum(1) / np.linalg.norm(a.cls, axis=1) / np.linalg.norm(b.cls, axis=1)
    assert cos.min() > 0.99 and b.meta["precision"] == "bf16" and b.cls.dtype == np.float32


def test_trainable_encoder_runs_in_eval_and_state_is_restored(tiny_kwargs, volume_store, tmp_path):
    enc = create_encoder("vit_random", freeze=False, arch_overrides={"drop_path_rate": 0.5}, **tiny_kwargs)
    assert enc.training
    a = extract_features(enc, volume_store, tmp_path / "a", batch_size=4, progress=False)
    b = extract_features(enc, volume_store, tmp_path / "b", batch_size=4, progress=False)
    assert np.array_equal(a.cls, b.cls)  # drop-path would make these differ
    assert enc.training  # the caller's mode is given back


def test_brainfound_adjacent_stacking_extracts(volume_store, tmp_path):
    enc = create_encoder("vit_random", arch="vit_small_patch14_dinov2", embed_dim=64, depth=2, num_heads=2,
                         img_size=28, stacking="adjacent")
    fs = extract_features(enc, volume_store, tmp_path / "f", batch_size=5, progress=False)
    cls, _, _ = _hand_loop(enc, volume_store)
    np.testing.assert_allclose(fs.cls, cls, atol=2e-5)


def test_central_indices_match_brute_force():
    assert central_indices(128, (0.35, 0.55)) == (45, 70)
    assert central_indices(8, (0.35, 0.55)) == (3, 4)
    assert central_indices(2, (0.3, 0.45)) == (0, 1)  # no centre inside: nearest to the middle
    rng = np.random.default_rng(0)
    for _ in range(500):
        n = int(rng.integers(1, 200))
        lo, hi = sorted(rng.uniform(0, 1, 2))
        k0, k1 = central_indices(n, (lo, hi))
        brute = [k for k in range(n) if lo <= (k + 0.5) / n <= hi]
        assert 0 <= k0 < k1 <= n
        if brute:
            assert list(range(k0, k1)) == brute


class _Conv3D(Encoder):
    """A real small 3D CNN following the volume3d contract (pooled stages, patch grid with depth first)."""

    input_kind = "volume3d"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c0 = nn.Conv3d(1, 8, 3, padding=1)
        self.c1 = nn.Conv3d(8, 16, 3, stride=(1, 2, 2), padding=1)
        self.embed_dim = 16
        self.layer_names = ["stage0", "stage1"]

    def preprocess(self, volume):
        v = torch.as_tensor(volume, dtype=torch.float32)
        return nn.functional.interpolate(v[None, None], size=(8, 16, 16), mode="trilinear", align_corners=False)

    def forward_features(self, x, layers=(), return_patch=False):
        h0 = torch.relu(self.c0(x))
        h1 = self.c1(h0)
        out = {"cls": h1.mean(dim=(2, 3, 4))}
        if layers:
            pooled = [h0.mean(dim=(2, 3, 4)), out["cls"]]
            out["layers"] = [pooled[self.layer_index(i)] for i in layers]
        if return_patch:
            out["patch"] = h1.permute(0, 2, 3, 4, 1)  # (B, d, h, w, C)
        return out


def test_volume3d_path(volume_store, tmp_path):
    enc = _Conv3D().freeze()
    a = extract_features(enc, volume_store, tmp_path / "a", layers=["stage0"], central_range=(0.3, 0.6),
                         progress=False)
    b = extract_features(enc, volume_store, tmp_path / "b", layers=["stage0"], central_range=(0.3, 0.6),
                         volume_batch=4, progress=False)
    k0, k1 = central_indices(8, (0.3, 0.6))
    with torch.no_grad():
        for i in range(len(volume_store)):
            out = enc.forward_features(enc.preprocess(volume_store[i]), layers=[0], return_patch=True)
            np.testing.assert_allclose(a.cls[i], out["cls"][0].numpy(), atol=1e-5)
            np.testing.assert_allclose(a.layer("stage0")[i], out["layers"][0][0].numpy(), atol=1e-5)
            np.testing.assert_allclose(a.patch_central[i], out["patch"][0, k0:k1].mean(dim=(0, 1, 2)).numpy(),
                                       atol=1e-5)
    np.testing.assert_allclose(a.cls, b.cls, atol=1e-5)
    assert a.layer("stage0").shape == (6, 8) and a.meta["input_kind"] == "volume3d"


def test_failure_leaves_previous_output_untouched(encoder, volume_store, tmp_path):
    import shutil

    from brainfm.preprocess.store import ShardedStore

    out = tmp_path / "feat"
    first = extract_features(encoder, volume_store, out, batch_size=4, progress=False)
    before = first.cls.copy()
    # a real store whose second shard disappears after opening (a disk/NFS failure mid-extraction):
    # items 0-3 extract, item 4 fails
    broken_dir = tmp_path / "broken"
    shutil.copytree(volume_store.dir, broken_dir)
    broken = ShardedStore(broken_dir)
    (broken_dir / "shard-00001.npy").unlink()
    with pytest.raises(OSError):
        extract_features(encoder, broken, out, batch_size=4, layers=[0], progress=False)
    again = FeatureStore(out)
    assert np.array_equal(again.cls, before) and again.layers == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "feat"]  # no temp dirs left behind


def test_bad_requests(encoder, volume_store, tmp_path):
    with pytest.raises(ConfigError, match="central_range"):
        extract_features(encoder, volume_store, tmp_path / "x", central_range=(0.6, 0.4), progress=False)
    with pytest.raises(ConfigError, match="out of range"):
        extract_features(encoder, volume_store, tmp_path / "x", layers=[5], progress=False)
    with pytest.raises(ConfigError, match="rows out of range"):
        extract_features(encoder, volume_store, tmp_path / "x", rows=[10], progress=False)
    with pytest.raises(ConfigError, match="batch_size"):
        extract_features(encoder, volume_store, tmp_path / "x", batch_size=0, progress=False)
    assert not (tmp_path / "x").exists()


def test_slice_store_is_refused(encoder, tmp_path):
    from brainfm.preprocess.store import ShardedStore, ShardWriter

    with ShardWriter(tmp_path / "slices", (32, 32), "slice", {"t": 1}) as w:
        w.add({"subject": "a", "session": "0", "modality": "T1", "slice_index": 0, "blank": False},
              np.ones((32, 32), np.float32))
    with pytest.raises(InputError, match="volume store"):
        extract_features(encoder, ShardedStore(tmp_path / "slices"), tmp_path / "f", progress=False)


def test_store_records_the_resolved_precision(encoder, volume_store, tmp_path):
    from brainfm.device import resolve_precision

    a = extract_features(encoder, volume_store, tmp_path / "a", batch_size=16, precision="fp32", progress=False)
    assert a.meta["precision"] == "fp32" and a.meta["precision_requested"] == "fp32"
    b = extract_features(encoder, volume_store, tmp_path / "b", batch_size=16, precision="auto", progress=False)
    assert b.meta["precision_requested"] == "auto" and b.meta["precision"] == resolve_precision("auto", "cpu")
    reread = FeatureStore(tmp_path / "b")
    assert reread.meta["precision"] in ("fp32", "bf16")
