"""SliceEncoder2D: preprocessing against hand references, features against a manual timm forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainfm.errors import ConfigError
from brainfm.models import create_encoder
from brainfm.models.vit import build_slice_encoder


def _manual_tokens(vit, x, take=()):
    """Eva forward written out block by block; returns (final normed tokens, {block: normed tokens})."""
    t = vit.patch_embed(x)
    t, rope = vit._pos_embed(t)
    t = vit.norm_pre(t)
    kept = {}
    for i, blk in enumerate(vit.blocks):
        t = blk(t, rope=rope)
        if i in take:
            kept[i] = vit.norm(t)
    return vit.norm(t), kept


def test_preprocess_resize_is_bilinear_half_pixel(tiny):
    enc = create_encoder("vit_random", **tiny)  # img_size 32
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(5, 64, 64)).astype(np.float32)
    x = enc.preprocess(torch.from_numpy(vol))
    assert x.shape == (5, 3, 32, 32) and x.dtype == torch.float32
    # exact 2x downsampling with half-pixel centres samples at 2i + 0.5: the mean of each 2x2 block
    ref = vol.reshape(5, 32, 2, 32, 2).mean(axis=(2, 4))
    for c in range(3):
        np.testing.assert_allclose(x[:, c].numpy(), ref, atol=1e-6)
    same = rng.normal(size=(2, 32, 32)).astype(np.float32)
    assert torch.equal(enc.preprocess(same), torch.from_numpy(same)[:, None].expand(-1, 3, -1, -1))


def test_adjacent_stacking_and_imagenet_normalisation(tiny):
    vol = torch.arange(4, dtype=torch.float32)[:, None, None].expand(4, 32, 32).clone()  # slice k == k
    adj = build_slice_encoder(tiny["arch"], img_size=32, embed_dim=64, depth=1, num_heads=2, stacking="adjacent")
    got = adj.preprocess(vol)[:, :, 0, 0]
    assert got.tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]  # clamped at the ends
    adj2 = build_slice_encoder(tiny["arch"], img_size=32, embed_dim=64, depth=1, num_heads=2, stacking="adjacent",
                               stack_step=2)
    assert adj2.preprocess(vol)[:, :, 0, 0].tolist() == [[0, 0, 2], [0, 1, 3], [0, 2, 3], [1, 3, 3]]
    norm = build_slice_encoder(tiny["arch"], img_size=32, embed_dim=64, depth=1, num_heads=2, normalize="imagenet")
    px = norm.preprocess(torch.ones(1, 32, 32))[0, :, 0, 0]
    expect = [(1 - m) / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
    np.testing.assert_allclose(px.numpy(), expect, rtol=1e-6)


def test_bad_construction_arguments(tiny):
    with pytest.raises(ConfigError, match="multiple of the patch size"):
        create_encoder("vit_random", **dict(tiny, img_size=40))
    with pytest.raises(ConfigError, match="stacking"):
        create_encoder("vit_random", stacking="sideways", **tiny)
    with pytest.raises(ConfigError, match="unsupported ViT arch") as err:
        create_encoder("vit_random", **dict(tiny, arch="resnet50"))
    assert "vit_base_patch16_dinov3" in str(err.value)


def test_features_match_a_manual_forward(tiny, perturb, images):
    enc = create_encoder("vit_random", **tiny)
    perturb(enc.model)
    x = images(3)
    with torch.no_grad():
        out = enc.forward_features(x, layers=[1, 0, "block1", -2], return_patch=True)
        final, kept = _manual_tokens(enc.model, x, take=(0, 1))
        logits_free = enc.model(x)  # timm forward with token pooling, no head
    assert out["cls"].shape == (3, 64)
    torch.testing.assert_close(out["cls"], final[:, 0], rtol=0, atol=1e-5)
    torch.testing.assert_close(out["cls"], logits_free, rtol=0, atol=1e-5)
    npt = enc.num_prefix_tokens
    assert npt == 5  # CLS + 4 registers
    torch.testing.assert_close(out["patch"], final[:, npt:].reshape(3, 2, 2, 64), rtol=0, atol=1e-5)
    assert len(out["layers"]) == 4  # order and repeats as asked
    for got, blk in zip(out["layers"], (1, 0, 1, 0)):
        torch.testing.assert_close(got, kept[blk][:, 0], rtol=0, atol=1e-5)
    torch.testing.assert_close(out["layers"][0], out["cls"], rtol=0, atol=1e-6)  # last block == final CLS
    assert not torch.allclose(out["layers"][1], out["cls"], atol=1e-3)


def test_slices_are_independent_of_batch_composition(tiny, perturb, images):
    enc = create_encoder("vit_random", **tiny)
    perturb(enc.model)
    x = images(6)
    with torch.no_grad():
        full = enc.forward_features(x)["cls"]
        single = torch.cat([enc.forward_features(x[i:i + 1])["cls"] for i in range(6)])
    torch.testing.assert_close(full, single, rtol=0, atol=1e-5)


def test_dinov2_family_with_adjacent_stacking(images):
    enc = create_encoder("vit_random", arch="vit_small_patch14_dinov2", embed_dim=64, depth=2, num_heads=2,
                         img_size=28, stacking="adjacent")
    assert enc.layer_names == ["block0", "block1"] and enc.patch_size == 14
    vol = torch.randn(4, 56, 56)
    x = enc.preprocess(vol)
    assert x.shape == (4, 3, 28, 28)
    with torch.no_grad():
        out = enc.forward_features(x, layers=[1], return_patch=True)
    assert out["cls"].shape == (4, 64) and out["patch"].shape == (4, 2, 2, 64)
    torch.testing.assert_close(out["layers"][0], out["cls"], rtol=0, atol=1e-6)


def test_describe_is_json_able(tiny):
    import json

    d = create_encoder("vit_random", **tiny).describe()
    json.dumps(d)
    assert d["embed_dim"] == 64 and d["input_kind"] == "slices2d" and d["config"]["arch"] == tiny["arch"]
    assert d["config"]["img_size"] == 32 and d["layer_names"] == ["block0", "block1"]
