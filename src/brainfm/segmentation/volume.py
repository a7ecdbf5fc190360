"""The three 3D baselines as frozen segmentation encoders (BM-MAE and BrainMVP at 128³, BrainIAC at 96³).

Each baseline comes from the same registry (:func:`brainfm.models.create_encoder`) with the same
strict weight loading as everywhere else, then its single-channel patch embedding is widened to
the four MRI channels by repeating the pretrained kernel and dividing by four (the paper's
"repeating and rescaling"; a constant image gives the same embedding on one channel or four).
The widened stem is part of the frozen encoder.

Decoders ("compatible decoders" in the paper):

* 3D ViTs (BrainIAC v2: MONAI ViT-B/16, no CLS; BM-MAE: 3D ViT with a CLS token) -- the final
  LayerNorm applied to the patch tokens of four evenly spaced blocks ({2, 5, 8, 11} of 12),
  concatenated on the token grid and decoded by the 3D :class:`~.decoders.PatchDecoder`, the
  same design as the 2D networks. Their position embeddings fix the input size, so the nnU-Net
  patch must equal the encoder's ``img_size``. BM-MAE uses one of its per-modality tokenizers
  (``tokenizer``, default ``t1``), widened like the others, instead of concatenating four
  modality token sets.
* BrainMVP (UniFormer-S, four stages at 1/2..1/16) -- a U-Net style :class:`~.decoders.SkipDecoder3D`
  on the four stage outputs.

Inputs arrive in nnU-Net's (S, A, R) patch order and are permuted to the (R, A, S) voxel order the
baselines were pretrained on (see :func:`brainfm.segmentation.network.native_axes`); BrainMVP then
applies its own internal permute, which the decoder output undoes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from brainfm.errors import ConfigError
from brainfm.models import Encoder
from brainfm.segmentation.decoders import PatchDecoder, SkipDecoder3D
from brainfm.segmentation.network import FrozenEncoderNetwork, default_blocks, from_encoder_axes, to_encoder_axes

__all__ = ["widen_stem", "FrozenViT3DSegmenter", "FrozenUniFormerSegmenter", "build_volume_network"]


def widen_stem(conv: nn.Conv3d, in_channels: int) -> nn.Conv3d:
    """A frozen copy of ``conv`` taking ``in_channels``: the kernel tiled over channels and divided by the tiling."""
    c_old = conv.in_channels
    if in_channels == c_old:
        return conv
    if in_channels % c_old:
        raise ConfigError(f"cannot widen a {c_old}-channel stem to {in_channels} channels by repeating")
    reps = in_channels // c_old
    new = nn.Conv3d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    bias=conv.bias is not None).to(conv.weight.device, conv.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(conv.weight.repeat(1, reps, 1, 1, 1) / reps)
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    new.requires_grad_(False)
    return new


class FrozenViT3DSegmenter(FrozenEncoderNetwork):
    """Frozen 3D ViT (BrainIAC v2 or BM-MAE) -> normed tokens of 4 blocks -> 3D PatchDecoder."""

    def __init__(self, encoder: Encoder, num_classes: int, in_channels: int = 4, blocks: Sequence[int] | None = None,
                 axes: Sequence[int] = (0, 1, 2), tokenizer: str = "t1") -> None:
        super().__init__()
        kind = type(encoder).__name__
        if kind == "BMMAEEncoder" and tokenizer not in encoder.net.tokenizers:
            raise ConfigError(f"BM-MAE has no tokenizer {tokenizer!r}; tokenizers: {list(encoder.net.tokenizers)}")
        if kind not in ("BrainIACViT", "BMMAEEncoder"):
            raise ConfigError(f"encoder {encoder.name!r} ({kind}) is not a supported 3D ViT")
        self.tokenizer = tokenizer if kind == "BMMAEEncoder" else None
        self.n_prefix = 1 if kind == "BMMAEEncoder" else 0  # BM-MAE prepends a CLS token; BrainIAC v2 has none
        self.encoder = encoder
        embed = self._embed
        embed.patch_embeddings = widen_stem(embed.patch_embeddings, in_channels)
        depth = len(self._vit.blocks)
        self.blocks = [int(b) for b in (blocks if blocks is not None else default_blocks(depth))]
        if not self.blocks or any(not 0 <= b < depth for b in self.blocks):
            raise ConfigError(f"blocks {self.blocks} must index the encoder's {depth} blocks")
        self.axes = [int(a) for a in axes]
        self.grid = tuple(int(g) for g in encoder.grid)
        self.decoder = PatchDecoder(encoder.embed_dim * len(self.blocks), num_classes, encoder.patch_size, dims=3)

    @property
    def _vit(self) -> nn.Module:  # looked up, not stored: a second reference would enter the state dict
        return self.encoder.net if self.n_prefix else self.encoder.vit

    @property
    def _embed(self) -> nn.Module:
        return self._vit.tokenizers[self.tokenizer].patch_embedding if self.n_prefix else self._vit.patch_embedding

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = to_encoder_axes(x, self.axes)
        want = tuple(s * self.encoder.patch_size for s in self.grid)
        if tuple(x.shape[2:]) != want:
            raise ValueError(f"{self.encoder.name}: input patch {tuple(x.shape[2:])} must be {want} (its position "
                             "embedding is fixed)")
        h = self._embed(x)
        if self.n_prefix:
            h = torch.cat([self._vit.cls_token.expand(h.shape[0], -1, -1), h], dim=1)
        wanted, feats = set(self.blocks), {}
        for i, blk in enumerate(self._vit.blocks[: max(self.blocks) + 1]):
            h = blk(h)
            if i in wanted:
                feats[i] = self._vit.norm(h)[:, self.n_prefix:]
        b, d = x.shape[0], self.encoder.embed_dim
        grids = [feats[i].transpose(1, 2).reshape(b, d, *self.grid) for i in self.blocks]
        return from_encoder_axes(self.decoder(torch.cat(grids, dim=1)), self.axes)


class FrozenUniFormerSegmenter(FrozenEncoderNetwork):
    """Frozen BrainMVP UniFormer (widened stem) -> four stages -> U-Net style decoder."""

    def __init__(self, encoder: Encoder, num_classes: int, in_channels: int = 4, axes: Sequence[int] = (0, 1, 2),
                 base_channels: int = 32) -> None:
        super().__init__()
        if type(encoder).__name__ != "BrainMVPEncoder":
            raise ConfigError(f"encoder {encoder.name!r} is not BrainMVP")
        if encoder.protocol != "native":
            raise ConfigError("BrainMVP segmentation uses protocol='native' (input in (R, A, S) order)")
        net = encoder.net
        net.patch_embed1.proj = widen_stem(net.patch_embed1.proj, in_channels)
        self.encoder = encoder
        self.axes = [int(a) for a in axes]
        self.decoder = SkipDecoder3D(net.embed_dim, num_classes, base_channels)
        # UniFormer's own input permute: internal axes are (input axis 2, 0, 1)
        from brainfm.models.baselines.brainmvp import INPUT_PERMUTE

        self._internal = [p - 2 for p in INPUT_PERMUTE[2:]]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = to_encoder_axes(x, self.axes)
        if any(s % 16 for s in x.shape[2:]):
            raise ValueError(f"BrainMVP needs patch sizes divisible by 16, got {tuple(x.shape[2:])}")
        stages = self.encoder.net(x)
        y = from_encoder_axes(self.decoder(stages), self._internal)
        return from_encoder_axes(y, self.axes)


def build_volume_network(encoder: Encoder, num_classes: int, in_channels: int, *, blocks: Sequence[int] | None,
                         axes: Sequence[int], patch_size: Sequence[int] | None,
                         decoder: dict[str, Any] | None = None) -> FrozenEncoderNetwork:
    """The segmentation network of a 3D baseline encoder (see the module docstring)."""
    decoder = dict(decoder or {})
    kind = type(encoder).__name__
    if kind in ("BrainIACViT", "BMMAEEncoder"):
        net: FrozenEncoderNetwork = FrozenViT3DSegmenter(encoder, num_classes, in_channels, blocks, axes,
                                                         tokenizer=decoder.pop("tokenizer", "t1"))
        if patch_size is not None and tuple(int(p) for p in patch_size) != tuple(
                g * encoder.patch_size for g in encoder.grid):
            raise ConfigError(f"{encoder.name}: nnU-Net patch {list(patch_size)} must equal the encoder's input size "
                              f"{list(encoder.img_size)}")
    elif kind == "BrainMVPEncoder":
        net = FrozenUniFormerSegmenter(encoder, num_classes, in_channels, axes, **decoder)
        decoder = {}
        if patch_size is not None and any(int(p) % 16 for p in patch_size):
            raise ConfigError(f"BrainMVP: nnU-Net patch {list(patch_size)} must be divisible by 16")
    else:
        raise ConfigError(f"no segmentation network for 3D encoder {encoder.name!r} ({kind}); supported: brainiac, "
                          "bmmae, brainmvp (and their _scratch controls)")
    if decoder:
        raise ConfigError(f"unknown decoder option(s) {sorted(decoder)} for {encoder.name!r}")
    return net
