"""Configuration of the three pretraining recipes, one dataclass each, with the papers' defaults.

The workflow passes a plain dict (the ``params`` of a ``pretrain.<run>`` entry, merged with one
``stages`` item for DINO); ``from_dict`` checks every key so a typo fails at start-up instead of
silently training with a default. Defaults are the paper values; where a paper is silent the
default is the DINOv3 (BrainDINO) or DINOv2 (BrainFound) reference value, marked "ref" below.

Demo scale (CPU, minutes) overrides e.g.::

    {"arch_overrides": {"embed_dim": 96, "depth": 4, "num_heads": 3, "patch_size": 8, "init_values": 1.0},
     "global_size": 64, "local_size": 32, "n_local": 4, "n_prototypes": 1024, "head_hidden": 256,
     "head_bottleneck": 64, "iters": 300, "warmup_iters": 20, "batch_size": 32, "lr": 1e-3,
     "lr_scaling": "none", "centering": "softmax", "momentum": 0.95, "teacher_temp_warmup_iters": 60,
     "freeze_last_layer_iters": 0}

Why the demo departs from the paper on three keys: with a few hundred iterations and batch 32,
(1) Sinkhorn-Knopp over K >> batch prototypes and (2) LayerScale 1e-5 (every CLS token almost
identical at initialisation) keep the DINO targets uniform, so the DINO loss stays at log K
(the small-batch failure reported in dinov3 issue #199); softmax centering and ``init_values``
1.0 let it move; (3) momentum 0.994 makes the teacher follow too slowly for 300 steps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from brainfm.errors import ConfigError

__all__ = ["RunConfig", "DinoConfig", "BrainFoundConfig", "SimCLRConfig", "STAGE2_DEFAULTS"]

T = TypeVar("T", bound="RunConfig")

#: Paper §4.2 high-resolution stage: slices upsampled to 1024 and five global/local crop pairs.
STAGE2_DEFAULTS: dict[str, Any] = {
    "upsample_to": 1024,
    "crop_pairs": [[512, 112], [768, 112], [768, 168], [768, 224], [768, 336]],
    "crop_pair_ratios": [0.30, 0.30, 0.30, 0.05, 0.05],
    "batch_size": 56,
    "iters": 10_000,
    "warmup_iters": 0,  # ref: continuing from stage 1, no re-warmup (paper silent)
    "teacher_temp_warmup_iters": 0,  # the teacher temperature already reached its plateau in stage 1
    "freeze_last_layer_iters": 0,
}


def _as_pair(name: str, value: Any, kind: type = float) -> tuple:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(f"{name} must be a pair [a, b], got {value!r}")
    return (kind(value[0]), kind(value[1]))


@dataclass
class RunConfig:
    """Settings every recipe shares: optimisation, schedules, runtime, checkpoints and logging."""

    # optimisation
    lr: float = 1e-4  # paper: peak base lr (scaled by ``lr_scaling``)
    min_lr: float = 1e-6  # ref: end of the cosine decay
    lr_scaling: str = "sqrt_wrt_1024"  # ref: DINOv3 rule lr * 4*sqrt(global_batch/1024); "none" | "linear_wrt_256"
    warmup_iters: int = 10_000  # paper
    iters: int = 500_000  # paper
    batch_size: int = 256  # paper: per process (per GPU)
    weight_decay: float = 0.04  # paper: constant
    weight_decay_end: float | None = None  # None: constant
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float | None = 3.0  # paper: max gradient norm (per sub-model, as DINOv3)
    # runtime
    seed: int = 0
    num_workers: int = 8
    prefetch_factor: int = 2
    compile: bool = False  # torch.compile the transformer blocks / network
    checkpoint_every: int = 1000  # iterations between resume checkpoints (also written at the end)
    keep_checkpoints: int = 2
    log_every: int = 10
    max_nonfinite: int = 3  # stop after this many consecutive non-finite losses
    max_iters_this_run: int | None = None  # stop early (for tests / time-limited jobs); resume later

    _section: ClassVar[str] = "run"
    _min_iters: ClassVar[int] = 1

    @classmethod
    def from_dict(cls: type[T], d: dict[str, Any] | None) -> T:
        """Build from a plain dict; unknown keys and wrong types raise :class:`ConfigError`."""
        d = dict(d or {})
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown key(s) {unknown}; known keys: {sorted(names)}")
        base = cls()
        for f_name, value in cls._preset(d).items():
            setattr(base, f_name, value)
        for key, value in d.items():
            setattr(base, key, value)
        base._coerce()
        base.validate()
        return base

    @classmethod
    def _preset(cls, d: dict[str, Any]) -> dict[str, Any]:
        """Defaults that depend on another key (e.g. stage 2); user keys still win."""
        return {}

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items()}

    def _coerce(self) -> None:
        self.betas = _as_pair("betas", self.betas)
        for name in ("lr", "min_lr", "weight_decay"):
            setattr(self, name, float(getattr(self, name)))
        for name in ("warmup_iters", "iters", "batch_size", "seed", "num_workers", "checkpoint_every",
                     "keep_checkpoints", "log_every", "max_nonfinite", "prefetch_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
                raise ConfigError(f"{type(self).__name__}.{name} must be an integer, got {value!r}")
            setattr(self, name, int(value))

    def validate(self) -> None:
        name = type(self).__name__
        if self.iters < self._min_iters or self.batch_size < 1:
            raise ConfigError(f"{name}: iters must be >= {self._min_iters} and batch_size >= 1")
        if self.warmup_iters < 0 or (self.iters and self.warmup_iters > self.iters):
            raise ConfigError(f"{name}: warmup_iters must be in [0, iters], got {self.warmup_iters}")
        if self.lr_scaling not in ("none", "sqrt_wrt_1024", "linear_wrt_256"):
            raise ConfigError(f"{name}: lr_scaling must be none|sqrt_wrt_1024|linear_wrt_256")
        if self.lr <= 0 or self.min_lr < 0:
            raise ConfigError(f"{name}: lr must be > 0 and min_lr >= 0")
        if self.checkpoint_every < 1 or self.keep_checkpoints < 1 or self.log_every < 1 or self.max_nonfinite < 1:
            raise ConfigError(f"{name}: checkpoint_every, keep_checkpoints, log_every, max_nonfinite must be >= 1")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise ConfigError(f"{name}: clip_grad must be > 0 or null")


@dataclass
class DinoConfig(RunConfig):
    """BrainDINO (paper §4.2): DINOv3-style self-distillation on axial slices, stage 1 or 2."""

    # architecture (timm DINOv3 ViT; ViT-B/16, RoPE, 4 register tokens in the paper)
    arch: str = "vit_base_patch16_dinov3"
    arch_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. embed_dim, depth, num_heads, patch_size
    drop_path_rate: float = 0.2  # ref: BrainDINO's downstream vit_base(drop_path_rate=0.2)
    # multi-crop
    global_size: int = 256
    local_size: int = 112
    n_local: int = 8
    global_scale: tuple[float, float] = (0.32, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.32)
    hflip_prob: float = 0.5
    blur_prob: tuple[float, float, float] = (1.0, 0.1, 0.5)  # ref DINOv3: global 1, global 2, locals
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # ref DINOv3 (pixels of the output crop)
    # stage 2 (high resolution): set stage "2" to get the paper's values (see STAGE2_DEFAULTS)
    stage: str = "1"
    upsample_to: int | None = None  # slices are upsampled to this size before cropping
    crop_pairs: list[list[int]] | None = None  # [[global, local], ...]; one pair per iteration
    crop_pair_ratios: list[float] | None = None
    # heads
    n_prototypes: int = 65536
    ibot_n_prototypes: int | None = None  # None: same as n_prototypes
    head_hidden: int = 2048
    head_bottleneck: int = 256
    head_layers: int = 3
    head_norm_last_layer: bool = False  # ref DINOv3: plain last layer; True: unit-norm prototypes (DINOv1/v2)
    # losses
    centering: str = "sinkhorn_knopp"  # or "softmax" (EMA center)
    sinkhorn_iters: int = 3
    center_momentum: float = 0.9
    student_temp: float = 0.1
    teacher_temp: float = 0.07  # ref DINOv3: plateau
    teacher_temp_warmup: float = 0.04  # ref DINOv3: start of the linear warmup
    teacher_temp_warmup_iters: int = 37_500  # ref DINOv3: 30 "epochs" of 1250 iterations
    dino_weight: float = 1.0
    ibot_weight: float = 1.0  # paper: lambda = 1
    koleo_weight: float = 0.1  # paper
    global_ignore_diagonal: bool = True  # ref DINOv3: skip student(A) vs teacher(A)
    mask_prob: float = 0.5  # paper: probability that a global crop is masked
    mask_ratio: tuple[float, float] = (0.1, 0.5)  # paper: ratio ~ U[0.1, 0.5]
    mask_min_patches: int = 4  # ref: smallest masked block
    # teacher
    momentum: float = 0.994  # paper: fixed
    momentum_end: float | None = None  # None: constant
    # optimiser extras
    layer_decay: float = 0.9  # paper
    patch_embed_lr_mult: float = 0.2  # ref DINOv3
    freeze_last_layer_iters: int = 1250  # ref DINOv3: 1 "epoch"
    # initialisation: weights for the student and teacher backbones (DINOv3 teacher or timm file)
    init: str | None = None

    _section: ClassVar[str] = "dino"

    @classmethod
    def _preset(cls, d: dict[str, Any]) -> dict[str, Any]:
        preset = dict(STAGE2_DEFAULTS) if str(d.get("stage", "1")) == "2" else {}
        if "crop_pairs" in d and "crop_pair_ratios" not in d:
            preset["crop_pair_ratios"] = None  # user pairs without ratios: equal ratios
        return preset

    def _coerce(self) -> None:
        super()._coerce()
        self.stage = str(self.stage)
        self.global_scale = _as_pair("global_scale", self.global_scale)
        self.local_scale = _as_pair("local_scale", self.local_scale)
        self.blur_sigma = _as_pair("blur_sigma", self.blur_sigma)
        self.mask_ratio = _as_pair("mask_ratio", self.mask_ratio)
        if not isinstance(self.blur_prob, (list, tuple)) or len(self.blur_prob) != 3:
            raise ConfigError(f"blur_prob must be [global1, global2, local], got {self.blur_prob!r}")
        self.blur_prob = tuple(float(p) for p in self.blur_prob)
        if not isinstance(self.arch_overrides, dict):
            raise ConfigError(f"arch_overrides must be a mapping, got {self.arch_overrides!r}")
        if self.crop_pairs is not None:
            self.crop_pairs = [list(_as_pair("crop_pairs item", p, int)) for p in self.crop_pairs]
            ratios = self.crop_pair_ratios or [1.0] * len(self.crop_pairs)
            self.crop_pair_ratios = [float(r) for r in ratios]

    def validate(self) -> None:
        super().validate()
        if self.stage not in ("1", "2"):
            raise ConfigError(f"DinoConfig.stage must be '1' or '2', got {self.stage!r}")
        if self.centering not in ("sinkhorn_knopp", "softmax"):
            raise ConfigError(f"DinoConfig.centering must be 'sinkhorn_knopp' or 'softmax', got {self.centering!r}")
        if self.n_local < 0 or self.global_size < 1 or self.local_size < 1:
            raise ConfigError("DinoConfig: n_local >= 0 and crop sizes >= 1 required")
        for name in ("global_scale", "local_scale"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi <= 1:
                raise ConfigError(f"DinoConfig.{name} must satisfy 0 < lo <= hi <= 1, got {(lo, hi)}")
        lo, hi = self.mask_ratio
        if not 0 <= lo <= hi < 1 or not 0 <= self.mask_prob <= 1:
            raise ConfigError("DinoConfig: mask_ratio must satisfy 0 <= lo <= hi < 1 and mask_prob in [0, 1]")
        if self.crop_pairs is not None:
            if not self.crop_pairs or len(self.crop_pairs) != len(self.crop_pair_ratios or []):
                raise ConfigError("DinoConfig: crop_pairs and crop_pair_ratios must be non-empty and equally long")
            if any(r < 0 for r in self.crop_pair_ratios) or sum(self.crop_pair_ratios) <= 0:
                raise ConfigError("DinoConfig.crop_pair_ratios must be >= 0 with a positive sum")
        if not 0 < self.layer_decay <= 1 or not 0 <= self.momentum <= 1:
            raise ConfigError("DinoConfig: layer_decay in (0, 1] and momentum in [0, 1] required")
        if self.teacher_temp <= 0 or self.teacher_temp_warmup <= 0 or self.student_temp <= 0:
            raise ConfigError("DinoConfig: temperatures must be > 0")
        if self.n_prototypes < 2 or self.head_layers < 1:
            raise ConfigError("DinoConfig: n_prototypes >= 2 and head_layers >= 1 required")

    # ------------------------------------------------------------------ derived values
    def pairs(self) -> list[tuple[int, int]]:
        """The (global, local) crop-size pairs and nothing else: one pair unless stage-2 pairs are set."""
        if self.crop_pairs:
            return [(int(g), int(l)) for g, l in self.crop_pairs]
        return [(self.global_size, self.local_size)]

    def pair_ratios(self) -> list[float]:
        return list(self.crop_pair_ratios) if self.crop_pairs else [1.0]


@dataclass
class BrainFoundConfig(DinoConfig):
    """BrainFound: DINOv2-style self-distillation continued from a ViT initialisation on stacked slices.

    Input channels are three adjacent axial slices (``stack="adjacent"``) or the same slice of
    three modalities (``stack="modalities"``), read from the downstream volume store. DINOv2
    reference values: softmax centering, momentum 0.992 -> 1, weight decay 0.04 -> 0.4,
    global 224 / local 98 crops, patch 14, no register tokens.
    """

    arch: str = "vit_large_patch14_dinov2"
    drop_path_rate: float = 0.3
    global_size: int = 224
    local_size: int = 98
    centering: str = "softmax"
    momentum: float = 0.992
    momentum_end: float | None = 1.0
    weight_decay_end: float | None = 0.4
    teacher_temp_warmup_iters: int = 37_500
    blur_prob: tuple[float, float, float] = (1.0, 0.1, 0.5)
    stack: str = "adjacent"  # "adjacent" | "modalities"
    modalities: list[str] = field(default_factory=lambda: ["T1", "T2", "FLAIR"])
    slice_step: int = 1  # distance between adjacent stacked slices (in store slices)

    _section: ClassVar[str] = "brainfound"

    @classmethod
    def _preset(cls, d: dict[str, Any]) -> dict[str, Any]:
        return {}

    def validate(self) -> None:
        super().validate()
        if self.stage != "1" or self.crop_pairs:
            raise ConfigError("BrainFoundConfig: no high-resolution stage (stage must be '1', no crop_pairs)")
        if self.stack not in ("adjacent", "modalities"):
            raise ConfigError(f"BrainFoundConfig.stack must be 'adjacent' or 'modalities', got {self.stack!r}")
        if self.stack == "modalities" and len(self.modalities) != 3:
            raise ConfigError("BrainFoundConfig.modalities must list exactly 3 modalities (one per channel)")
        if self.slice_step < 1:
            raise ConfigError("BrainFoundConfig.slice_step must be >= 1")


@dataclass
class SimCLRConfig(RunConfig):
    """BrainIAC: SimCLR (NT-Xent) on 3D volumes with a MONAI 3D ResNet50 (2048-d features).

    Paper: 128^3 input, flips, Gaussian blur, Gaussian noise, affine (scale, rotation,
    translation), random crop + resize, 200 epochs, batch 32. The rest are SimCLR reference values.
    """

    arch: str = "resnet50"  # MONAI resnet{10,18,34,50}
    conv1_stride: int = 2  # BrainIAC v1 stem: Conv3d(1, 64, 7, stride 2, padding 3)
    input_size: int = 128  # paper
    proj_hidden: int = 2048
    proj_dim: int = 128  # ref SimCLR
    temperature: float = 0.1  # ref SimCLR
    epochs: float | None = 200  # paper; used when ``iters`` is null
    iters: int = 0  # 0: derived from epochs and the number of volumes
    batch_size: int = 32  # paper (global batch per process)
    lr: float = 1e-4
    lr_scaling: str = "none"
    warmup_iters: int = 0
    weight_decay: float = 1e-5
    clip_grad: float | None = None
    # augmentations (probabilities and ranges)
    crop_scale: tuple[float, float] = (0.6, 1.0)  # edge fraction of the random sub-cube
    flip_prob: float = 0.5  # per axis
    affine_prob: float = 0.5
    rotate_deg: float = 15.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    translate_frac: float = 0.05
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.5, 1.5)
    noise_prob: float = 0.5
    noise_std: float = 0.1

    _section: ClassVar[str] = "simclr"
    _min_iters: ClassVar[int] = 0  # 0: derived from epochs

    def _coerce(self) -> None:
        if self.iters in (None, 0):
            self.iters = 0
        super()._coerce()
        self.crop_scale = _as_pair("crop_scale", self.crop_scale)
        self.scale_range = _as_pair("scale_range", self.scale_range)
        self.blur_sigma = _as_pair("blur_sigma", self.blur_sigma)

    def validate(self) -> None:
        if self.iters == 0 and not self.epochs:
            raise ConfigError("SimCLRConfig: set iters or epochs")
        super().validate()
        if self.arch not in ("resnet10", "resnet18", "resnet34", "resnet50"):
            raise ConfigError(f"SimCLRConfig.arch must be a MONAI resnet (resnet10..resnet50), got {self.arch!r}")
        if self.temperature <= 0 or self.input_size < 8:
            raise ConfigError("SimCLRConfig: temperature > 0 and input_size >= 8 required")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ConfigError("SimCLRConfig.crop_scale must satisfy 0 < lo <= hi <= 1")
