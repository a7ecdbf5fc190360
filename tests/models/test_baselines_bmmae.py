"""BM-MAE encoder: raw released state dict, lowercase tokenizers, features vs a MONAI ViT reference."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import ViT
from torch import nn

from brainfm.errors import CheckpointError, ConfigError
from brainfm.models import create_encoder
from brainfm.models.baselines.bmmae import BMMAE_MODALITIES, BMMAEViT, bmmae_key

pytestmark = pytest.mark.filterwarnings("ignore:torch.meshgrid:UserWarning")  # MONAI sin-cos embedding

TINY = dict(img_size=32, hidden_size=36, mlp_dim=48, num_layers=3, num_heads=2)
NET_TINY = dict(img_size=(32, 32, 32), hidden_size=36, mlp_dim=48, num_layers=3, num_heads=2)


def perturb_(module: nn.Module, seed: int = 1, scale: float = 0.05) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in module.state_dict().values():
            if t.is_floating_point():
                t.add_(torch.randn(t.shape, generator=g) * scale)
    return module.eval()


def released_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """``BMMAE.state_dict()`` as pretraining saves it under MONAI 1.3: encoder keys + MAE decoder, no dead keys."""
    state = {k: v for k, v in net.state_dict().items() if "cross_attn" not in k}
    state.update({"decoder.mask_tokens": torch.randn(1, 1, 12), "decoder.decoder_embed.weight": torch.randn(12, 36),
                  "decoder.blocks.0.norm1.weight": torch.randn(12)})
    return state


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    torch.manual_seed(0)
    net = perturb_(BMMAEViT(**NET_TINY))
    path = tmp_path_factory.mktemp("bmmae") / "bmmae.pth"
    torch.save(released_state(net), path)
    return path, net


def monai_reference(net: BMMAEViT, modality: str) -> ViT:
    """MONAI's own ViT (CLS token, sin-cos embedding, qkv bias) carrying one BM-MAE tokenizer and the blocks."""
    ref = ViT(in_channels=1, img_size=(32,) * 3, patch_size=16, hidden_size=36, mlp_dim=48, num_layers=3,
              num_heads=2, pos_embed_type="sincos", classification=True, qkv_bias=True).eval()
    src = net.state_dict()
    mapped = {k: v for k, v in src.items() if k.startswith(("blocks.", "norm.")) or k == "cls_token"}
    prefix = f"tokenizers.{modality}."
    mapped.update({k[len(prefix):]: v for k, v in src.items() if k.startswith(prefix)})
    missing, unexpected = ref.load_state_dict(mapped, strict=False)
    assert not unexpected and all(k.startswith("classification_head") for k in missing)
    return ref


@pytest.mark.parametrize("modality", ["t1", "flair"])
def test_released_state_dict_loads_and_cls_matches_monai_vit(released, modality: str) -> None:
    path, net = released
    enc = create_encoder("bmmae", weights=path, modalities=modality, **TINY)
    assert sorted(enc.weights_info["declared_unexpected"]) == ["decoder.blocks.0.norm1.weight",
                                                               "decoder.decoder_embed.weight", "decoder.mask_tokens"]
    assert (enc.weights_info["format"], enc.weights_info["layout"]) == ("bmmae_raw", "BM-MAE raw")
    ref = monai_reference(net, modality)
    x = torch.randn(2, 1, 32, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        _, hidden = ref(x)
        out = enc.forward_features(x, layers=[0, 2], return_patch=True)
    torch.testing.assert_close(out["cls"], ref.norm(hidden[-1])[:, 0])
    torch.testing.assert_close(out["layers"][0], ref.norm(hidden[0])[:, 0])
    torch.testing.assert_close(out["layers"][1], out["cls"])
    assert out["patch"].shape == (2, 2, 2, 2, 36)


def test_two_modalities_concatenate_tokens_like_vitencoder(released) -> None:
    path, net = released
    enc = create_encoder("bmmae", weights=path, modalities=("t1", "flair"), **TINY)
    x = torch.randn(1, 2, 32, 32, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        h = torch.cat([net.cls_token, net.tokenizers["t1"](x[:, :1]), net.tokenizers["flair"](x[:, 1:])], dim=1)
        for blk in net.blocks:
            h = blk(h)
        expect = net.norm(h)[:, 0]
        torch.testing.assert_close(enc.forward_features(x)["cls"], expect)
        single = create_encoder("bmmae", weights=path, modalities="t1", **TINY)
        assert not torch.allclose(single.forward_features(x[:, :1])["cls"], expect)
        with pytest.raises(ValueError, match="channel"):
            single.forward_features(x)


def test_uppercase_or_unknown_modality_is_an_error_not_a_random_tokenizer(released, tmp_path) -> None:
    path, net = released
    with pytest.raises(ConfigError, match="'t1'"):
        create_encoder("bmmae", weights=path, modalities="T1", **TINY)
    with pytest.raises(ConfigError, match="'t1ce'"):
        create_encoder("bmmae", weights=path, modalities="T1c", **TINY)
    assert [bmmae_key(m) for m in ("T1", "T1c", "T2", "FLAIR")] == list(BMMAE_MODALITIES)
    with pytest.raises(ConfigError):
        bmmae_key("DWI")
    # a file whose tokenizers are named in upper case does not load into the lowercase model
    state = {k.replace("tokenizers.t1.", "tokenizers.T1."): v for k, v in torch.load(path, weights_only=True).items()}
    upper = tmp_path / "upper.pth"
    torch.save(state, upper)
    with pytest.raises(CheckpointError) as err:
        create_encoder("bmmae", weights=upper, **TINY)
    assert "tokenizers.T1.patch_embedding" in str(err.value) and "tokenizers.t1.patch_embedding" in str(err.value)
    assert "recognised layout: BM-MAE raw; bare state dict" in str(err.value)


def test_missing_tokenizers_need_declaring_and_decoder_only_is_ignored(released, tmp_path) -> None:
    path, _ = released
    state = torch.load(path, weights_only=True)
    three = {k: v for k, v in state.items() if not k.startswith("tokenizers.flair.")}
    p3 = tmp_path / "three.pth"
    torch.save(three, p3)
    with pytest.raises(CheckpointError, match="tokenizers.flair"):
        create_encoder("bmmae", weights=p3, **TINY)
    enc = create_encoder("bmmae", weights=p3, tokenizers=("t1", "t1ce", "t2"), modalities="t2", **TINY)
    assert set(enc.net.tokenizers) == {"t1", "t1ce", "t2"}
    with pytest.raises(ConfigError, match="flair"):
        create_encoder("bmmae", weights=p3, tokenizers=("t1", "t1ce", "t2"), modalities="flair", **TINY)
    # an unknown non-decoder key is not silently dropped
    extra = tmp_path / "extra.pth"
    torch.save({**state, "head.weight": torch.zeros(2, 36)}, extra)
    with pytest.raises(CheckpointError, match="head.weight"):
        create_encoder("bmmae", weights=extra, **TINY)


def test_monai_14_layout_with_cross_attention_keys_loads(released, tmp_path) -> None:
    path, net = released
    state = torch.load(path, weights_only=True)
    dead = {}
    for i in range(3):
        dead[f"blocks.{i}.norm_cross_attn.weight"] = torch.ones(36)
        dead[f"blocks.{i}.cross_attn.to_q.weight"] = torch.randn(36, 36)
    p = tmp_path / "monai14.pth"
    torch.save({**state, **dead}, p)
    enc = create_encoder("bmmae", weights=p, **TINY)
    x = torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        a = enc.forward_features(x)["cls"]
        b = create_encoder("bmmae", weights=path, **TINY).forward_features(x)["cls"]
    torch.testing.assert_close(a, b)  # the cross-attention keys are dead: same features


def test_full_size_key_layout_and_braindino_protocol() -> None:
    enc = create_encoder("bmmae_scratch")
    own = {k: tuple(v.shape) for k, v in enc.net.state_dict().items() if "cross_attn" not in k}
    expect = {"cls_token": (1, 1, 768), "norm.weight": (768,), "norm.bias": (768,)}
    for m in ("t1", "t1ce", "t2", "flair"):
        p = f"tokenizers.{m}.patch_embedding."
        expect.update({p + "position_embeddings": (1, 512, 768), p + "patch_embeddings.weight": (768, 1, 16, 16, 16),
                       p + "patch_embeddings.bias": (768,)})
    for i in range(12):
        b = f"blocks.{i}."
        expect.update({b + "mlp.linear1.weight": (1536, 768), b + "mlp.linear1.bias": (1536,),
                       b + "mlp.linear2.weight": (768, 1536), b + "mlp.linear2.bias": (768,),
                       b + "norm1.weight": (768,), b + "norm1.bias": (768,), b + "norm2.weight": (768,),
                       b + "norm2.bias": (768,), b + "attn.qkv.weight": (2304, 768), b + "attn.qkv.bias": (2304,),
                       b + "attn.out_proj.weight": (768, 768), b + "attn.out_proj.bias": (768,)})
    assert own == expect
    assert enc.modalities == ("t1",) and enc.img_size == (128, 128, 128) and enc.embed_dim == 768
    dino = create_encoder("bmmae_scratch", protocol="braindino", **TINY)
    vol = torch.randn(20, 24, 28)
    torch.testing.assert_close(dino.preprocess(vol),
                               torch.nn.functional.interpolate(vol[None, None], size=(32, 32, 32), mode="trilinear",
                                                               align_corners=False))


def test_auto_modalities_feed_each_sequence_through_its_own_tokenizer(released, tmp_path):
    """The paper config's BM-MAE: a FLAIR volume uses the flair tokenizer, a T1c volume the t1ce one."""
    import numpy as np
    import pandas as pd

    from brainfm.features import extract_features

    path, _ = released
    g = torch.Generator().manual_seed(0)
    vols = [torch.randn(16, 24, 24, generator=g).abs() for _ in range(2)]
    items = [(m, v) for v in vols for m in ("T1", "T1c", "FLAIR")]

    class Store:
        index = pd.DataFrame({"subject": [f"s{i // 3}" for i in range(6)], "session": "0",
                              "modality": [m for m, _ in items]})

        def __getitem__(self, i):
            return items[i][1].numpy()

    auto = create_encoder("bmmae", weights=path, modalities="auto", **TINY)
    got = extract_features(auto, Store(), tmp_path / "auto", volume_batch=4, progress=False).cls
    for i, (m, v) in enumerate(items):
        single = create_encoder("bmmae", weights=path, modalities=bmmae_key(m), **TINY)
        with torch.no_grad():
            ref = single.forward_features(single.preprocess(v))["cls"][0].numpy()
        np.testing.assert_allclose(got[i], ref, rtol=1e-4, atol=1e-5)
    assert not np.allclose(got[0], got[2], atol=1e-4)  # same image, T1 vs FLAIR tokenizer
    assert auto.config["modalities"] == "auto"
