"""Checkpoint formats: round trips give identical features; every key, shape and file problem is caught."""

from __future__ import annotations

import hashlib
import os
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from brainfm.errors import CheckpointError, ConfigError
from brainfm.models import create_encoder, export_dinov3_teacher, export_timm, load_encoder_weights
from brainfm.models.checkpoint import dinov3_to_timm


def _feats(enc, x):
    with torch.no_grad():
        out = enc.forward_features(x, layers=[0], return_patch=True)
    return out["cls"], out["layers"][0], out["patch"]


def _same(a, b):
    return all(torch.equal(u, v) for u, v in zip(_feats(a, X), _feats(b, X)))


X = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("which", ["tiny", "tiny_qkvb"])
def test_teacher_and_timm_exports_round_trip_exactly(which, request, perturb, tmp_path):
    kw = request.getfixturevalue(which)
    src = create_encoder("vit_random", **kw)
    perturb(src.model)
    heads = {"dino_head": torch.nn.Linear(64, 7), "ibot_head": {"w": torch.randn(3)}}
    info = export_dinov3_teacher(src, tmp_path / "teacher.pth", heads=heads)
    raw = torch.load(tmp_path / "teacher.pth", weights_only=True)["teacher"]
    assert "backbone.storage_tokens" in raw and "backbone.blocks.0.ls1.gamma" in raw
    assert "dino_head.weight" in raw and "ibot_head.w" in raw
    if which == "tiny_qkvb":
        assert raw["backbone.blocks.0.attn.qkv.bias_mask"].tolist() == [1.0] * 64 + [0.0] * 64 + [1.0] * 64
    assert info["sha256"] == hashlib.sha256((tmp_path / "teacher.pth").read_bytes()).hexdigest()

    dst = create_encoder("braindino", weights=tmp_path / "teacher.pth", **kw)
    assert _same(src, dst)
    assert dst.weights_info["format"] == "dinov3_teacher" and dst.weights_info["sha256"] == info["sha256"]
    assert "dino_head.weight" in dst.weights_info["ignored"] and "ibot_head.w" in dst.weights_info["ignored"]
    assert dst.weights_info["rope_periods"] == "checkpoint"

    export_timm(dst, tmp_path / "w.safetensors")
    st = load_file(str(tmp_path / "w.safetensors"))
    assert set(st) == set(src.model.state_dict())  # plain timm names
    again = create_encoder("dinov3", weights=tmp_path / "w.safetensors", **kw)
    assert _same(src, again) and again.weights_info["format"] == "timm"


def test_timm_pth_wrappers_and_ddp_prefix(tiny, perturb, tmp_path):
    src = create_encoder("vit_random", **tiny)
    perturb(src.model)
    sd = src.model.state_dict()
    variants = {"plain.pth": sd, "model.pt": {"model": sd, "epoch": 3}, "sd.pth": {"state_dict": sd},
                "ddp.pth": {"state_dict": {f"module.{k}": v for k, v in sd.items()}}}
    for name, obj in variants.items():
        torch.save(obj, tmp_path / name)
        dst = create_encoder("vit_dinov3", weights=tmp_path / name, **tiny)
        assert _same(src, dst), name


def test_native_dinov3_state_dict_matches_source_and_timm_converter(native_by_hand, tiny_qkvb, perturb, tmp_path):
    import timm
    from timm.models.eva import checkpoint_filter_fn

    src = create_encoder("vit_random", **tiny_qkvb)
    perturb(src.model)
    native = native_by_hand(src.model)
    torch.save(native, tmp_path / "native.pth")
    dst = create_encoder("dinov3", weights=tmp_path / "native.pth", **tiny_qkvb)
    assert dst.weights_info["format"] == "dinov3_native" and "mask_token" in dst.weights_info["ignored"]
    assert _same(src, dst)  # the hand-computed periods equal timm's, so the features are identical
    # brainfm's conversion is key-for-key and value-for-value what timm's own filter produces
    ref = timm.create_model(tiny_qkvb["arch"], pretrained=False, num_classes=0, embed_dim=64, depth=2,
                            num_heads=2, img_size=32)
    theirs = checkpoint_filter_fn(dict(native), ref)
    mine, _, _ = dinov3_to_timm(native, ref)
    assert set(theirs) == set(mine) and all(torch.equal(theirs[k], mine[k]) for k in mine)


def test_key_bias_masked_loads_unmasked_is_refused(native_by_hand, tiny_qkvb, perturb, tmp_path):
    """DINOv3's bias_mask zeroes the key bias; a live key bias matters under RoPE and timm cannot hold it."""
    src = create_encoder("vit_random", **tiny_qkvb)
    perturb(src.model)
    torch.save(native_by_hand(src.model, k_bias_seed=3, mask=True), tmp_path / "masked.pth")
    dst = create_encoder("dinov3", weights=tmp_path / "masked.pth", **tiny_qkvb)
    assert _same(src, dst)
    torch.save(native_by_hand(src.model, k_bias_seed=3, mask=False), tmp_path / "live.pth")
    with pytest.raises(CheckpointError, match="non-zero key bias"):
        create_encoder("dinov3", weights=tmp_path / "live.pth", **tiny_qkvb)
    # why it must be refused: the same source with that key bias switched on computes other features
    with torch.no_grad():
        for blk in src.model.blocks:
            blk.attn.k_bias.copy_(torch.randn(64, generator=torch.Generator().manual_seed(3)))
    assert not torch.allclose(_feats(src, X)[0], _feats(dst, X)[0], atol=1e-3)


def test_bf16_rounded_rope_periods_are_used(native_by_hand, tiny, perturb, tmp_path):
    src = create_encoder("vit_random", **tiny)
    perturb(src.model)
    native = native_by_hand(src.model)
    rounded = native["rope_embed.periods"].to(torch.bfloat16)
    native["rope_embed.periods"] = rounded  # what Meta's trainer stores with bf16 RoPE
    torch.save(native, tmp_path / "bf16.pth")
    dst = create_encoder("dinov3", weights=tmp_path / "bf16.pth", **tiny)
    assert torch.equal(dst.model.rope.periods, rounded.float())
    assert not _same(src, dst)
    with torch.no_grad():
        src.model.rope.periods.copy_(rounded.float())
    assert _same(src, dst)


def test_rope_base_mismatch_is_an_error(native_by_hand, tiny, tmp_path):
    native = native_by_hand(create_encoder("vit_random", **tiny).model)
    native["rope_embed.periods"] = native["rope_embed.periods"] ** 1.5  # a different RoPE base
    torch.save(native, tmp_path / "rope.pth")
    with pytest.raises(CheckpointError, match="RoPE base"):
        create_encoder("dinov3", weights=tmp_path / "rope.pth", **tiny)


def test_qkv_bias_into_bias_free_arch(native_by_hand, tiny, tiny_qkvb, perturb, tmp_path):
    src = create_encoder("vit_random", **tiny_qkvb)
    perturb(src.model)  # non-zero q/v biases
    torch.save(native_by_hand(src.model), tmp_path / "biased.pth")
    with pytest.raises(CheckpointError, match="_qkvb"):
        create_encoder("dinov3", weights=tmp_path / "biased.pth", **tiny)
    with torch.no_grad():
        for blk in src.model.blocks:
            blk.attn.q_bias.zero_()
            blk.attn.v_bias.zero_()
    torch.save(native_by_hand(src.model, k_bias_seed=1), tmp_path / "zero.pth")  # like Meta's distilled ViTs
    dst = create_encoder("dinov3", weights=tmp_path / "zero.pth", **tiny)
    assert "blocks.0.attn.qkv.bias" in dst.weights_info["ignored"]
    with torch.no_grad():
        a = src.forward_features(X)["cls"]
        b = dst.forward_features(X)["cls"]
    torch.testing.assert_close(a, b, rtol=0, atol=2e-5)


def test_uninitialised_bias_mask_is_rejected(native_by_hand, tiny_qkvb, tmp_path):
    native = native_by_hand(create_encoder("vit_random", **tiny_qkvb).model)
    native["blocks.0.attn.qkv.bias_mask"] = torch.full((192,), float("nan"))
    torch.save(native, tmp_path / "nanmask.pth")
    with pytest.raises(CheckpointError, match="bias_mask"):
        create_encoder("dinov3", weights=tmp_path / "nanmask.pth", **tiny_qkvb)


# ----------------------------------------------------------------------------- strictness
def test_missing_and_unexpected_keys_are_listed(tiny, tmp_path):
    sd = create_encoder("vit_random", **tiny).model.state_dict()
    broken = {k: v for k, v in sd.items() if not k.startswith("blocks.1.")}
    broken.update({f"extra.{i}": torch.zeros(1) for i in range(12)})
    path = tmp_path / "broken.pth"
    torch.save(broken, path)
    with pytest.raises(CheckpointError) as err:
        create_encoder("vit_dinov3", weights=path, **tiny)
    msg = str(err.value)
    assert str(path) in msg and "missing key" in msg and "blocks.1.attn.qkv.weight" in msg
    assert "12 unexpected key(s)" in msg and "extra.0" in msg and "(+2 more)" in msg
    # declared expectations make the same file load; the undeclared block stays at its initialisation
    enc = create_encoder("vit_dinov3", weights=path, expected_missing=("blocks.1.*",),
                         expected_unexpected=("extra.*",), **tiny)
    assert "blocks.1.mlp.fc1.weight" in enc.weights_info["declared_missing"]
    assert len(enc.weights_info["declared_unexpected"]) == 12


def test_shape_mismatch_is_an_error(tiny, tmp_path):
    other = create_encoder("vit_random", **dict(tiny, embed_dim=96, num_heads=2))
    torch.save(other.model.state_dict(), tmp_path / "wide.pth")
    with pytest.raises(CheckpointError, match="shape mismatch"):
        create_encoder("vit_dinov3", weights=tmp_path / "wide.pth", **tiny)


def test_non_finite_weights_are_rejected(tiny, tmp_path):
    sd = create_encoder("vit_random", **tiny).model.state_dict()
    sd["norm.weight"] = sd["norm.weight"].clone()
    sd["norm.weight"][0] = float("inf")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "inf.safetensors"))
    with pytest.raises(CheckpointError, match="non-finite"):
        create_encoder("vit_dinov3", weights=tmp_path / "inf.safetensors", **tiny)


class _Evil:
    def __reduce__(self):
        return (os.getcwd, ())


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_unreadable_files(tiny, tmp_path):
    enc = create_encoder("vit_random", **tiny)
    with pytest.raises(CheckpointError, match="not found"):
        load_encoder_weights(enc, tmp_path / "absent.pth")
    (tmp_path / "garbage.pth").write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_encoder_weights(enc, tmp_path / "garbage.pth")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_encoder_weights(enc, tmp_path / "garbage.safetensors")
    torch.save(enc.model.state_dict(), tmp_path / "good.pth")
    data = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_encoder_weights(enc, tmp_path / "truncated.pth")
    with open(tmp_path / "code.pth", "wb") as fh:  # a pickle that would run code: weights_only refuses it
        pickle.dump({"state_dict": _Evil()}, fh)
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_encoder_weights(enc, tmp_path / "code.pth")
    torch.save({"epoch": 3, "note": "no tensors"}, tmp_path / "notensors.pth")
    with pytest.raises(CheckpointError, match="no tensor state dict"):
        load_encoder_weights(enc, tmp_path / "notensors.pth")
    torch.save({"teacher": {"dino_head.w": torch.zeros(2)}}, tmp_path / "headsonly.pth")
    with pytest.raises(CheckpointError, match="no 'backbone"):
        load_encoder_weights(enc, tmp_path / "headsonly.pth")
    with pytest.raises(CheckpointError, match="teacher"):
        load_encoder_weights(enc, tmp_path / "good.pth", fmt="dinov3_teacher")
    with pytest.raises(ConfigError, match="unknown checkpoint format"):
        load_encoder_weights(enc, tmp_path / "good.pth", fmt="onnx")


def test_key_prefix_selects_a_submodule_and_reports_what_it_ignores(tiny, perturb, tmp_path, caplog):
    src = create_encoder("vit_random", **tiny)
    perturb(src.model)
    lightning = {"state_dict": {**{f"backbone.{k}": v for k, v in src.model.state_dict().items()},
                                "classifier.weight": torch.zeros(2, 64)}, "epoch": 9, "global_step": 90}
    torch.save(lightning, tmp_path / "lightning.ckpt")
    enc = create_encoder("vit_random", **tiny)
    with caplog.at_level("WARNING", logger="brainfm.models"):
        info = load_encoder_weights(enc, tmp_path / "lightning.ckpt", key_prefix="backbone.")
    assert info["ignored"] == ["classifier.weight"] and _same(src, enc)
    assert info["layout"] == "timm (Lightning checkpoint)" and info["container"].startswith("Lightning checkpoint")
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "classifier.weight" in warned[0] and "1 key(s) outside the backbone" in warned[0]
    with pytest.raises(CheckpointError, match="no keys under prefix 'encoder.'"):
        load_encoder_weights(enc, tmp_path / "lightning.ckpt", key_prefix="encoder.")


# ----------------------------------------------------------------------------- wrapper prefixes, layouts
def test_one_stray_key_among_ddp_prefixed_keys_is_reported_as_itself(tiny, perturb, tmp_path):
    src = create_encoder("vit_random", **tiny)
    perturb(src.model)
    sd = src.model.state_dict()
    ddp = {f"module.{k}": v for k, v in sd.items()}
    torch.save({"state_dict": {**ddp, "stray.weight": torch.zeros(3)}, "epoch": 1}, tmp_path / "stray.pth")
    with pytest.raises(CheckpointError) as err:
        create_encoder("vit_dinov3", weights=tmp_path / "stray.pth", **tiny)
    msg = str(err.value)
    assert msg.endswith("1 unexpected key(s): stray.weight") and "missing" not in msg
    assert f"'module.' removed from {len(sd)} key(s)" in msg
    # the same file loads once the stray key is declared, and a valid key without the prefix is itself
    enc = create_encoder("vit_dinov3", weights=tmp_path / "stray.pth", expected_unexpected=("stray.*",), **tiny)
    assert _same(src, enc) and enc.weights_info["stripped_prefixes"] == {"module.": len(sd)}
    mixed = {**ddp, "norm.weight": sd["norm.weight"]}
    del mixed["module.norm.weight"]
    torch.save(mixed, tmp_path / "mixed.pth")
    enc = create_encoder("vit_dinov3", weights=tmp_path / "mixed.pth", **tiny)
    assert _same(src, enc) and enc.weights_info["stripped_prefixes"] == {"module.": len(sd) - 1}
    # a prefixed and an unprefixed copy of one parameter: ambiguous, both named
    torch.save({**ddp, "norm.weight": sd["norm.weight"]}, tmp_path / "twice.pth")
    with pytest.raises(CheckpointError, match="'module.norm.weight' and 'norm.weight'"):
        create_encoder("vit_dinov3", weights=tmp_path / "twice.pth", **tiny)
    compiled = {f"module._orig_mod.{k}": v for k, v in sd.items()}  # DDP around torch.compile
    torch.save(compiled, tmp_path / "compiled.pth")
    enc = create_encoder("vit_dinov3", weights=tmp_path / "compiled.pth", **tiny)
    assert _same(src, enc) and enc.weights_info["stripped_prefixes"] == {"module.": len(sd), "_orig_mod.": len(sd)}


def test_recognised_layout_is_named_in_load_info_and_errors(native_by_hand, tiny_qkvb, perturb, tmp_path, caplog):
    src = create_encoder("vit_random", **tiny_qkvb)
    perturb(src.model)
    export_dinov3_teacher(src, tmp_path / "teacher.pth", heads={"dino_head": torch.nn.Linear(64, 7)})
    torch.save(native_by_hand(src.model), tmp_path / "native.pth")
    export_timm(src, tmp_path / "timm.safetensors")
    expect = {"teacher.pth": ("dinov3_teacher", "DINOv3 teacher"), "native.pth": ("dinov3_native", "DINOv3 native"),
              "timm.safetensors": ("timm", "timm")}
    for name, (fmt, layout) in expect.items():
        with caplog.at_level("WARNING", logger="brainfm.models"):
            caplog.clear()
            info = create_encoder("dinov3", weights=tmp_path / name, **tiny_qkvb).weights_info
        assert (info["format"], info["layout"]) == (fmt, layout), name
        warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        if name == "teacher.pth":  # the heads are outside the backbone: ignored, listed and logged
            assert {"dino_head.weight", "dino_head.bias"} <= set(info["ignored"])
            assert len(warned) == 1 and "dino_head.bias, dino_head.weight" in warned[0]
        else:
            assert not warned
    teacher = torch.load(tmp_path / "teacher.pth", weights_only=True)
    del teacher["teacher"]["backbone.norm.weight"]
    torch.save(teacher, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match=r"recognised layout: DINOv3 teacher; \{'teacher'.*missing key\(s\): "
                                              r"norm.weight$"):
        create_encoder("dinov3", weights=tmp_path / "broken.pth", **tiny_qkvb)
    st = load_file(str(tmp_path / "timm.safetensors"))
    st["extra.bias"] = torch.zeros(2)
    torch.save({"model": st}, tmp_path / "wrapped.pth")
    with pytest.raises(CheckpointError, match=r"recognised layout: timm; \{'model': \.\.\.\}\): 1 unexpected key\(s\): "
                                              r"extra.bias$"):
        create_encoder("dinov3", weights=tmp_path / "wrapped.pth", **tiny_qkvb)
