"""DINOv3 RoPE precision: trainer checkpoints (bf16 RoPE) give the original model's features exactly.

The reference below restates, from Meta's DINOv3 code (``dinov3/layers/rope_position_encoding.py``
``RopePositionEmbedding.forward`` and ``dinov3/layers/attention.py`` ``SelfAttention.apply_rope``),
what the original ViT computes: the sin/cos table built entirely in the RoPE dtype (coordinates,
angles, sin/cos), and q/k of every token cast to that dtype for the rotation and cast back. The
trainer builds its ViT without a RoPE dtype, so the constructor default ``bf16`` applies and the
stored ``rope_embed.periods`` are bf16 (computed in bf16 by ``_init_weights``). The ViT around
the attention is evaluated from the timm model's own layers, independently of brainfm's RoPE code.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from brainfm.errors import CheckpointError, ConfigError
from brainfm.models import create_encoder, export_dinov3_teacher, export_timm

SIZE = 64  # a 4 x 4 patch grid, so positions differ
X = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(11))


def trainer_periods(head_dim: int, base: float = 100.0, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """``RopePositionEmbedding._init_weights`` with ``base``: periods = base^(2i / (D/2)), every op in ``dtype``."""
    i = torch.arange(head_dim // 4, dtype=dtype)
    return base ** (2 * i / (head_dim // 2))


def reference_tables(h: int, w: int, periods: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """sin, cos (h*w, head_dim) of Meta's RoPE in eval mode, ``normalize_coords="separate"``, all in ``dtype``."""
    rows = torch.arange(0.5, h, dtype=dtype) / h
    cols = torch.arange(0.5, w, dtype=dtype) / w
    yx = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(h * w, 2)
    yx = 2.0 * yx - 1.0  # [0, 1] -> [-1, 1]
    theta = 2 * math.pi * yx[:, :, None] / periods.to(dtype)[None, None, :]  # (hw, 2, D/4)
    theta = theta.reshape(h * w, -1).repeat(1, 2)  # (hw, D): the same D/2 angles twice
    return torch.sin(theta), torch.cos(theta)


def reference_rotate(t: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor, n_prefix: int) -> torch.Tensor:
    """``apply_rope`` for q or k (B, heads, N, D): every token in the table's dtype, patch tokens rotated."""
    out_dtype = t.dtype
    t = t.to(sin.dtype)
    patches = t[:, :, n_prefix:]
    d = patches.shape[-1] // 2
    turned = torch.cat([-patches[..., d:], patches[..., :d]], dim=-1)
    return torch.cat([t[:, :, :n_prefix], patches * cos + turned * sin], dim=2).to(out_dtype)


def reference_cls(vit, x: torch.Tensor, periods: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Final-normed CLS token of the DINOv3 ViT with RoPE evaluated as Meta's code does in ``dtype``."""
    tokens = vit.patch_embed(x)  # (B, h, w, C)
    b, h, w, c = tokens.shape
    prefix = [vit.cls_token.expand(b, -1, -1), vit.reg_token.expand(b, -1, -1)]
    z = torch.cat(prefix + [tokens.reshape(b, h * w, c)], dim=1)
    n_prefix = z.shape[1] - h * w
    sin, cos = reference_tables(h, w, periods, dtype)
    for blk in vit.blocks:
        attn = blk.attn
        y = blk.norm1(z)
        bias = None if attn.q_bias is None else torch.cat([attn.q_bias, torch.zeros_like(attn.q_bias), attn.v_bias])
        qkv = F.linear(y, attn.qkv.weight, bias).reshape(b, z.shape[1], 3, attn.num_heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        q, k = reference_rotate(q, sin, cos, n_prefix), reference_rotate(k, sin, cos, n_prefix)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, z.shape[1], c)
        z = z + blk.gamma_1 * attn.proj(a)
        z = z + blk.gamma_2 * blk.mlp(blk.norm2(z))
    return vit.norm(z)[:, 0]


def trainer_teacher(vit, native_by_hand) -> dict:
    """``{"teacher": model_ema.state_dict()}`` of a default DINOv3 training run (bf16 periods, heads)."""
    backbone = native_by_hand(vit)
    head_dim = vit.embed_dim // vit.blocks[0].attn.num_heads
    backbone["rope_embed.periods"] = trainer_periods(head_dim)
    teacher = {f"backbone.{k}": v for k, v in backbone.items()}
    teacher.update({"dino_head.mlp.0.weight": torch.randn(16, vit.embed_dim), "ibot_head.mlp.0.weight": torch.randn(8)})
    return {"teacher": teacher}


def cls(enc, x=X):
    with torch.no_grad():
        return enc.forward_features(x)["cls"]


@pytest.fixture
def source(tiny_qkvb, perturb):
    src = create_encoder("vit_random", **dict(tiny_qkvb, img_size=SIZE))
    perturb(src.model)
    return src


def test_reference_in_float32_is_timms_forward(source):
    """The restated ViT is right: with float32 RoPE and timm's periods it is timm's own forward, bit for bit."""
    with torch.no_grad():
        ref = reference_cls(source.model, X, source.model.rope.periods, torch.float32)
    assert torch.equal(ref, cls(source))


def test_trainer_teacher_with_bf16_periods_gives_the_trainers_features_exactly(native_by_hand, source, tiny_qkvb,
                                                                             tmp_path):
    ckpt = trainer_teacher(source.model, native_by_hand)
    periods = ckpt["teacher"]["backbone.rope_embed.periods"]
    assert periods.dtype == torch.bfloat16
    torch.save(ckpt, tmp_path / "teacher_checkpoint.pth")
    enc = create_encoder("braindino", weights=tmp_path / "teacher_checkpoint.pth", **dict(tiny_qkvb, img_size=SIZE))
    info = enc.weights_info
    assert info["rope_dtype"] == "bfloat16" and "Meta's trainer" in info["rope_dtype_reason"]
    assert info["rope_periods"] == "checkpoint" and info["allow_missing_rope_periods"] is False
    with torch.no_grad():
        bf16 = reference_cls(source.model, X, periods, torch.bfloat16)
        fp32 = reference_cls(source.model, X, periods, torch.float32)
    ours = cls(enc)
    assert torch.equal(ours, bf16)
    assert float((bf16 - fp32).abs().max()) > 1e-4  # the precision matters: float32 RoPE would be off
    # the other read-outs run through the same attention: the last block's normed CLS is the CLS
    with torch.no_grad():
        out = enc.forward_features(X, layers=[-1])
    assert torch.equal(out["layers"][0], ours)
    # an explicit option overrides the detection, and is recorded
    forced = create_encoder("braindino", weights=tmp_path / "teacher_checkpoint.pth", rope_dtype="float32",
                            **dict(tiny_qkvb, img_size=SIZE))
    assert (forced.weights_info["rope_dtype"], forced.weights_info["rope_dtype_reason"]) == ("float32",
                                                                                          "rope_dtype option")
    assert torch.equal(cls(forced), fp32)


def test_bf16_teacher_round_trips_through_the_teacher_export_only(native_by_hand, source, tiny_qkvb, tmp_path, caplog):
    torch.save(trainer_teacher(source.model, native_by_hand), tmp_path / "teacher_checkpoint.pth")
    kw = dict(tiny_qkvb, img_size=SIZE)
    enc = create_encoder("braindino", weights=tmp_path / "teacher_checkpoint.pth", **kw)
    export_dinov3_teacher(enc, tmp_path / "again.pth")
    assert torch.load(tmp_path / "again.pth", weights_only=True)["teacher"]["backbone.rope_embed.periods"].dtype \
        == torch.bfloat16
    again = create_encoder("braindino", weights=tmp_path / "again.pth", **kw)
    assert again.weights_info["rope_dtype"] == "bfloat16" and torch.equal(cls(again), cls(enc))
    with caplog.at_level("WARNING", logger="brainfm.models"):
        export_timm(enc, tmp_path / "w.safetensors")
    assert any("bfloat16" in r.getMessage() and "export_dinov3_teacher" in r.getMessage() for r in caplog.records)
    # reloading timm weights into the same encoder puts it back on timm's float32 RoPE
    enc.load_weights(tmp_path / "w.safetensors")
    assert enc.weights_info["rope_dtype"] == "float32" and torch.equal(cls(enc), cls(source))


def test_native_backbone_files_run_float32_unless_told(native_by_hand, source, tiny_qkvb, tmp_path):
    """Meta's hub builder reads released backbone files with fp32 RoPE, whatever dtype their periods have."""
    native = native_by_hand(source.model)
    head_dim = source.model.embed_dim // source.model.blocks[0].attn.num_heads
    native["rope_embed.periods"] = trainer_periods(head_dim)
    torch.save(native, tmp_path / "native.pth")
    kw = dict(tiny_qkvb, img_size=SIZE)
    enc = create_encoder("dinov3", weights=tmp_path / "native.pth", **kw)
    assert enc.weights_info["rope_dtype"] == "float32" and "hub" in enc.weights_info["rope_dtype_reason"]
    periods = native["rope_embed.periods"]
    with torch.no_grad():
        assert torch.equal(cls(enc), reference_cls(source.model, X, periods, torch.float32))
        bf16 = reference_cls(source.model, X, periods, torch.bfloat16)
    told = create_encoder("dinov3", weights=tmp_path / "native.pth", rope_dtype="bfloat16", **kw)
    assert told.weights_info["rope_dtype"] == "bfloat16" and torch.equal(cls(told), bf16)


def test_native_weights_without_rope_periods_are_refused_unless_allowed(native_by_hand, source, tiny_qkvb, tmp_path):
    kw = dict(tiny_qkvb, img_size=SIZE)
    native = native_by_hand(source.model)
    del native["rope_embed.periods"]
    torch.save(native, tmp_path / "noperiods.pth")
    with pytest.raises(CheckpointError, match=r"DINOv3 native weights have no 'rope_embed.periods'.*"
                                              r"allow_missing_rope_periods=True"):
        create_encoder("dinov3", weights=tmp_path / "noperiods.pth", **kw)
    teacher = trainer_teacher(source.model, native_by_hand)
    del teacher["teacher"]["backbone.rope_embed.periods"]
    torch.save(teacher, tmp_path / "teacher_noperiods.pth")
    with pytest.raises(CheckpointError, match=r"DINOv3 teacher weights have no 'backbone.rope_embed.periods'"):
        create_encoder("braindino", weights=tmp_path / "teacher_noperiods.pth", **kw)
    enc = create_encoder("dinov3", weights=tmp_path / "noperiods.pth", allow_missing_rope_periods=True, **kw)
    info = enc.weights_info
    assert info["allow_missing_rope_periods"] is True and info["rope_periods"] == "architecture"
    assert info["rope_dtype"] == "float32" and torch.equal(cls(enc), cls(source))
    # the same option with bf16 RoPE uses the periods as Meta's module computes them in bf16
    told = create_encoder("dinov3", weights=tmp_path / "noperiods.pth", allow_missing_rope_periods=True,
                          rope_dtype="bfloat16", **kw)
    head_dim = source.model.embed_dim // source.model.blocks[0].attn.num_heads
    assert torch.equal(told.model.rope.periods, trainer_periods(head_dim))
    with torch.no_grad():
        assert torch.equal(cls(told), reference_cls(source.model, X, trainer_periods(head_dim), torch.bfloat16))


def test_layernorm_eps_is_recorded_and_a_trainer_checkpoint_warns_about_it(native_by_hand, source, tiny_qkvb, tmp_path,
                                                                          caplog):
    torch.save(trainer_teacher(source.model, native_by_hand), tmp_path / "teacher_checkpoint.pth")
    kw = dict(tiny_qkvb, img_size=SIZE)
    with caplog.at_level("WARNING", logger="brainfm.models"):
        enc = create_encoder("braindino", weights=tmp_path / "teacher_checkpoint.pth", **kw)
    assert enc.weights_info["layernorm_eps"] == 1e-5
    assert any("norm_eps: 1e-06" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="brainfm.models"):
        enc = create_encoder("braindino", weights=tmp_path / "teacher_checkpoint.pth", norm_eps=1e-6, **kw)
    assert enc.weights_info["layernorm_eps"] == 1e-6 and enc.config["norm_eps"] == 1e-6
    assert not any("norm_eps: 1e-06" in r.getMessage() for r in caplog.records)


def test_rope_options_are_checked(tiny, tmp_path):
    with pytest.raises(ConfigError, match="no weights"):
        create_encoder("vit_dinov3", rope_dtype="bfloat16", **tiny)
    torch.save(create_encoder("vit_random", **tiny).model.state_dict(), tmp_path / "w.pth")
    with pytest.raises(ConfigError, match="rope_dtype must be one of"):
        create_encoder("vit_dinov3", weights=tmp_path / "w.pth", rope_dtype="fp16", **tiny)
    v2 = create_encoder("vit_random", arch="vit_small_patch14_dinov2", embed_dim=64, depth=1, num_heads=2,
                        img_size=28)
    torch.save(v2.model.state_dict(), tmp_path / "v2.pth")
    with pytest.raises(ConfigError, match="timm DINOv3 ViTs"):
        create_encoder("vit_dinov3", weights=tmp_path / "v2.pth", arch="vit_small_patch14_dinov2", embed_dim=64,
                       depth=1, num_heads=2, img_size=28, rope_dtype="bfloat16")
