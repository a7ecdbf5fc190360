"""Trainable decoders on frozen encoder features.

:class:`PatchDecoder` is the Primus-style decoder of the public BrainDINO segmentation code
(``PatchDecode``): the token grid (concatenated blocks, ``C`` channels at 1/p of the input)
goes through log2(p) stages of a stride-2 transposed convolution that halves the channels,
a channel LayerNorm and GELU, back to full resolution, then a 1×1 convolution to the classes.
It works in 2D (slice ViTs) and 3D (volume ViTs). For ViT-B/16 on four blocks (3072 channels)
in 2D it holds 25,076,739 parameters, the paper's 22.6% of 110.7 M with the frozen ViT.

:class:`SkipDecoder3D` serves the convolutional BrainMVP encoder, whose four stages already sit
at 1/2 ... 1/16 resolution: a U-Net style path that upsamples, concatenates each stage and
convolves (3³ conv, instance norm, LeakyReLU as in nnU-Net), then a last upsampling to full
resolution and a 1×1×1 head.

Neither has deep supervision; ``deep_supervision`` exists only so nnU-Net can switch it off.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from dynamic_network_architectures.building_blocks.patch_encode_decode import LayerNormNd
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn

from brainfm.errors import ConfigError

__all__ = ["PatchDecoder", "SkipDecoder3D", "NoDeepSupervision"]

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


class NoDeepSupervision:
    """Mixin: nnU-Net sets ``decoder.deep_supervision``; only ``False`` is accepted."""

    @property
    def deep_supervision(self) -> bool:
        return False

    @deep_supervision.setter
    def deep_supervision(self, enabled: bool) -> None:
        if enabled:
            raise ConfigError(f"{type(self).__name__} has a single full-resolution output: deep supervision is off "
                              "(as in the paper); set enable_deep_supervision = False")


class PatchDecoder(NoDeepSupervision, nn.Module):
    """Token grid (B, C, *grid) -> logits (B, K, *grid·p) through log2(p) transposed-conv stages."""

    def __init__(self, in_channels: int, out_channels: int, patch_size: int, dims: int = 2) -> None:
        super().__init__()
        if dims not in _CONV:
            raise ConfigError(f"PatchDecoder works in 2 or 3 dimensions, got {dims}")
        n = int(round(math.log2(patch_size))) if patch_size > 0 else -1
        if n < 1 or 2 ** n != patch_size:
            raise ConfigError(f"the patch decoder upsamples by 2 per stage: patch size {patch_size} must be a power "
                              "of 2 (e.g. 8, 16)")
        if in_channels >> n < 1:
            raise ConfigError(f"{in_channels} channels cannot be halved {n} times")
        widths = [in_channels >> i for i in range(n + 1)]
        stages: list[nn.Module] = []
        for c_in, c_out in zip(widths, widths[1:]):
            stages.append(nn.Sequential(_CONV_T[dims](c_in, c_out, kernel_size=2, stride=2), LayerNormNd(c_out),
                                        nn.GELU()))
        stages.append(_CONV[dims](widths[-1], out_channels, kernel_size=1))
        self.decode = nn.Sequential(*stages)
        self.patch_size, self.dims = int(patch_size), dims
        self.apply(InitWeights_He(1e-2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(x)


def _conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv3d(c_in, c_out, 3, padding=1), nn.InstanceNorm3d(c_out, affine=True),
                         nn.LeakyReLU(1e-2, inplace=True))


class SkipDecoder3D(NoDeepSupervision, nn.Module):
    """Stages at 1/2, 1/4, ... (channels ``stage_channels``) -> full-resolution logits."""

    def __init__(self, stage_channels: Sequence[int], out_channels: int, base_channels: int = 32) -> None:
        super().__init__()
        chans = [int(c) for c in stage_channels]
        if len(chans) < 2:
            raise ConfigError("SkipDecoder3D needs at least two encoder stages")
        pairs = list(zip(chans[::-1], chans[-2::-1]))  # (deeper, skip) widths, deepest first
        self.up = nn.ModuleList([nn.ConvTranspose3d(deep, skip, kernel_size=2, stride=2) for deep, skip in pairs])
        self.fuse = nn.ModuleList([nn.Sequential(_conv_block(2 * skip, skip), _conv_block(skip, skip))
                                   for _, skip in pairs])
        self.final_up = nn.ConvTranspose3d(chans[0], base_channels, kernel_size=2, stride=2)
        self.final = nn.Sequential(_conv_block(base_channels, base_channels), nn.Conv3d(base_channels, out_channels, 1))
        self.apply(InitWeights_He(1e-2))

    def forward(self, stages: Sequence[torch.Tensor]) -> torch.Tensor:
        x = stages[-1]
        for up, fuse, skip in zip(self.up, self.fuse, list(stages)[-2::-1]):
            x = fuse(torch.cat([up(x), skip], dim=1))
        return self.final(self.final_up(x))
