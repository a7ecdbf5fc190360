"""BrainIAC v1 / v2 / SimCLR encoders: released checkpoint layouts, strict loading, features vs MONAI references."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from monai.networks.nets import ViT, resnet50
from torch import nn

from brainfm.errors import CheckpointError
from brainfm.models import create_encoder

V2_TINY = dict(img_size=32, hidden_size=36, mlp_dim=48, num_layers=3, num_heads=2)


def perturb_(module: nn.Module, seed: int = 1, scale: float = 0.05) -> nn.Module:
    """Seeded noise on every float tensor (running stats too) so that no weight is trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, t in module.state_dict().items():
            if t.is_floating_point():
                t.add_(torch.randn(t.shape, generator=g) * scale)
                if k.endswith("running_var"):
                    t.abs_().add_(0.5)
    return module.eval()


class UpstreamResNet50_3D(nn.Module):
    """Built the way BrainIAC v1's ``model.py::ResNet50_3D`` builds it (MONAI resnet50, new stem, fc=Identity)."""

    def __init__(self) -> None:
        super().__init__()
        net = resnet50(pretrained=False)
        net.conv1 = nn.Conv3d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        net.fc = nn.Identity()
        self.backbone = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


def upstream_vit(**kw) -> ViT:
    """BrainIAC v2's ``ViTBackboneNet`` backbone arguments (sizes shrunk for speed)."""
    return ViT(in_channels=1, img_size=(kw["img_size"],) * 3, patch_size=(16,) * 3, hidden_size=kw["hidden_size"],
               mlp_dim=kw["mlp_dim"], num_layers=kw["num_layers"], num_heads=kw["num_heads"], save_attn=True)


def lightning_ckpt(state: dict, heads: dict) -> dict:
    """A Lightning-style checkpoint: the module's state dict plus training metadata."""
    return {"epoch": 199, "global_step": 12000, "pytorch-lightning_version": "2.3.3", "state_dict": {**state, **heads},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]}]}


@pytest.fixture(scope="module")
def v2_file(tmp_path_factory):
    """A v2 ``BrainIAC.ckpt`` as MONAI 1.3.2 writes it: no cross-attention keys, ``backbone.`` prefix, head."""
    ref = perturb_(upstream_vit(**V2_TINY))
    state = {f"backbone.{k}": v for k, v in ref.state_dict().items() if "cross_attn" not in k}
    path = tmp_path_factory.mktemp("v2") / "BrainIAC.ckpt"
    torch.save(lightning_ckpt(state, {"projection_head.0.weight": torch.randn(8, 36)}), path)
    return path, ref


# ----------------------------------------------------------------------------- v1
def test_v1_released_layout_loads_and_matches_upstream_model(tmp_path) -> None:
    ref = perturb_(UpstreamResNet50_3D())
    heads = {"projection_head.0.weight": torch.randn(16, 2048), "projection_head.0.bias": torch.randn(16)}
    path = tmp_path / "brainiac_v1.ckpt"
    torch.save(lightning_ckpt(ref.state_dict(), heads), path)
    enc = create_encoder("brainiac_v1", weights=path, img_size=32)
    assert enc.embed_dim == 2048 and enc.layer_names == ["layer1", "layer2", "layer3", "layer4"]
    assert enc.weights_info["ignored"] == sorted(heads)
    assert (enc.weights_info["format"], enc.weights_info["layout"]) == ("lightning", "Lightning")
    x = torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = enc.forward_features(x, layers=["layer2", 3])
        expect = ref(x)
    torch.testing.assert_close(out["cls"], expect, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["layers"][1], out["cls"])
    assert out["layers"][0].shape == (1, 512)

    # the same encoder refuses files that miss keys or hold a 'backbone' key outside 'backbone.'
    bad = tmp_path / "missing.ckpt"
    torch.save(lightning_ckpt({"backbone.conv1.weight": ref.backbone.conv1.weight.detach()}, heads), bad)
    with pytest.raises(CheckpointError) as err:
        enc.load_weights(bad)
    msg = str(err.value)
    assert str(bad) in msg and "missing key" in msg and "bn1.weight" in msg and "BrainIAC v1" in msg
    assert "recognised layout: Lightning; Lightning checkpoint {'state_dict': ...}" in msg
    nested = tmp_path / "nested.ckpt"
    torch.save(lightning_ckpt({"model.backbone.conv1.weight": ref.backbone.conv1.weight.detach()}, {}), nested)
    with pytest.raises(CheckpointError, match="model.backbone.conv1.weight"):
        enc.load_weights(nested)


# ----------------------------------------------------------------------------- v2
def test_v2_released_layout_first_token_matches_monai_vit(v2_file) -> None:
    path, ref = v2_file
    enc = create_encoder("brainiac", weights=path, **V2_TINY)
    info = enc.weights_info
    assert info["ignored"] == ["projection_head.0.weight"]
    assert (info["format"], info["layout"]) == ("lightning", "Lightning")
    assert info["container"] == "Lightning checkpoint {'state_dict': ...}"
    assert all("norm_cross_attn" in k for k in info["declared_missing"])  # MONAI >= 1.4 dead keys only
    x = torch.randn(2, 1, 32, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        final, hidden = ref(x)
        out = enc.forward_features(x, layers=[0, "block2"], return_patch=True)
    torch.testing.assert_close(out["cls"], final[:, 0])  # BrainIAC's "CLS" = first patch token
    torch.testing.assert_close(out["layers"][0], ref.norm(hidden[0])[:, 0])
    torch.testing.assert_close(out["layers"][1], out["cls"])
    assert out["patch"].shape == (2, 2, 2, 2, 36)
    # patch grid back in network order is the token sequence
    net_grid = out["patch"].permute(0, 2, 3, 1, 4)  # canonical (z, x, y) -> network (x, y, z)
    torch.testing.assert_close(net_grid.reshape(2, 8, 36), final)
    mean_enc = create_encoder("brainiac", weights=path, pool="mean", **V2_TINY)
    with torch.no_grad():
        torch.testing.assert_close(mean_enc.forward_features(x)["cls"], final.mean(dim=1))


def test_v2_accepts_monai_14_dead_keys_and_bare_state_but_not_unknown_keys(v2_file, tmp_path) -> None:
    path, ref = v2_file
    state = torch.load(path, weights_only=True)["state_dict"]
    dead = {f"backbone.blocks.{i}.cross_attn.to_q.weight": torch.randn(36, 36) for i in range(3)}
    p14 = tmp_path / "monai14.ckpt"
    torch.save({"state_dict": {**state, **dead}}, p14)
    enc = create_encoder("brainiac", weights=p14, **V2_TINY)
    assert set(enc.weights_info["declared_unexpected"]) == {k[len("backbone."):] for k in dead}

    bare = tmp_path / "bare.pth"
    torch.save({k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}, bare)
    info = create_encoder("brainiac", weights=bare, **V2_TINY).weights_info
    assert (info["format"], info["layout"], info["container"]) == ("monai", "MONAI", "bare state dict")

    extra = tmp_path / "extra.ckpt"
    torch.save({"state_dict": {**state, "backbone.blocks.0.attn.rel_pos": torch.zeros(3)}}, extra)
    with pytest.raises(CheckpointError, match="blocks.0.attn.rel_pos"):
        create_encoder("brainiac", weights=extra, **V2_TINY)


def test_v2_wrong_architecture_corrupt_and_nonfinite_files(v2_file, tmp_path) -> None:
    path, _ = v2_file
    with pytest.raises(CheckpointError, match="shape"):
        create_encoder("brainiac", weights=path, **{**V2_TINY, "hidden_size": 48})
    with pytest.raises(CheckpointError, match="missing"):
        create_encoder("brainiac", weights=path, **{**V2_TINY, "num_layers": 4})
    with pytest.raises(CheckpointError):  # a v2 file is not a v1 ResNet
        create_encoder("brainiac_v1", weights=path, img_size=32)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.ckpt"):
        create_encoder("brainiac", weights=garbage, **V2_TINY)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.ckpt"):
        create_encoder("brainiac", weights=truncated, **V2_TINY)
    state = torch.load(path, weights_only=True)["state_dict"]
    state["backbone.norm.weight"] = torch.full_like(state["backbone.norm.weight"], float("nan"))
    nan = tmp_path / "nan.ckpt"
    torch.save({"state_dict": state}, nan)
    with pytest.raises(CheckpointError, match="non-finite"):
        create_encoder("brainiac", weights=nan, **V2_TINY)
    with pytest.raises(CheckpointError, match="not found"):
        create_encoder("brainiac", weights=tmp_path / "absent.ckpt", **V2_TINY)
    # pickled Python objects are never unpickled (weights_only=True); the message says how to strip them
    pickled = tmp_path / "hparams.ckpt"
    torch.save({"state_dict": state, "hyper_parameters": SimpleNamespace(lr=1e-4)}, pickled)
    with pytest.raises(CheckpointError, match="hparams.ckpt.*weights_only=False"):
        create_encoder("brainiac", weights=pickled, **V2_TINY)


def test_v2_full_size_key_layout() -> None:
    """Full BrainIAC v2 ViT: the MONAI 1.3.2 key set and shapes of ``BrainIAC.ckpt`` (+ declared dead keys)."""
    enc = create_encoder("brainiac_scratch")
    own = {k: tuple(v.shape) for k, v in enc.vit.state_dict().items() if "cross_attn" not in k}
    expect = {"patch_embedding.position_embeddings": (1, 216, 768),
              "patch_embedding.patch_embeddings.weight": (768, 1, 16, 16, 16),
              "patch_embedding.patch_embeddings.bias": (768,), "norm.weight": (768,), "norm.bias": (768,)}
    for i in range(12):
        b = f"blocks.{i}."
        expect.update({b + "mlp.linear1.weight": (3072, 768), b + "mlp.linear1.bias": (3072,),
                       b + "mlp.linear2.weight": (768, 3072), b + "mlp.linear2.bias": (768,),
                       b + "norm1.weight": (768,), b + "norm1.bias": (768,), b + "norm2.weight": (768,),
                       b + "norm2.bias": (768,), b + "attn.qkv.weight": (2304, 768),
                       b + "attn.out_proj.weight": (768, 768), b + "attn.out_proj.bias": (768,)})
    assert own == expect
    assert enc.embed_dim == 768 and len(enc.layer_names) == 12 and enc.img_size == (96, 96, 96)
    assert enc.cka_layers == (2, 6, 11)  # the paper's early / mid / late blocks


# ----------------------------------------------------------------------------- SimCLR export (our recipe)
def test_simclr_export_roundtrip_and_metadata_checks(tmp_path) -> None:
    from brainfm.ssl.export import export_resnet3d
    from brainfm.ssl.simclr import build_resnet3d

    backbone = perturb_(build_resnet3d("resnet10", conv1_stride=2))
    path = tmp_path / "weights.pth"
    export_resnet3d(backbone, path, SimpleNamespace(arch="resnet10", conv1_stride=2))
    enc = create_encoder("brainiac_simclr", weights=path, arch="resnet10", img_size=32)
    assert enc.embed_dim == 512 and enc.input_perm == (0, 1, 2)  # trained on canonical store volumes
    assert enc.weights_info["layout"] == "brainfm SimCLR export"
    vol = torch.randn(20, 24, 28, generator=torch.Generator().manual_seed(2))
    x = enc.preprocess(vol)
    torch.testing.assert_close(x, torch.nn.functional.interpolate(vol[None, None], size=(32, 32, 32),
                                                                  mode="trilinear", align_corners=False))
    with torch.no_grad():
        torch.testing.assert_close(enc.forward_features(x)["cls"], backbone(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(CheckpointError, match="conv1_stride"):
        create_encoder("brainiac_simclr", weights=path, arch="resnet10", conv1_stride=1, img_size=32)
    with pytest.raises(CheckpointError, match="arch"):
        create_encoder("brainiac_simclr", weights=path, arch="resnet18", img_size=32)
