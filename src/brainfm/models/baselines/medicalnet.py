"""MedicalNet baseline (Chen et al. 2019, "Med3D"; Tencent/MedicalNet): the BrainIAC paper's transfer baseline.

An optional table row: it appears only when the user supplies MedicalNet weights
(``resnet_50_23dataset.pth`` and siblings, also mirrored on the Hugging Face hub as
``TencentMedicalNet/MedicalNet-Resnet<depth>``).

Architecture. MedicalNet's 3D ResNets (``models/resnet.py``) have MONAI's module and parameter names:
    a 7^3 stride-2 stem without bias, max-pool, four residual stages, shortcut "B" with a *bias-free*
    1x1 downsampling conv for ResNet10/50 (shortcut "A", parameter-free, for 18/34). Built here as
    ``monai.networks.nets.resnet<depth>(spatial_dims=3, n_input_channels=1, conv1_t_stride=2,
    feed_forward=False, shortcut_type=..., bias_downsample=...)`` with the per-depth settings MONAI
    itself uses to load MedicalNet weights (``get_medicalnet_pretrained_resnet_args``). MedicalNet's
    last two stages use stride 1 with dilation 2 and 4; MONAI's port ignores that and keeps strides 2.
    ``dilated=True`` (default) restores MedicalNet's own layout, under which the weights were learned
    (same parameters, 8x finer last-stage grid, more compute); ``dilated=False`` is MONAI's port.
    ``cls`` is the global average of ``layer4`` (2048-d for ResNet50).

Checkpoint. ``{"state_dict": {"module.<resnet key>": ...}}`` (a DataParallel model, recognised as the
    ``MedicalNet DataParallel`` layout); the ``module.`` prefix is stripped key by key (as MONAI
    does) and every key must match; a segmentation head ``conv_seg.*`` (present in MedicalNet's
    fine-tuned models, not in the pretrained ones) is ignored, listed in the load info and logged.

Input. MedicalNet stores volumes transposed to (z, y, x) ("from WHD format to DHW") and normalises
    them with mean/std over voxels > 0, filling the background with N(0, 1) noise during training.
    Here: canonical (z, x, y) -> (z, y, x), background rebased to the minimum, trilinear resize to
    ``img_size`` (default 128^3, as BrainIAC), z-score over the foreground, background kept 0
    (deterministic features).
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.networks.nets.resnet import get_medicalnet_pretrained_resnet_args

from brainfm.errors import ConfigError
from brainfm.models.baselines.brainiac import RESNET_FEATURES, ResNetEncoder3D
from brainfm.models.baselines.common import AXES_ZYX
from brainfm.models.registry import register_encoder

__all__ = ["medicalnet_encoder"]

_LAYOUT = "MedicalNet {'state_dict': {'module.<MONAI resnet key>': ...}} (conv_seg.* ignored)"


def medicalnet_encoder(*, arch: str = "resnet50", dilated: bool = True, img_size: int | Sequence[int] = 128,
                       seed: int = 0) -> ResNetEncoder3D:
    """The MedicalNet ResNet as an (unloaded) encoder; ``arch`` in resnet10/18/34/50."""
    if arch not in RESNET_FEATURES:
        raise ConfigError(f"MedicalNet arch must be one of {sorted(RESNET_FEATURES)}, got {arch!r}")
    bias_downsample, shortcut_type = get_medicalnet_pretrained_resnet_args(int(arch[len("resnet"):]))
    return ResNetEncoder3D(arch=arch, recipe="medicalnet", img_size=img_size, conv1_stride=2,
                           shortcut_type=shortcut_type, bias_downsample=bias_downsample, dilated=dilated,
                           input_perm=AXES_ZYX, seed=seed, expected_layout=_LAYOUT)


@register_encoder("medicalnet")
def medicalnet(weights: str | None = None, *, arch: str = "resnet50", dilated: bool = True,
               img_size: int | Sequence[int] = 128, seed: int = 0) -> ResNetEncoder3D:
    """MedicalNet 3D ResNet from a user-supplied ``resnet_<depth>[_23dataset].pth``."""
    if not weights:
        raise ConfigError("encoder 'medicalnet' needs a MedicalNet weights file (resnet_50_23dataset.pth; "
                          "use 'medicalnet_scratch' for a randomly initialised control)")
    enc = medicalnet_encoder(arch=arch, dilated=dilated, img_size=img_size, seed=seed)
    enc.load_weights(weights)
    return enc


@register_encoder("medicalnet_scratch")
def medicalnet_scratch(weights: str | None = None, *, arch: str = "resnet50", dilated: bool = True,
                       img_size: int | Sequence[int] = 128, seed: int = 0) -> ResNetEncoder3D:
    """Random-initialisation control of the MedicalNet ResNet (MONAI init drawn from ``seed``)."""
    if weights:
        raise ConfigError("encoder 'medicalnet_scratch' takes no weights (it is the random-initialisation control)")
    return medicalnet_encoder(arch=arch, dilated=dilated, img_size=img_size, seed=seed)
