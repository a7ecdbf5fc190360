"""BrainFound recipe: DINOv2-style self-distillation continued from a ViT initialisation.

BrainFound (Mazher et al.) starts from natural-image DINOv2 weights and continues
self-distillation on brain MRI, feeding the ViT's three input channels with three adjacent
axial slices (volumetric context) or with T1/T2/FLAIR of the same slice (multi-contrast input).
The machinery is the DINO trainer of :mod:`brainfm.ssl.dino` with DINOv2 defaults
(:class:`~brainfm.ssl.config.BrainFoundConfig`: softmax centering, momentum 0.992 -> 1,
weight decay 0.04 -> 0.4, 224/98 crops) and stacked-slice data from the volume store.
The initial backbone weights (``init``) may be a DINOv2 timm file, the output of another
pretraining run, or nothing (random initialisation, for ablations and the CPU demo).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from brainfm.ssl.config import BrainFoundConfig
from brainfm.ssl.dino import DinoMethod, run_dino_stage
from brainfm.ssl.distributed import init_distributed

__all__ = ["BrainFoundMethod", "train_brainfound"]


class BrainFoundMethod(DinoMethod):
    recipe = "brainfound"


def train_brainfound(cfg: dict[str, Any] | BrainFoundConfig, store_dirs: Sequence[Path], out_path: Path,
                     work_dir: Path, device: str = "cpu", init: str | Path | None = None) -> Path:
    """Continue DINOv2-style pretraining on stacked slices and export the teacher (DINOv3 + timm formats)."""
    from brainfm.ssl.data import StackedSliceSource
    from brainfm.ssl.export import export_teacher

    cfg = cfg if isinstance(cfg, BrainFoundConfig) else BrainFoundConfig.from_dict(cfg)
    if init is not None:
        cfg.init = str(init)
    env = init_distributed(device)
    source = StackedSliceSource(store_dirs, stack=cfg.stack, modalities=cfg.modalities, step=cfg.slice_step)
    method, result = run_dino_stage(cfg, source, Path(work_dir), env, method_cls=BrainFoundMethod)
    if result.finished and env.is_main:
        export_teacher(method, Path(out_path), cfg, result)
    return Path(out_path)
