"""BrainMVP UniFormer-S: released pretraining checkpoint, stem adaptation, attention maths, axis protocols."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from brainfm.errors import CheckpointError, ConfigError
from brainfm.models import create_encoder
from brainfm.models.baselines.brainmvp import Attention, UniFormer3D

TINY = dict(img_size=32, depth=(1, 1, 2, 1), embed_dim=(8, 16, 32, 32), head_dim=16)
NET_TINY = dict(depth=(1, 1, 2, 1), embed_dim=(8, 16, 32, 32), head_dim=16)


def perturb_(module: nn.Module, seed: int = 1, scale: float = 0.05) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, t in module.state_dict().items():
            if t.is_floating_point():
                t.add_(torch.randn(t.shape, generator=g) * scale)
                if k.endswith("running_var"):
                    t.abs_().add_(0.5)
    return module.eval()


def pretraining_checkpoint(net: nn.Module) -> dict:
    """``main.py``'s checkpoint of the DDP-wrapped ``RecModel`` (encoder.uniformer + decoder + templates)."""
    state = {f"module.encoder.uniformer.{k}": v for k, v in net.state_dict().items()}
    state["module.decoder.out_1.conv.conv.weight"] = torch.randn(1, 8, 1, 1, 1)
    state["module.rep_template"] = torch.zeros(8, 6, 6, 4)
    return {"current_epoch": 1500, "state_dict": state, "val_best": 0.25,
            "optimizer": {"state": {}, "param_groups": [{"lr": 3e-4, "params": [0, 1]}]},
            "scheduler": {"last_epoch": 1500, "base_lrs": [3e-4]}}


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    torch.manual_seed(0)
    net = perturb_(UniFormer3D(in_chans=1, **NET_TINY))
    path = tmp_path_factory.mktemp("mvp") / "BrainMVP_uniformer.pt"
    torch.save(pretraining_checkpoint(net), path)
    return path, net


def test_pretraining_checkpoint_loads_like_the_downstream_loader(released) -> None:
    path, net = released
    enc = create_encoder("brainmvp", weights=path, **TINY)
    info = enc.weights_info
    assert info["ignored"] == ["decoder.out_1.conv.conv.weight", "rep_template"]
    assert (info["format"], info["layout"]) == ("brainmvp_recmodel", "BrainMVP RecModel")
    assert info["stripped_prefixes"] == {"module.": len(net.state_dict()) + 2}
    own = enc.net.state_dict()
    assert all(torch.equal(own[k], v) for k, v in net.state_dict().items())
    x = torch.randn(2, 1, 32, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        stages = net(x)
        out = enc.forward_features(x, layers=["stage1", 3], return_patch=True)
    torch.testing.assert_close(out["cls"], stages[-1].mean(dim=(2, 3, 4)))
    torch.testing.assert_close(out["layers"][0], stages[0].mean(dim=(2, 3, 4)))
    torch.testing.assert_close(out["layers"][1], out["cls"])
    assert [s.shape[1:] for s in stages] == [(8, 16, 16, 16), (16, 8, 8, 8), (32, 4, 4, 4), (32, 2, 2, 2)]
    assert out["patch"].shape == (2, 2, 2, 2, 32)


def test_bare_uniformer_state_dict_and_strictness(released, tmp_path) -> None:
    path, net = released
    bare = tmp_path / "BrainMVP.pt"
    torch.save(net.state_dict(), bare)
    assert create_encoder("brainmvp", weights=bare, **TINY).weights_info["layout"] == "UniFormer"
    state = dict(net.state_dict())
    del state["blocks3.1.attn.qkv.bias"]
    p = tmp_path / "missing.pt"
    torch.save({"state_dict": {f"module.encoder.uniformer.{k}": v for k, v in state.items()}}, p)
    with pytest.raises(CheckpointError, match="blocks3.1.attn.qkv.bias") as err:
        create_encoder("brainmvp", weights=p, **TINY)
    assert "recognised layout: BrainMVP RecModel" in str(err.value)
    extra = tmp_path / "extra.pt"
    torch.save({**net.state_dict(), "head.weight": torch.zeros(2, 32)}, extra)
    with pytest.raises(CheckpointError, match="head.weight"):
        create_encoder("brainmvp", weights=extra, **TINY)
    with pytest.raises(CheckpointError, match="shape"):  # another width
        create_encoder("brainmvp", weights=bare, **{**TINY, "embed_dim": (8, 16, 32, 48)})


def test_stem_channel_mismatch_is_declared_explicitly(released) -> None:
    path, net = released
    with pytest.raises(CheckpointError, match="stem_mismatch"):
        create_encoder("brainmvp", weights=path, in_chans=4, **TINY)
    rein = create_encoder("brainmvp", weights=path, in_chans=4, stem_mismatch="reinit", seed=7, **TINY)
    fresh = create_encoder("brainmvp_scratch", in_chans=4, seed=7, **TINY)
    assert torch.equal(rein.net.patch_embed1.proj.weight, fresh.net.patch_embed1.proj.weight)  # seeded random stem
    assert "re-initialised" in rein.weights_info["stem"]
    rep = create_encoder("brainmvp", weights=path, in_chans=4, stem_mismatch="repeat", **TINY)
    one = create_encoder("brainmvp", weights=path, **TINY)
    vol = torch.randn(20, 24, 28, generator=torch.Generator().manual_seed(3))
    x4, x1 = rep.preprocess(vol), one.preprocess(vol)
    assert x4.shape == (1, 4, 32, 32, 32)
    with torch.no_grad():  # tiled kernel / 4 on 4 identical channels == the pretrained single-channel stem
        torch.testing.assert_close(rep.forward_features(x4)["cls"], one.forward_features(x1)["cls"], atol=1e-5,
                                   rtol=1e-5)
    with pytest.raises(ConfigError):
        create_encoder("brainmvp", weights=path, stem_mismatch="ignore", **TINY)


def test_attention_is_softmax_attention() -> None:
    torch.manual_seed(0)
    att = Attention(32, num_heads=4).eval()
    x = torch.randn(2, 10, 32)
    q, k, v = att.qkv(x).reshape(2, 10, 3, 4, 8).permute(2, 0, 3, 1, 4)
    w = torch.softmax(q @ k.transpose(-2, -1) * 8 ** -0.5, dim=-1)
    expect = att.proj((w @ v).transpose(1, 2).reshape(2, 10, 32))
    with torch.no_grad():
        torch.testing.assert_close(att(x), expect.detach(), atol=1e-5, rtol=1e-5)


def test_input_permute_and_protocol_grids() -> None:
    native = create_encoder("brainmvp_scratch", **TINY)
    assert native.input_perm == (1, 2, 0) and native.grid_axes == (0, 1, 2)  # network sees (z, x, y) after its permute
    dino = create_encoder("brainmvp_scratch", protocol="braindino", **{**TINY, "img_size": (32, 48, 64)})
    assert dino.grid_axes == (2, 0, 1)  # BrainDINO's (z, x, y) input ends up (y, z, x) inside
    vol = torch.randn(40, 48, 64)
    x = dino.preprocess(vol)
    assert x.shape == (1, 1, 32, 48, 64)
    with torch.no_grad():
        stages = dino.net(x)
        out = dino.forward_features(x, return_patch=True)
    assert stages[-1].shape[2:] == (4, 2, 3)  # (y, z, x) / 16
    assert out["patch"].shape == (1, 2, 3, 4, 32)  # canonical (z, x, y) / 16
    assert create_encoder("brainmvp_scratch", protocol="braindino", **NET_TINY).img_size == (128, 224, 224)


def test_full_size_uniformer_small_key_layout() -> None:
    enc = create_encoder("brainmvp_scratch")
    own = {k: tuple(v.shape) for k, v in enc.net.state_dict().items()}
    assert len(own) == 329 and enc.embed_dim == 512 and enc.img_size == (128, 128, 128)
    dims = (64, 128, 320, 512)
    for i, (c_in, c) in enumerate(zip((1,) + dims[:3], dims), start=1):
        assert own[f"patch_embed{i}.proj.weight"] == (c, c_in, 2, 2, 2)
        assert own[f"patch_embed{i}.norm.weight"] == (c,)
    assert own["blocks1.2.attn.weight"] == (64, 1, 5, 5, 5) and own["blocks1.2.norm1.running_var"] == (64,)
    assert own["blocks2.3.mlp.fc1.weight"] == (512, 128, 1, 1, 1)
    assert own["blocks2.3.pos_embed.weight"] == (128, 1, 3, 3, 3)
    assert own["blocks3.7.attn.qkv.weight"] == (960, 320) and own["blocks3.7.attn.qkv.bias"] == (960,)
    assert own["blocks4.2.attn.proj.weight"] == (512, 512) and own["blocks4.2.mlp.fc2.weight"] == (512, 2048)
    assert own["norm.running_mean"] == (512,)
    assert "blocks4.3.norm1.weight" not in own and "blocks3.8.attn.qkv.weight" not in own
    assert [blk.attn.num_heads for blk in enc.net.blocks3][:1] == [5] and enc.net.blocks4[0].attn.num_heads == 8
    assert isinstance(enc.net.blocks3[0].norm1, nn.LayerNorm) and enc.net.blocks3[0].norm1.eps == 1e-6
