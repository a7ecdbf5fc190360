"""AdamW parameter groups with layer-wise learning-rate decay (paper §4.2: decay 0.9).

A backbone parameter at depth ``layer_id`` (0 for the patch embedding and learned tokens,
``i + 1`` for block ``i``, ``L + 1`` for the final norm) gets the learning-rate multiplier
``layer_decay ** (L + 1 - layer_id)``; heads get 1. The patch embedding is further scaled by
``patch_embed_lr_mult`` (DINOv3: 0.2). Biases, normalisation weights, layer-scale gammas and
learned tokens (CLS, registers, mask token, position embeddings) get no weight decay. The DINO
head's ``last_layer`` is flagged so its learning rate can be held at 0 during the first
iterations (DINOv3's ``freeze_last_layer``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["layer_id", "param_groups", "build_adamw", "apply_schedule"]

_TOKENS = ("cls_token", "reg_token", "mask_token", "pos_embed", "storage_tokens")
_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


def layer_id(name: str, n_blocks: int, backbone_prefix: str = "backbone.") -> int:
    """Depth of a parameter for layer-wise decay (see module docstring)."""
    if not name.startswith(backbone_prefix):
        return n_blocks + 1
    if "patch_embed" in name or any(t in name for t in _TOKENS):
        return 0
    m = _BLOCK.search(name)
    if m:
        return int(m.group(1)) + 1
    return n_blocks + 1


def _no_decay(name: str, param: torch.Tensor) -> bool:
    leaf = name.rsplit(".", 1)[-1]
    return (name.endswith(".bias") or leaf == "bias" or "norm" in name or "gamma" in name or ".bn" in name
            or any(t in name for t in _TOKENS) or param.ndim <= 1)


def param_groups(
    named_params: Iterable[tuple[str, nn.Parameter]],
    n_blocks: int = 0,
    layer_decay: float = 1.0,
    patch_embed_lr_mult: float = 1.0,
    backbone_prefix: str = "backbone.",
) -> list[dict]:
    """Fused AdamW groups carrying ``lr_multiplier``, ``wd_multiplier`` and ``is_last_layer``."""
    fused: dict[tuple[float, float, bool], dict] = {}
    for name, p in named_params:
        if not p.requires_grad:
            continue
        lr_mult = layer_decay ** (n_blocks + 1 - layer_id(name, n_blocks, backbone_prefix))
        if "patch_embed" in name:
            lr_mult *= patch_embed_lr_mult
        wd_mult = 0.0 if _no_decay(name, p) else 1.0
        last = "last_layer" in name
        key = (round(lr_mult, 12), wd_mult, last)
        group = fused.setdefault(key, {"params": [], "names": [], "lr_multiplier": lr_mult,
                                       "wd_multiplier": wd_mult, "is_last_layer": last})
        group["params"].append(p)
        group["names"].append(name)
    return [fused[k] for k in sorted(fused, key=lambda k: (k[2], k[1], k[0]))]


def build_adamw(groups: list[dict], betas: tuple[float, float] = (0.9, 0.999), fused: bool | None = None
                ) -> torch.optim.AdamW:
    """AdamW over the groups; lr and weight decay are set every iteration by :func:`apply_schedule`."""
    kwargs = {}
    if fused is not None:
        kwargs["fused"] = fused
    clean = [{k: v for k, v in g.items() if k != "names"} for g in groups]
    return torch.optim.AdamW(clean, lr=0.0, weight_decay=0.0, betas=betas, **kwargs)


def apply_schedule(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float,
                   last_layer_lr: float | None = None) -> None:
    for g in optimizer.param_groups:
        base = last_layer_lr if (g.get("is_last_layer") and last_layer_lr is not None) else lr
        g["lr"] = base * g.get("lr_multiplier", 1.0)
        g["weight_decay"] = weight_decay * g.get("wd_multiplier", 1.0)
