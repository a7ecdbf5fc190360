"""BrainDINO pretraining (paper §4.2): DINOv3-style student/teacher self-distillation on slices.

Per iteration (global batch of B slices per process, 2 global + L local crops each):

* teacher (EMA of the student, eval mode) encodes the global crops; its DINO head output on
  CLS tokens and iBOT head output on the patches the student sees masked are turned into
  targets by Sinkhorn-Knopp (default) or centred softmax at the scheduled temperature;
* student encodes the global crops with iBOT masks (masked patch embeddings replaced by a
  learned mask token) and the local crops unmasked;
* loss = dino_weight * DINO (student global+local CLS vs teacher global CLS, same-crop pairs
  skipped, weighted by their pair counts as DINOv3) + koleo_weight * sum over the two global
  crops of KoLeo(student CLS) + ibot_weight * iBOT (masked patches);
* AdamW step with layer-wise lr decay and per-sub-model gradient clipping, then the teacher
  moves toward the student with the scheduled momentum.

Stage 2 (``stage="2"``) continues from the final state of stage 1 with upsampled slices and one
of five global/local crop-size pairs drawn per iteration. :func:`train_dino` is the entry point.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from brainfm.errors import CheckpointError, ConfigError
from brainfm.ssl.augment import MultiCrop
from brainfm.ssl.backbone import MaskableViT, build_timm_vit
from brainfm.ssl.checkpointing import load_checkpoint, load_state_strict
from brainfm.ssl.config import DinoConfig
from brainfm.ssl.distributed import DistEnv, all_reduce_sum, init_distributed
from brainfm.ssl.engine import FitResult, SSLMethod, fit
from brainfm.ssl.heads import DINOHead
from brainfm.ssl.losses import SoftmaxCenter, dino_cross_entropy, ibot_patch_loss, koleo_loss, sinkhorn_knopp
from brainfm.ssl.optim import param_groups
from brainfm.ssl.schedules import build_schedules

__all__ = ["SelfDistillModel", "DinoMethod", "build_dino_loader", "train_dino", "run_dino_stage", "teacher_entropies"]

log = logging.getLogger("brainfm.ssl")


class SelfDistillModel(nn.Module):
    """Backbone + DINO head + iBOT head; the student's forward is one DDP call per iteration."""

    def __init__(self, backbone: MaskableViT, dino_head: DINOHead, ibot_head: DINOHead):
        super().__init__()
        self.backbone = backbone
        self.dino_head = dino_head
        self.ibot_head = ibot_head

    def forward(self, global_crops: torch.Tensor, local_crops: torch.Tensor | None, masks: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        g = self.backbone(global_crops, masks=masks)
        cls = [g["cls"]]
        if local_crops is not None and local_crops.shape[0]:
            cls.append(self.backbone(local_crops)["cls"])
        n_g = g["cls"].shape[0]
        logits = self.dino_head(torch.cat(cls, dim=0))
        flat = masks.flatten(1)
        patches = g["patch"][flat]  # (M, D) in (crop, patch) order
        empty = patches.shape[0] == 0
        if empty:  # keep the iBOT head in the graph (DDP) with a zero-weight dummy token
            patches = g["patch"][:1, 0]
        return {"g_cls": g["cls"], "dino_global": logits[:n_g], "dino_local": logits[n_g:],
                "ibot": self.ibot_head(patches), "ibot_empty": torch.tensor(empty)}


class DinoMethod(SSLMethod):
    recipe = "dino"

    def __init__(self, cfg: DinoConfig, env: DistEnv):
        self.cfg = cfg
        self.env = env
        torch.manual_seed(cfg.seed)  # identical initial weights on every process
        s_vit = build_timm_vit(cfg.arch, cfg.arch_overrides, cfg.drop_path_rate)
        t_vit = build_timm_vit(cfg.arch, cfg.arch_overrides, 0.0)
        dim = int(s_vit.embed_dim)
        k_ibot = cfg.ibot_n_prototypes or cfg.n_prototypes

        def heads() -> tuple[DINOHead, DINOHead]:
            args = (cfg.head_hidden, cfg.head_bottleneck, cfg.head_layers, cfg.head_norm_last_layer)
            return DINOHead(dim, cfg.n_prototypes, *args), DINOHead(dim, k_ibot, *args)

        self.student = SelfDistillModel(MaskableViT(s_vit), *heads()).to(env.device)
        self.teacher = SelfDistillModel(MaskableViT(t_vit), *heads()).to(env.device)
        self.teacher.load_state_dict(self.student.state_dict())
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.dino_center = SoftmaxCenter(cfg.n_prototypes, cfg.center_momentum).to(env.device)
        self.ibot_center = SoftmaxCenter(k_ibot, cfg.center_momentum).to(env.device)
        self._pending: list[tuple[SoftmaxCenter, torch.Tensor]] = []
        if cfg.init:
            self.load_backbone_weights(Path(cfg.init))
        if cfg.compile:
            for model in (self.student, self.teacher):
                for blk in model.backbone.vit.blocks:
                    blk.compile()
        self.ddp: nn.Module = self.student
        if env.world_size > 1:
            self.ddp = DistributedDataParallel(
                self.student, device_ids=[env.device.index] if env.device.type == "cuda" else None,
                broadcast_buffers=False)

    # ------------------------------------------------------------------ identity and state
    @property
    def patch_size(self) -> int:
        return self.student.backbone.patch_size

    def signature(self) -> dict[str, Any]:
        c = self.cfg
        return {"recipe": self.recipe, "arch": c.arch, "arch_overrides": json.dumps(c.arch_overrides, sort_keys=True),
                "n_prototypes": c.n_prototypes, "ibot_n_prototypes": c.ibot_n_prototypes or c.n_prototypes,
                "head_hidden": c.head_hidden, "head_bottleneck": c.head_bottleneck, "head_layers": c.head_layers,
                "head_norm_last_layer": c.head_norm_last_layer}

    def state_dict(self) -> dict[str, Any]:
        return {"student": self.student.state_dict(), "teacher": self.teacher.state_dict(),
                "dino_center": self.dino_center.state_dict(), "ibot_center": self.ibot_center.state_dict()}

    def load_state_dict(self, state: dict[str, Any], path: Path) -> None:
        for key in ("student", "teacher", "dino_center", "ibot_center"):
            if key not in state:
                raise CheckpointError(path, f"no {key!r} entry: not a DINO/BrainFound training state")
        load_state_strict(self.student, state["student"], path, "student")
        load_state_strict(self.teacher, state["teacher"], path, "teacher")
        load_state_strict(self.dino_center, state["dino_center"], path, "DINO centre")
        load_state_strict(self.ibot_center, state["ibot_center"], path, "iBOT centre")

    def load_training_state(self, path: Path) -> None:
        """Continue from another run's final state (stage 2 after stage 1): weights only, new optimizer."""
        state = load_checkpoint(path, map_location=self.env.device)
        saved = state.get("signature", {})
        if {k: v for k, v in saved.items() if k != "recipe"} != {k: v for k, v in self.signature().items()
                                                                 if k != "recipe"}:
            raise CheckpointError(path, f"stage-1 state has another architecture: {saved} vs {self.signature()}")
        self.load_state_dict(state["model"], path)

    def load_backbone_weights(self, path: Path) -> None:
        """Initialise student and teacher backbones from a DINOv3-teacher, native DINOv3 or timm file."""
        from brainfm.ssl.export import load_backbone_weights

        load_backbone_weights(self.student.backbone.vit, path)
        self.teacher.backbone.vit.load_state_dict(self.student.backbone.vit.state_dict())

    def train(self) -> None:
        self.student.train()
        self.teacher.eval()

    def param_groups(self) -> list[dict]:
        return param_groups(self.student.named_parameters(), n_blocks=self.student.backbone.n_blocks,
                            layer_decay=self.cfg.layer_decay, patch_embed_lr_mult=self.cfg.patch_embed_lr_mult)

    def clip_modules(self) -> list[nn.Module]:
        return [self.student.backbone, self.student.dino_head, self.student.ibot_head]

    # ------------------------------------------------------------------ one iteration
    @torch.no_grad()
    def _teacher_targets(self, g: torch.Tensor, flat_masks: torch.Tensor, temp: float
                         ) -> tuple[torch.Tensor, torch.Tensor, int]:
        cfg = self.cfg
        out = self.teacher.backbone(g)
        cls_logits = self.teacher.dino_head(out["cls"]).float()
        patches = out["patch"][flat_masks]
        ibot_logits = (self.teacher.ibot_head(patches).float() if patches.shape[0]
                       else cls_logits.new_zeros((0, self.ibot_center.center.shape[1])))
        n_masked_total = int(all_reduce_sum(torch.tensor([float(patches.shape[0])], device=g.device)).item())
        if cfg.centering == "sinkhorn_knopp":
            cls_t = sinkhorn_knopp(cls_logits, temp, cfg.sinkhorn_iters)
            ibot_t = sinkhorn_knopp(ibot_logits, temp, cfg.sinkhorn_iters, n_total=n_masked_total)
        else:
            cls_t = self.dino_center.probs(cls_logits, temp)
            ibot_t = self.ibot_center.probs(ibot_logits, temp)
            self._pending = [(self.dino_center, cls_logits), (self.ibot_center, ibot_logits)]
        return cls_t, ibot_t, n_masked_total

    def forward_loss(self, batch: dict[str, torch.Tensor], it: int, sched: dict[str, float]
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.cfg
        g, loc, masks = batch["global"], batch["local"], batch["masks"].bool()
        n_g = 2
        b = g.shape[0] // n_g
        flat = masks.flatten(1)
        temp = sched["teacher_temp"]
        cls_t, ibot_t, n_masked_total = self._teacher_targets(g, flat, temp)
        out = self.ddp(g, loc if loc.shape[0] else None, masks)
        teacher_probs = cls_t.unflatten(0, (n_g, b))
        dino_global = dino_cross_entropy(out["dino_global"].unflatten(0, (n_g, b)), teacher_probs,
                                         cfg.student_temp, ignore_diagonal=cfg.global_ignore_diagonal)
        global_terms = n_g * (n_g - 1) if cfg.global_ignore_diagonal else n_g * n_g
        n_l = out["dino_local"].shape[0] // b if b else 0
        local_terms = n_g * n_l
        if n_l:
            dino_local = dino_cross_entropy(out["dino_local"].unflatten(0, (n_l, b)), teacher_probs, cfg.student_temp)
        else:
            dino_local = dino_global.new_zeros(())
        dino = (global_terms * dino_global + local_terms * dino_local) / (global_terms + local_terms)
        koleo = sum(koleo_loss(c) for c in out["g_cls"].unflatten(0, (n_g, b)))
        if bool(out["ibot_empty"]) or n_masked_total == 0:
            ibot = out["ibot"].float().sum() * 0.0
        else:
            per_crop = flat.sum(dim=1, keepdim=True).clamp_min(1).float()
            weights = (1.0 / per_crop).expand_as(flat)[flat]
            ibot = ibot_patch_loss(out["ibot"], ibot_t, weights, n_crops=flat.shape[0], student_temp=cfg.student_temp)
        loss = cfg.dino_weight * dino + cfg.koleo_weight * koleo + cfg.ibot_weight * ibot
        ent, batch_ent = teacher_entropies(cls_t)
        metrics = {"dino": dino.detach(), "dino_global": dino_global.detach(), "dino_local": dino_local.detach(),
                   "koleo": koleo.detach(), "ibot": ibot.detach(),
                   "masked_frac": flat.float().mean().detach(),
                   # a DINO loss can only fall well below ln K if the teacher is sharp (low per-sample
                   # entropy) without collapsing (high entropy of its batch mean)
                   "ln_k": math.log(cfg.n_prototypes), "teacher_entropy": ent, "teacher_batch_entropy": batch_ent}
        return loss, metrics

    @torch.no_grad()
    def after_step(self, it: int, sched: dict[str, float]) -> None:
        m = float(sched["momentum"])
        t_params = [p for p in self.teacher.parameters()]
        s_params = [p.detach() for p in self.student.parameters()]
        torch._foreach_mul_(t_params, m)
        torch._foreach_add_(t_params, s_params, alpha=1.0 - m)
        for center, logits in self._pending:
            center.update(logits)
        self._pending = []

    def discard_step(self) -> None:
        self._pending = []


@torch.no_grad()
def teacher_entropies(probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean per-sample entropy, entropy of the batch-mean distribution) of (N, K) teacher probabilities, in nats.

    Both are ln K for a uniform teacher; a sharp, non-collapsed teacher has a low first and a high
    second value; a collapsed one (every sample on the same prototypes) has both low. Under several
    processes each process reports its own batch (the logged value is their mean).
    """
    p = probs.float()
    per_sample = -(p * torch.log(p.clamp_min(1e-30))).sum(-1).mean()
    mean = p.mean(0)
    return per_sample, -(mean * torch.log(mean.clamp_min(1e-30))).sum()


# ---------------------------------------------------------------------------- data
def build_dino_loader(cfg: DinoConfig, source, env: DistEnv, patch_size: int, start_iter: int,
                      start_position: int, n_iters: int):
    """DataLoader of this process for iterations ``start_iter ..`` (see :mod:`brainfm.ssl.data`)."""
    from brainfm.ssl.data import DinoCropDataset, PositionBatchSampler, collate_dino, make_loader

    for g, l in cfg.pairs():
        if g % patch_size or l % patch_size:
            raise ConfigError(f"crop sizes {g}/{l} must be multiples of the patch size {patch_size}")
    augment = MultiCrop(cfg.global_scale, cfg.local_scale, cfg.n_local, cfg.hflip_prob, cfg.blur_prob,
                        cfg.blur_sigma, upsample_to=cfg.upsample_to)
    dataset = DinoCropDataset(source, augment, cfg.pairs(), patch_size, cfg.seed, cfg.mask_prob, cfg.mask_ratio,
                              cfg.mask_min_patches)
    sampler = PositionBatchSampler(start_position, start_iter, n_iters, cfg.batch_size * env.world_size,
                                   cfg.batch_size, env.rank, cfg.seed, cfg.pair_ratios())
    return make_loader(dataset, sampler, collate_dino, cfg.num_workers, pin_memory=env.device.type == "cuda",
                       prefetch_factor=cfg.prefetch_factor)


def run_dino_stage(cfg: DinoConfig, source, work_dir: Path, env: DistEnv, init_state: Path | None = None,
                   method_cls: type[DinoMethod] = DinoMethod) -> tuple[DinoMethod, FitResult]:
    """Build the method (optionally from a previous stage's state) and train it in ``work_dir``."""
    method = method_cls(cfg, env)
    if init_state is not None:
        method.load_training_state(Path(init_state))
    global_batch = cfg.batch_size * env.world_size
    schedules = build_schedules(cfg, global_batch, cfg.iters)
    result = fit(method, cfg,
                 lambda it0, pos, n: build_dino_loader(cfg, source, env, method.patch_size, it0, pos, n),
                 schedules, work_dir, env, cfg.iters, global_batch, desc=f"{method.recipe} stage {cfg.stage}")
    return method, result


def train_dino(cfg: dict[str, Any] | DinoConfig, store_dirs: Sequence[Path], out_path: Path, work_dir: Path,
               device: str = "cpu", init_state: Path | None = None) -> Path:
    """Pretrain BrainDINO on the slice stores and export the teacher; resumes from ``work_dir``.

    Writes ``out_path`` (DINOv3 ``{"teacher": {"backbone.*", "dino_head.*", "ibot_head.*"}}``),
    ``<out stem>_timm.safetensors`` (timm weights of the teacher backbone) and returns ``out_path``.
    Under ``torchrun`` every process calls this; only rank 0 writes the exports.
    """
    from brainfm.ssl.data import SliceSource
    from brainfm.ssl.export import export_teacher

    cfg = cfg if isinstance(cfg, DinoConfig) else DinoConfig.from_dict(cfg)
    env = init_distributed(device)
    source = SliceSource(store_dirs)
    method, result = run_dino_stage(cfg, source, Path(work_dir), env, init_state=init_state)
    if result.finished and env.is_main:
        export_teacher(method, Path(out_path), cfg, result)
    return Path(out_path)
