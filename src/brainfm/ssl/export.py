"""Exporting pretrained encoders for the registry, and reading initial backbone weights.

* ViT recipes (BrainDINO, BrainFound): the EMA teacher is written with the registry's own
  exporters (:mod:`brainfm.models.checkpoint`), so trainer and registry share one key mapping:
  the DINOv3 evaluation format ``{"teacher": {"backbone.*", "dino_head.*", "ibot_head.*"}}``
  (what BrainDINO's and MedDINOv3's loaders read; native DINOv3 names) and plain timm weights
  (``<stem>_timm.safetensors``). Initial weights are read by the registry's strict loader.
* SimCLR (BrainIAC): the MONAI 3D ResNet backbone's state dict (no ``fc``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from brainfm.atomic import save_torch

__all__ = ["encoder_args", "export_teacher", "export_resnet3d", "load_backbone_weights", "sha256_file", "timm_weights_path"]

log = logging.getLogger("brainfm.ssl")


def sha256_file(path: Path) -> str:
    from brainfm.models.checkpoint import sha256_file as _sha

    return _sha(path)


def timm_weights_path(out_path: Path) -> Path:
    out_path = Path(out_path)
    return out_path.with_name(out_path.stem + "_timm.safetensors")


def encoder_args(cfg: Any) -> dict[str, Any]:
    """Registry arguments that rebuild the pretrained ViT: ``create_encoder(name, weights=..., **args)``.

    ``img_size`` is the first global crop size of the (last) stage: the resolution the teacher saw.
    BrainFound additionally stacks adjacent slices as channels.
    """
    args: dict[str, Any] = {"arch": cfg.arch, "arch_overrides": dict(cfg.arch_overrides),
                            "img_size": int(cfg.pairs()[0][0])}
    if getattr(cfg, "stack", None) == "adjacent":
        args.update(stacking="adjacent", stack_step=int(cfg.slice_step))
    return args


def load_backbone_weights(vit: nn.Module, path: Path) -> dict[str, Any]:
    """Load a DINOv3-teacher, native DINOv3 or timm weight file into a timm ViT, checking every key
    (:func:`brainfm.models.checkpoint.load_encoder_weights`); raises CheckpointError naming the file."""
    from brainfm.models.checkpoint import load_encoder_weights

    return load_encoder_weights(vit, Path(path))


def export_teacher(method: Any, out_path: Path, cfg: Any, result: Any = None) -> dict[str, str]:
    """Write the teacher backbone (+ heads) in DINOv3 format and in timm format; returns the paths."""
    from brainfm.models.checkpoint import export_dinov3_teacher, export_timm

    vit = method.teacher.backbone.vit
    heads = {"dino_head": method.teacher.dino_head, "ibot_head": method.teacher.ibot_head}
    out_path = Path(out_path)
    timm_path = timm_weights_path(out_path)
    export_dinov3_teacher(vit, out_path, heads=heads)
    export_timm(vit, timm_path)
    return {"weights": str(out_path), "timm_weights": str(timm_path)}


def export_resnet3d(backbone: nn.Module, out_path: Path, cfg: Any) -> dict[str, str]:
    """Write the SimCLR backbone as a plain MONAI ResNet state dict (keys ``conv1.weight`` ... ``layer4.*``)."""
    state = {k: v.detach().cpu().clone() for k, v in backbone.state_dict().items()}
    save_torch(Path(out_path), {"state_dict": state, "arch": cfg.arch, "conv1_stride": cfg.conv1_stride})
    return {"weights": str(out_path)}
