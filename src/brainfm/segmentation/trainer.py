"""The nnU-Net trainer of the frozen-encoder networks: nnU-Net's loop, the paper's optimisation.

:class:`FrozenEncoderTrainer` subclasses ``nnUNetTrainer`` and changes only what the paper
changes; data loading, augmentation ("standard nnU-Net augmentations"), the region-based
Dice + cross-entropy loss (BCE per region, as nnU-Net trains BraTS), the 12-norm gradient clip,
fp16 autocast with a grad scaler on CUDA (none on CPU), the EMA pseudo-Dice and checkpointing
all stay nnU-Net's. The network is built by nnU-Net from the plans entry (see
:func:`brainfm.segmentation.network.build_network`).

What changes (:class:`TrainSettings`):

* deep supervision off; 250 training / 50 validation iterations per epoch, 100 epochs (paper);
* AdamW (betas 0.9/0.98, weight decay 0.05, lr 3e-4: the public code's decoder group) over the
  *trainable* parameters only. The encoder is frozen, as the paper states ("77.4% of total
  parameters ... frozen"); the public BrainDINO code instead passes the ViT to AdamW at 3e-5 and
  never freezes it. We reproduce the paper; full fine-tuning is the separate comparison of
  Supp. Table 6: ``encoder_lr`` set trains the encoder too, in its own AdamW group at that rate
  (the public code's 3e-5), both groups on the same schedule.
* learning-rate schedule: nnU-Net's ``PolyLRScheduler`` over ``lr_horizon_epochs`` with
  ``lr_exponent``. 2D (public code): linear decay (exponent 1) over the run; 3D baselines
  (paper): nnU-Net's default poly 0.9 over 1000 epochs, stopped at 100.
* the training cases of fold 0 can be restricted to a subset (label-ratio sweep); the validation
  cases stay those of fold 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from brainfm.errors import ConfigError

__all__ = ["TrainSettings", "FrozenEncoderTrainer", "GroupPolyLR", "PAPER_2D", "PAPER_3D"]


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation and loop settings; defaults are the paper's 2D recipe."""

    num_epochs: int = 100
    iterations_per_epoch: int = 250
    val_iterations_per_epoch: int = 50
    initial_lr: float = 3e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    lr_horizon_epochs: int | None = None  # None: num_epochs
    lr_exponent: float = 1.0
    oversample_foreground: float = 0.33
    batch_size: int | None = None  # None: the plans' batch size
    save_every: int = 50  # nnU-Net's checkpoint_latest period (epochs)
    plot_progress: bool = True  # nnU-Net's progress.png after every epoch
    encoder_lr: float | None = None  # None: frozen encoder; else full fine-tuning at this rate

    def __post_init__(self) -> None:
        for name in ("num_epochs", "iterations_per_epoch", "save_every"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"segmentation training: {name} must be >= 1, got {getattr(self, name)}")
        if int(self.val_iterations_per_epoch) < 1:
            raise ConfigError("segmentation training: val_iterations_per_epoch must be >= 1 (nnU-Net logs a "
                              "pseudo Dice every epoch)")
        if self.lr_horizon_epochs is not None and int(self.lr_horizon_epochs) < int(self.num_epochs):
            raise ConfigError(f"lr_horizon_epochs ({self.lr_horizon_epochs}) must be >= num_epochs ({self.num_epochs})")
        if self.encoder_lr is not None and not float(self.encoder_lr) > 0:
            raise ConfigError(f"segmentation training: encoder_lr must be > 0 (or null: frozen), got {self.encoder_lr}")
        if not self.initial_lr > 0 or self.weight_decay < 0 or not 0 <= self.oversample_foreground <= 1:
            raise ConfigError("segmentation training: initial_lr > 0, weight_decay >= 0 and oversample_foreground in "
                              "[0, 1] are required")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None, base: TrainSettings | None = None) -> TrainSettings:
        """``base`` (default: the paper's 2D settings) with ``values`` replacing fields; unknown keys are errors."""
        out = asdict(base or cls())
        unknown = sorted(set(values or {}) - set(out))
        if unknown:
            raise ConfigError(f"unknown segmentation training setting(s) {unknown}; known: {sorted(out)}")
        out.update(values or {})
        out["betas"] = tuple(out["betas"])
        return cls(**out)

    @property
    def horizon(self) -> int:
        return int(self.lr_horizon_epochs or self.num_epochs)


class GroupPolyLR(PolyLRScheduler):
    """nnU-Net's poly schedule, applied to each parameter group's own starting rate.

    nnU-Net's scheduler sets one rate for every group; fine-tuning keeps the encoder's group at its
    own (lower) rate on the same decay. With one group it is nnU-Net's schedule exactly.
    """

    def step(self, current_step: int | None = None) -> None:
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        factor = (1 - current_step / self.max_steps) ** self.exponent
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


PAPER_2D = TrainSettings()
PAPER_3D = TrainSettings(lr_horizon_epochs=1000, lr_exponent=0.9)


class FrozenEncoderTrainer(nnUNetTrainer):
    """nnU-Net trainer for :mod:`brainfm.segmentation.network` models (see the module docstring).

    Construct as any nnU-Net trainer (``plans`` must carry ``"continue_training"``, as nnU-Net's
    own entry point adds), then call :meth:`configure` before ``run_training()``.
    """

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False
        self.settings = PAPER_2D
        self.training_cases: list[str] | None = None
        self.configure(PAPER_2D)

    def configure(self, settings: TrainSettings, training_cases: Sequence[str] | None = None) -> None:
        """Apply ``settings`` and (optionally) restrict fold 0's training cases; only before initialisation."""
        if self.was_initialized:
            raise RuntimeError("configure() must be called before the trainer is initialised")
        self.settings = settings
        self.num_epochs = int(settings.num_epochs)
        self.num_iterations_per_epoch = int(settings.iterations_per_epoch)
        self.num_val_iterations_per_epoch = int(settings.val_iterations_per_epoch)
        self.initial_lr = float(settings.initial_lr)
        self.weight_decay = float(settings.weight_decay)
        self.oversample_foreground_percent = float(settings.oversample_foreground)
        self.save_every = int(settings.save_every)
        self.training_cases = sorted(map(str, training_cases)) if training_cases is not None else None
        # nnU-Net's progress figure costs about a second per epoch, a lot for short CPU epochs
        if settings.plot_progress:
            vars(self.logger).pop("plot_progress_png", None)
        else:
            self.logger.plot_progress_png = lambda output_folder: None

    def _set_batch_size_and_oversample(self) -> None:
        super()._set_batch_size_and_oversample()
        if self.settings.batch_size is not None:
            if self.is_ddp:
                raise ConfigError("a batch_size override is not supported with DDP")
            self.batch_size = int(self.settings.batch_size)

    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, PolyLRScheduler]:
        net = self.network.module if self.is_ddp else self.network
        net = getattr(net, "_orig_mod", net)  # torch.compile's wrapper
        encoder = {id(p) for p in net.encoder.parameters()}
        rest = [p for p in net.parameters() if p.requires_grad and id(p) not in encoder]
        tuned = [p for p in net.encoder.parameters() if p.requires_grad]
        if not rest:
            raise ConfigError("the network has no trainable parameter outside its encoder")
        if tuned and self.settings.encoder_lr is None:
            raise ConfigError("the encoder is trainable but no encoder_lr is set (frozen-encoder training)")
        if self.settings.encoder_lr is not None and not tuned:
            raise ConfigError("encoder_lr is set (full fine-tuning) but the network's encoder is frozen")
        groups = [{"params": rest, "lr": self.initial_lr}]
        if tuned:
            groups.append({"params": tuned, "lr": float(self.settings.encoder_lr)})
        optimizer = torch.optim.AdamW(groups, lr=self.initial_lr, weight_decay=self.weight_decay,
                                      betas=tuple(self.settings.betas))
        scheduler = GroupPolyLR(optimizer, self.initial_lr, self.settings.horizon, self.settings.lr_exponent)
        return optimizer, scheduler

    def do_split(self) -> tuple[list[str], list[str]]:
        train, val = super().do_split()
        if self.training_cases is None:
            return train, val
        extra = sorted(set(self.training_cases) - set(train))
        if extra:
            raise ConfigError(f"training subset has {len(extra)} case(s) outside fold {self.fold}'s training cases: "
                              f"{extra[:5]}")
        self.print_to_log_file(f"training on {len(self.training_cases)} of {len(train)} fold-{self.fold} training "
                               f"cases; {len(val)} validation cases")
        return list(self.training_cases), val

    def epoch_seconds(self) -> list[float]:
        """Wall time of each finished epoch (training + validation iterations), from nnU-Net's log."""
        starts = self.logger.get_value("epoch_start_timestamps", step=None)
        ends = self.logger.get_value("epoch_end_timestamps", step=None)
        return [float(e - s) for s, e in zip(starts, ends)]
