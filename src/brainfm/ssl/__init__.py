"""Self-supervised pretraining recipes.

* BrainDINO (paper §4.2): DINOv3-style self-distillation on axial slices — :func:`train_dino`,
  :class:`DinoConfig` (stage 1 and the high-resolution stage 2).
* BrainIAC: SimCLR on 3D volumes with a MONAI ResNet50 — :func:`train_simclr`, :class:`SimCLRConfig`.
* BrainFound: DINOv2-style self-distillation continued from a ViT initialisation on stacked
  slices — :func:`train_brainfound`, :class:`BrainFoundConfig`.

The workflow's ``pretrain`` step is :func:`brainfm.ssl.pretrain`. Modules: ``config`` (dataclasses
with paper defaults), ``augment``, ``masking``, ``heads``, ``losses``, ``schedules``, ``optim``,
``data`` (streaming from the sharded stores), ``distributed``, ``checkpointing``, ``engine``
(the shared loop), ``dino``, ``simclr``, ``brainfound``, ``export``, ``evaluate`` (probe of
pretrained vs random encoders), ``entry``, ``launch``.
"""

from brainfm.ssl.config import STAGE2_DEFAULTS, BrainFoundConfig, DinoConfig, SimCLRConfig

__all__ = [
    "DinoConfig",
    "BrainFoundConfig",
    "SimCLRConfig",
    "STAGE2_DEFAULTS",
    "train_dino",
    "train_simclr",
    "train_brainfound",
    "pretrain",
]


def __getattr__(name: str):
    # heavy modules (timm, monai) load on first use
    if name == "train_dino":
        from brainfm.ssl.dino import train_dino

        return train_dino
    if name == "train_simclr":
        from brainfm.ssl.simclr import train_simclr

        return train_simclr
    if name == "train_brainfound":
        from brainfm.ssl.brainfound import train_brainfound

        return train_brainfound
    if name == "pretrain":
        from brainfm.ssl.entry import pretrain

        return pretrain
    raise AttributeError(f"module 'brainfm.ssl' has no attribute {name!r}")
