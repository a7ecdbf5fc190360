"""The ViT used by the self-distillation recipes: a timm model plus a learnable iBOT mask token.

timm's DINOv3 (``Eva``) and DINOv2 (``VisionTransformer``) models have no mask token, so the
forward pass is run piece by piece: ``patch_embed`` (NHWC grid, because the models are built
with ``dynamic_img_size=True``) -> replace masked patch embeddings by the mask token ->
``_pos_embed`` (prefix CLS/register tokens; for Eva it also returns the RoPE table for this
grid) -> ``norm_pre`` -> blocks -> ``norm``. Without masks this is exactly timm's
``forward_features``, which a test checks, so the exported timm weights give the training
model's features. The mask token lives outside the timm module, keeping its state dict clean.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import nn

from brainfm.errors import ConfigError

__all__ = ["build_timm_vit", "MaskableViT"]


def build_timm_vit(arch: str, overrides: dict[str, Any] | None = None, drop_path_rate: float = 0.0) -> nn.Module:
    """``timm.create_model(arch, pretrained=False, num_classes=0, global_pool='token', dynamic_img_size=True)``."""
    kwargs = dict(overrides or {})
    try:
        model = timm.create_model(arch, pretrained=False, num_classes=0, global_pool="token",
                                  dynamic_img_size=True, drop_path_rate=drop_path_rate, **kwargs)
    except (RuntimeError, TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(f"cannot build ViT {arch!r} with {kwargs}: {exc}") from exc
    if not hasattr(model, "patch_embed") or not hasattr(model, "_pos_embed") or not hasattr(model, "blocks"):
        raise ConfigError(f"{arch!r} is not a timm ViT (needs patch_embed, _pos_embed, blocks)")
    return model


class MaskableViT(nn.Module):
    """A timm ViT whose patch tokens can be replaced by a learned mask token (iBOT student)."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.vit = vit
        self.embed_dim = int(vit.embed_dim)
        self.num_prefix_tokens = int(vit.num_prefix_tokens)
        self.n_blocks = len(vit.blocks)
        self.patch_size = int(vit.patch_embed.patch_size[0])
        self.in_chans = int(vit.patch_embed.proj.in_channels)
        self.mask_token = nn.Parameter(torch.zeros(1, self.embed_dim))
        self._is_eva = type(vit).__name__ == "Eva"

    def grid(self, size: int) -> tuple[int, int]:
        return size // self.patch_size, size // self.patch_size

    def forward(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """(B, C, H, W) -> {"cls": (B, D), "reg": (B, R, D), "patch": (B, N, D)} after the final norm.

        ``masks``: optional (B, h, w) or (B, N) bool, True where the patch is replaced by the mask token.
        A one-channel input is replicated to the model's channel count (grayscale MRI -> RGB convention).
        """
        if x.shape[1] == 1 and self.in_chans != 1:
            x = x.expand(-1, self.in_chans, -1, -1)
        vit = self.vit
        t = vit.patch_embed(x)  # (B, h, w, D) with dynamic_img_size
        if masks is not None:
            m = masks.reshape(t.shape[0], t.shape[1], t.shape[2], 1)
            t = torch.where(m, self.mask_token.to(t.dtype).view(1, 1, 1, -1), t)
        out = vit._pos_embed(t)
        rope = None
        if isinstance(out, tuple):
            t, rope = out
        else:
            t = out
            if getattr(vit, "patch_drop", None) is not None:
                t = vit.patch_drop(t)
        t = vit.norm_pre(t)
        if self._is_eva:
            if getattr(vit, "rope_mixed", False) and rope is not None:
                for i, blk in enumerate(vit.blocks):
                    t = blk(t, rope=rope[i])
            else:
                for blk in vit.blocks:
                    t = blk(t, rope=rope)
        else:
            for blk in vit.blocks:
                t = blk(t)
        t = vit.norm(t)
        p = self.num_prefix_tokens
        has_cls = getattr(vit, "cls_token", None) is not None
        return {"cls": t[:, 0] if has_cls else t[:, p:].mean(1), "reg": t[:, 1 if has_cls else 0 : p],
                "patch": t[:, p:]}
