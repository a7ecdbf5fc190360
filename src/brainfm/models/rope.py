"""DINOv3 RoPE in the precision the original model ran it, for timm's DINOv3 ViTs.

Meta's ``RopePositionEmbedding`` computes everything in its own ``dtype``: the coordinate grid, the
angles and sin/cos, and ``SelfAttention.apply_rope`` casts q and k (prefix tokens included) to
that dtype, rotates the patch tokens and casts back. The trainer builds its ViT without passing
the RoPE dtype, so the constructor default ``"bf16"`` applies: a teacher checkpoint from a default
run was trained and evaluated with bf16 RoPE, and its ``rope_embed.periods`` buffer is stored in
bf16. Meta's hub builder passes ``"fp32"``, which is what timm reproduces. The two paths give
different features (measured on a perturbed ViT-B/16 trainer teacher at 224 px: max abs CLS
difference 8.4e-3, against a CLS spread across inputs of 0.5), so a checkpoint is only reproduced
exactly in the precision it was made with.

:func:`set_rope_dtype` switches a timm DINOv3 ``Eva`` model between the two. For ``float32`` the
model is plain timm. For ``bfloat16`` the RoPE module becomes :class:`DinoV3RopeInDtype` (the sin/cos
table follows Meta's dtype path step by step) and every attention module becomes
:class:`RopeInDtypeAttention` (rotation in the table's dtype, as ``apply_rope``); both are
subclasses swapped in place, so parameters, buffers and state-dict keys stay untouched.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers.pos_embed_sincos import RotaryEmbeddingDinoV3, rope_rotate_half
from timm.models.eva import EvaAttention
from torch import nn

from brainfm.errors import ConfigError

__all__ = ["ROPE_DTYPES", "DinoV3RopeInDtype", "RopeInDtypeAttention", "set_rope_dtype", "rope_dtype_of",
           "meta_rope_periods", "has_dinov3_rope"]

ROPE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def has_dinov3_rope(model: nn.Module) -> bool:
    """True for a timm ``Eva`` model with DINOv3's RoPE (``rope_type='dinov3'``)."""
    return isinstance(getattr(model, "rope", None), RotaryEmbeddingDinoV3)


def rope_dtype_of(model: nn.Module) -> str | None:
    """``"float32"`` / ``"bfloat16"``: the precision the model computes RoPE in (None without DINOv3 RoPE)."""
    rope = getattr(model, "rope", None)
    if not isinstance(rope, RotaryEmbeddingDinoV3):
        return None
    return "bfloat16" if isinstance(rope, DinoV3RopeInDtype) and rope.compute_dtype == torch.bfloat16 else "float32"


def meta_rope_periods(head_dim: int, *, base: float | None, min_period: float | None = None,
                      max_period: float | None = None, dtype: torch.dtype = torch.float32,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """RoPE periods computed in ``dtype`` the way Meta's ``RopePositionEmbedding._init_weights`` does.

    In bf16 every step rounds, so these differ from timm's float32 periods rounded afterwards.
    """
    n = head_dim // 4
    if min_period is not None and max_period is not None:
        ratio = max_period / min_period
        return ratio ** torch.linspace(0, 1, n, device=device, dtype=dtype) / ratio * max_period
    if base is None:
        raise ConfigError("RoPE needs a base (temperature) or min/max periods")
    return base ** (2 * torch.arange(n, device=device, dtype=dtype) / (head_dim // 2))


class DinoV3RopeInDtype(RotaryEmbeddingDinoV3):
    """timm's DINOv3 RoPE with the sin/cos table computed in ``compute_dtype`` as Meta's module does.

    Coordinates are built in ``compute_dtype`` (``arange(0.5, n) / n``, mapped to [-1, 1]), the
    angles ``2 pi c / period`` and their sin/cos too; the table keeps that dtype so the attention
    rotates in it. Train-time coordinate augmentations are timm's, applied in the same dtype.
    """

    compute_dtype: torch.dtype = torch.float32

    def _create_embed(self, feat_shape: list[int], no_aug: bool = False) -> torch.Tensor:
        h, w = (int(s) for s in feat_shape)
        dtype, device = self.compute_dtype, self.periods.device
        if self.normalize_coords == "separate":
            den_h, den_w = h, w
        elif self.normalize_coords == "max":
            den_h = den_w = max(h, w)
        elif self.normalize_coords == "min":
            den_h = den_w = min(h, w)
        else:
            raise ConfigError(f"unknown RoPE normalize_coords {self.normalize_coords!r}")
        along_h = torch.arange(0.5, h, device=device, dtype=dtype) / den_h
        along_w = torch.arange(0.5, w, device=device, dtype=dtype) / den_w
        coords = torch.stack(torch.meshgrid(along_h, along_w, indexing="ij"), dim=-1).flatten(0, 1)  # (hw, 2)
        coords = 2.0 * coords - 1.0
        if not no_aug:
            coords = self._apply_coord_augs(coords)
        periods = self.periods.to(dtype)
        angles = (2 * math.pi * coords[:, :, None] / periods[None, None, :]).flatten(1, 2)  # (hw, head_dim / 2)
        angles = angles.tile(2)  # half layout: [a0 .. a_{d/2-1}, a0 .. a_{d/2-1}]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class RopeInDtypeAttention(EvaAttention):
    """timm's ``EvaAttention`` whose RoPE step runs in the dtype of the RoPE table (Meta's ``apply_rope``).

    q and k -- all tokens, the prefix (CLS, registers) included -- are cast to the table's dtype,
    the patch tokens are rotated there, and both are cast back before the attention product. Every
    other step is timm's. Only the fused-qkv, half-rotation layout of timm's DINOv3 ViTs is supported
    (checked by :func:`set_rope_dtype`).
    """

    def _rotate(self, t: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
        out_dtype = t.dtype
        t = t.to(sin.dtype)
        npt = self.num_prefix_tokens
        patches = t[:, :, npt:, :]
        rotated = (patches * cos) + (rope_rotate_half(patches) * sin)
        return torch.cat([t[:, :, :npt, :], rotated], dim=-2).to(out_dtype)

    def forward(self, x: torch.Tensor, rope: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        if self.q_bias is None:
            qkv = self.qkv(x)
        else:
            bias = torch.cat((self.q_bias, self.k_bias, self.v_bias))
            if self.qkv_bias_separate:
                qkv = self.qkv(x)
                qkv += bias
            else:
                qkv = F.linear(x, weight=self.qkv.weight, bias=bias)
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            sin, cos = rope.chunk(2, dim=-1)
            q, k = self._rotate(q, sin, cos).type_as(v), self._rotate(k, sin, cos).type_as(v)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                               dropout_p=self.attn_drop.p if self.training else 0.0)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            if attn_mask is not None:
                attn = attn + attn_mask
            x = self.attn_drop(attn.softmax(dim=-1)) @ v
        x = x.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(self.norm(x)))


def _check_supported(model: nn.Module) -> None:
    """The swap is exact only for timm's own DINOv3 modules in DINOv3's layout (not for subclasses)."""
    rope = model.rope
    if type(rope) not in (RotaryEmbeddingDinoV3, DinoV3RopeInDtype) or not rope.rotate_half \
            or rope.grid_indexing != "ij" or float(rope.grid_offset) != 0.0:
        raise ConfigError(f"{type(model).__name__}: RoPE {type(rope).__name__} (rotate_half={rope.rotate_half}, "
                          f"grid_indexing={rope.grid_indexing!r}, grid_offset={rope.grid_offset}) is not DINOv3's; "
                          "only float32 RoPE is available for it")
    for i, blk in enumerate(model.blocks):
        attn = getattr(blk, "attn", None)
        if type(attn) not in (EvaAttention, RopeInDtypeAttention) or attn.qkv is None:
            raise ConfigError(f"{type(model).__name__}: block {i} attention is not timm's fused-qkv EvaAttention; "
                              "only float32 RoPE is available for it")


def set_rope_dtype(model: nn.Module, dtype: str, periods: torch.Tensor | None = None) -> None:
    """Make a timm DINOv3 ViT compute RoPE in ``dtype`` (``"float32"``: timm; ``"bfloat16"``: Meta's trainer).

    ``periods`` (optional) replaces the model's RoPE periods; they are kept in ``dtype``. Without
    them, switching to bfloat16 recomputes the periods in bf16 as Meta's module initialises them.
    """
    if dtype not in ROPE_DTYPES:
        raise ConfigError(f"rope_dtype must be one of {sorted(ROPE_DTYPES)}, got {dtype!r}")
    if not has_dinov3_rope(model):
        raise ConfigError(f"{type(model).__name__} has no DINOv3 RoPE; rope_dtype applies to timm DINOv3 ViTs only")
    rope = model.rope
    torch_dtype = ROPE_DTYPES[dtype]
    device = rope.periods.device
    if periods is None:
        if torch_dtype == torch.float32:
            periods = rope._compute_periods(device=device, dtype=torch.float32)
        else:
            periods = meta_rope_periods(rope.dim, base=rope.temperature, min_period=rope.min_period,
                                        max_period=rope.max_period, dtype=torch_dtype, device=device)
    if torch_dtype == torch.float32:
        if isinstance(rope, DinoV3RopeInDtype):
            rope.__class__ = RotaryEmbeddingDinoV3
        for blk in model.blocks:
            if isinstance(blk.attn, RopeInDtypeAttention):
                blk.attn.__class__ = EvaAttention
    else:
        _check_supported(model)
        rope.__class__ = DinoV3RopeInDtype
        rope.compute_dtype = torch_dtype
        for blk in model.blocks:
            blk.attn.__class__ = RopeInDtypeAttention
    rope.register_buffer("periods", periods.detach().to(device=device, dtype=torch_dtype), persistent=False)
    if getattr(rope, "feat_shape", None) is not None:
        rope._cache_embed(rope.feat_shape)  # refresh the cached table of fixed-size models
