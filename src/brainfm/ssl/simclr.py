"""BrainIAC recipe: SimCLR (NT-Xent) on whole 3D volumes with a MONAI 3D ResNet50.

BrainIAC (Tak et al.) trains ``monai.networks.nets.resnet50(spatial_dims=3, n_input_channels=1)``
without its classification layer (2048-d global-average-pooled features) plus an MLP projection
head, on two augmented 128^3 views of each volume (flips, Gaussian blur, Gaussian noise,
affine, random crop + resize; :class:`~brainfm.ssl.augment.VolumeAugment`). Negatives are all
other views of the global batch (gathered over processes). The exported file is the backbone's
state dict (MONAI key names, no ``fc``), the layout the ``brainiac`` baseline encoders load.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from brainfm.errors import CheckpointError
from brainfm.ssl.augment import VolumeAugment
from brainfm.ssl.checkpointing import load_state_strict
from brainfm.ssl.config import SimCLRConfig
from brainfm.ssl.distributed import DistEnv, init_distributed
from brainfm.ssl.engine import FitResult, SSLMethod, fit
from brainfm.ssl.losses import nt_xent_loss
from brainfm.ssl.optim import param_groups
from brainfm.ssl.schedules import build_schedules

__all__ = ["build_resnet3d", "SimCLRModel", "SimCLRMethod", "train_simclr", "resolve_iters"]

_FEATURES = {"resnet10": 512, "resnet18": 512, "resnet34": 512, "resnet50": 2048}


def build_resnet3d(arch: str = "resnet50", conv1_stride: int = 2) -> nn.Module:
    """MONAI 3D ResNet with one input channel and no classification layer (``fc`` removed)."""
    from monai.networks import nets

    net = getattr(nets, arch)(pretrained=False, spatial_dims=3, n_input_channels=1, conv1_t_size=7,
                              conv1_t_stride=conv1_stride, feed_forward=False)
    net.fc = None
    return net


class SimCLRModel(nn.Module):
    def __init__(self, cfg: SimCLRConfig):
        super().__init__()
        self.backbone = build_resnet3d(cfg.arch, cfg.conv1_stride)
        dim = _FEATURES[cfg.arch]
        self.projector = nn.Sequential(nn.Linear(dim, cfg.proj_hidden), nn.BatchNorm1d(cfg.proj_hidden),
                                       nn.ReLU(inplace=True), nn.Linear(cfg.proj_hidden, cfg.proj_dim))
        self.feature_dim = dim

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.projector(self.backbone(torch.cat([view1, view2], dim=0)))
        return z[: view1.shape[0]], z[view1.shape[0]:]


class SimCLRMethod(SSLMethod):
    recipe = "simclr"

    def __init__(self, cfg: SimCLRConfig, env: DistEnv):
        self.cfg = cfg
        self.env = env
        torch.manual_seed(cfg.seed)
        model = SimCLRModel(cfg)
        if env.world_size > 1 and env.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # global-batch BN statistics (SimCLR)
        self.model = model.to(env.device)
        if cfg.compile:
            self.model.compile()
        self.ddp: nn.Module = self.model
        if env.world_size > 1:
            self.ddp = DistributedDataParallel(
                self.model, device_ids=[env.device.index] if env.device.type == "cuda" else None)

    def signature(self) -> dict[str, Any]:
        c = self.cfg
        return {"recipe": self.recipe, "arch": c.arch, "conv1_stride": c.conv1_stride, "proj_hidden": c.proj_hidden,
                "proj_dim": c.proj_dim}

    def param_groups(self) -> list[dict]:
        return param_groups(self.model.named_parameters(), n_blocks=0, layer_decay=1.0)

    def clip_modules(self) -> list[nn.Module]:
        return [self.model]

    def train(self) -> None:
        self.model.train()

    def forward_loss(self, batch, it, sched):
        z1, z2 = self.ddp(batch["view1"], batch["view2"])
        loss = nt_xent_loss(z1, z2, self.cfg.temperature)
        with torch.no_grad():
            pos = torch.nn.functional.cosine_similarity(z1.float(), z2.float()).mean()
        # chance level: a view scored uniformly over its 2N - 1 candidates (N views per side, all processes)
        n_views = 2 * z1.shape[0] * self.env.world_size
        return loss, {"nt_xent": loss.detach(), "pos_cos": pos, "uniform_loss": math.log(max(n_views - 1, 1))}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any], path: Path) -> None:
        if "model" not in state:
            raise CheckpointError(path, "no 'model' entry: not a SimCLR training state")
        load_state_strict(self.model, state["model"], path, "SimCLR model")


def resolve_iters(cfg: SimCLRConfig, n_volumes: int, world_size: int) -> int:
    """``cfg.iters`` or, when 0, the iterations of ``cfg.epochs`` passes over the volumes."""
    if cfg.iters:
        return int(cfg.iters)
    return max(1, math.ceil(float(cfg.epochs) * n_volumes / (cfg.batch_size * world_size)))


def _loader(cfg: SimCLRConfig, source, env: DistEnv, start_iter: int, start_position: int, n_iters: int):
    from brainfm.ssl.data import PositionBatchSampler, SimCLRDataset, collate_simclr, make_loader

    augment = VolumeAugment(cfg.input_size, cfg.crop_scale, cfg.flip_prob, cfg.affine_prob, cfg.rotate_deg,
                            cfg.scale_range, cfg.translate_frac, cfg.blur_prob, cfg.blur_sigma, cfg.noise_prob,
                            cfg.noise_std)
    dataset = SimCLRDataset(source, augment, cfg.seed)
    sampler = PositionBatchSampler(start_position, start_iter, n_iters, cfg.batch_size * env.world_size,
                                   cfg.batch_size, env.rank, cfg.seed)
    return make_loader(dataset, sampler, collate_simclr, cfg.num_workers, pin_memory=env.device.type == "cuda",
                       prefetch_factor=cfg.prefetch_factor)


def run_simclr(cfg: SimCLRConfig, source, work_dir: Path, env: DistEnv) -> tuple[SimCLRMethod, FitResult]:
    method = SimCLRMethod(cfg, env)
    global_batch = cfg.batch_size * env.world_size
    total = resolve_iters(cfg, len(source), env.world_size)
    schedules = build_schedules(cfg, global_batch, total)
    result = fit(method, cfg, lambda it0, pos, n: _loader(cfg, source, env, it0, pos, n), schedules,
                 Path(work_dir), env, total, global_batch, desc="simclr")
    return method, result


def train_simclr(cfg: dict[str, Any] | SimCLRConfig, store_dirs: Sequence[Path], out_path: Path, work_dir: Path,
                 device: str = "cpu") -> Path:
    """Pretrain the BrainIAC ResNet with SimCLR on the volume stores; export the backbone state dict."""
    from brainfm.ssl.data import VolumeSource
    from brainfm.ssl.export import export_resnet3d

    cfg = cfg if isinstance(cfg, SimCLRConfig) else SimCLRConfig.from_dict(cfg)
    env = init_distributed(device)
    source = VolumeSource(store_dirs)
    method, result = run_simclr(cfg, source, Path(work_dir), env)
    if result.finished and env.is_main:
        export_resnet3d(method.model.backbone, Path(out_path), cfg)
    return Path(out_path)
