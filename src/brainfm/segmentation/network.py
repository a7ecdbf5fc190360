"""Segmentation networks on a frozen registry encoder, built from an nnU-Net plans entry.

nnU-Net builds a network from its plans: ``architecture.network_class_name`` is located with
``pydoc.locate`` and called with ``input_channels``, ``num_classes``, ``deep_supervision`` and the
``arch_kwargs``. :func:`build_network` is that callable for every frozen-encoder network of the
benchmark; its keyword arguments (the *spec*) name the registry encoder, its weights file and its
construction arguments, so a trained model's ``plans.json`` is enough to rebuild it.

2D (:class:`FrozenViT2DSegmenter`, BrainDINO and DINOv3 in the paper)
    a learnable 1×1 convolution maps the four MRI channels to the ViT's three input channels,
    initialised to the equal-weight average; the frozen timm ViT returns the normed patch tokens
    of four blocks ({2, 5, 8, 11} of 12, evenly spaced for other depths, see
    :func:`default_blocks`); their concatenation is decoded by :class:`~.decoders.PatchDecoder`.
    Gradients flow through the frozen ViT to the fusion convolution, as in the public code.

3D (:mod:`brainfm.segmentation.volume`): the three volumetric baselines.

Only trainable weights are checkpointed: :meth:`FrozenEncoderNetwork.state_dict` leaves a frozen
encoder out and records the encoder's identity (registry name, weights sha256) instead;
:meth:`FrozenEncoderNetwork.load_state_dict` refuses a checkpoint trained on another encoder. For
the full fine-tuning comparison (Supp. Table 6, ``train_encoder=True``) the encoder is trainable,
so its weights are checkpointed with the rest.

Axis order. nnU-Net hands 2D slices and 3D patches in the order of its (RAS-reoriented, see
``raw_dataset``) arrays, i.e. (S, A, R) for volumes and (A, R) for axial slices. The brainfm
slice store, on which the 2D encoders were pretrained, holds axial slices as (R, A), and the 3D
baselines were pretrained on (R, A, S) arrays; ``axes`` (computed from the plans'
``transpose_forward`` by :func:`native_axes`) permutes the input into the encoder's order and the
logits back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from brainfm.device import gradients_agree
from brainfm.errors import CheckpointError, ConfigError
from brainfm.models import Encoder, create_encoder
from brainfm.segmentation.decoders import PatchDecoder

__all__ = ["FrozenEncoderNetwork", "FrozenViT2DSegmenter", "build_network", "default_blocks", "native_axes",
           "to_encoder_axes", "from_encoder_axes", "parameter_counts", "NETWORK_CLASS"]

#: what nnU-Net's plans name as the network "class" (a factory function is fine for pydoc.locate)
NETWORK_CLASS = "brainfm.segmentation.network.build_network"


def default_blocks(depth: int, n: int = 4) -> list[int]:
    """``n`` evenly spaced blocks ending at the last: {2, 5, 8, 11} for depth 12, {0, 1, 2, 3} for depth 4."""
    if depth < 1:
        raise ConfigError(f"encoder depth must be >= 1, got {depth}")
    n = min(int(n), depth)
    return sorted({max(0, round((k + 1) * depth / n) - 1) for k in range(n)})


def native_axes(transpose_forward: Sequence[int], dims: int) -> list[int]:
    """Permutation of a patch's spatial axes into the encoders' (R, A, S) voxel order.

    nnU-Net's arrays (reoriented to RAS by ``NibabelIOWithReorient``) are (S, A, R) before its
    ``transpose_forward``; a 2D configuration takes slices along the first transposed axis.
    Returns, for each encoder input axis, the patch axis that feeds it.
    """
    tf = [int(a) for a in transpose_forward]
    if sorted(tf) != [0, 1, 2]:
        raise ConfigError(f"transpose_forward {transpose_forward} is not a permutation of 3 axes")
    ras = [2 - a for a in tf]  # RAS axis (0 = R, 1 = A, 2 = S) of each transposed data axis
    if dims == 3:
        return [ras.index(k) for k in range(3)]
    in_plane = ras[1:]  # the two axes of a 2D slice
    return [0, 1] if in_plane[0] < in_plane[1] else [1, 0]


def to_encoder_axes(x: torch.Tensor, axes: Sequence[int]) -> torch.Tensor:
    """(B, C, *spatial) -> spatial axes reordered so encoder axis k is patch axis ``axes[k]``."""
    if list(axes) == sorted(axes):
        return x
    return x.permute(0, 1, *(2 + a for a in axes))


def from_encoder_axes(x: torch.Tensor, axes: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`to_encoder_axes`."""
    if list(axes) == sorted(axes):
        return x
    inverse = [list(axes).index(k) for k in range(len(axes))]
    return x.permute(0, 1, *(2 + a for a in inverse))


class FrozenEncoderNetwork(nn.Module):
    """Base: a frozen registry encoder (``self.encoder``) plus trainable modules; encoder-free checkpoints.

    Subclasses implement ``_forward``. ``cpu_autocast`` (a dtype, or None for fp32) runs it
    under CPU autocast and returns float32 logits: nnU-Net autocasts on CUDA only (fp16 with a grad
    scaler), so a CPU with native bf16 would otherwise train and predict in fp32 (see
    :func:`bf16_gradients_agree` for the check that guards it).
    """

    encoder: Encoder
    cpu_autocast: torch.dtype | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cpu_autocast is not None and x.device.type == "cpu":
            with torch.autocast("cpu", dtype=self.cpu_autocast):
                return self._forward(x).float()
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encoder_identity(self) -> dict[str, Any]:
        info = self.encoder.weights_info or {}
        return {"encoder": self.encoder.name, "weights_sha256": info.get("sha256"),
                "config": dict(self.encoder.config)}

    def get_extra_state(self) -> dict[str, Any]:
        return {"encoder_identity": self.encoder_identity()}

    def set_extra_state(self, state: Any) -> None:
        want = (state or {}).get("encoder_identity") if isinstance(state, dict) else None
        have = self.encoder_identity()
        if want is not None and (want.get("encoder"), want.get("weights_sha256")) != \
                (have["encoder"], have["weights_sha256"]):
            raise CheckpointError("checkpoint", f"trained on encoder {want.get('encoder')!r} (weights sha256 "
                                                f"{want.get('weights_sha256')}), but the network was built with "
                                                f"{have['encoder']!r} (sha256 {have['weights_sha256']})")

    @property
    def encoder_trainable(self) -> bool:
        """True for full fine-tuning (Supp. Table 6): the encoder built with ``freeze=False``."""
        return any(p.requires_grad for p in self.encoder.parameters())

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The trainable part (and the encoder's identity); a frozen encoder comes from its weights file."""
        state = super().state_dict(*args, **kwargs)
        if self.encoder_trainable:
            return state
        prefix = kwargs.get("prefix", args[1] if len(args) > 1 else "")
        drop = [k for k in state if k.startswith(f"{prefix}encoder.")]
        for k in drop:
            del state[k]
        return state

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load a checkpoint of :meth:`state_dict`; the encoder's own (frozen) tensors fill its keys."""
        full = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        full.update(state_dict)
        return super().load_state_dict(full, strict=strict, assign=assign)

    def train(self, mode: bool = True) -> FrozenEncoderNetwork:
        super().train(mode)
        if not self.encoder_trainable:
            self.encoder.train(False)  # frozen: eval mode always (no drop-path, fixed norm statistics)
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


class FrozenViT2DSegmenter(FrozenEncoderNetwork):
    """4 channels -> 1×1 fusion conv -> frozen timm ViT (4 blocks) -> PatchDecoder -> logits."""

    def __init__(self, encoder: Encoder, num_classes: int, in_channels: int = 4, blocks: Sequence[int] | None = None,
                 axes: Sequence[int] = (0, 1)) -> None:
        super().__init__()
        if encoder.input_kind != "slices2d" or not hasattr(encoder, "model"):
            raise ConfigError(f"encoder {encoder.name!r} is not a 2D slice ViT (input_kind {encoder.input_kind!r})")
        vit = encoder.model
        depth = len(vit.blocks)
        self.blocks = [int(b) for b in (blocks if blocks is not None else default_blocks(depth))]
        if not self.blocks or any(not 0 <= b < depth for b in self.blocks) or len(set(self.blocks)) != len(self.blocks):
            raise ConfigError(f"blocks {self.blocks} must be distinct indices into the encoder's {depth} blocks")
        self.axes = [int(a) for a in axes]
        self.fuse = nn.Conv2d(in_channels, encoder.in_chans, kernel_size=1, bias=False)
        with torch.no_grad():
            self.fuse.weight.fill_(1.0 / in_channels)
        self.encoder = encoder
        self.decoder = PatchDecoder(encoder.embed_dim * len(self.blocks), num_classes, encoder.patch_size, dims=2)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = to_encoder_axes(x, self.axes)
        x = self.fuse(x)
        enc = self.encoder
        if enc.normalize != "none":
            x = (x - enc._mean) / enc._std
        feats = enc.model.forward_intermediates(x, indices=self.blocks, norm=True, output_fmt="NCHW",
                                                intermediates_only=True, stop_early=True)
        return from_encoder_axes(self.decoder(torch.cat(feats, dim=1)), self.axes)


def bf16_gradients_agree(network: FrozenEncoderNetwork, patch_size: Sequence[int], in_channels: int, *,
                         batch: int = 2, draws: int = 2, tolerance: float = 0.1, seed: int = 0) -> bool:
    """Do the trainable parameters get the same gradients under CPU bf16 autocast as in fp32?

    Some CPU kernels return wrong bf16 weight gradients (e.g. oneDNN's Conv3d on small maps, see
    :func:`brainfm.device.bf16_conv3d_gradients_ok`), now and then, so ``auto`` precision checks the
    network it is about to train: ``draws`` random batches, a random linear loss on the logits, and
    per trainable tensor the relative error ``|g_bf16 - g_fp32| / |g_fp32|`` must stay under
    ``tolerance`` (bf16 rounding gives about 1e-2; broken kernels give orders of magnitude).
    Parameters and gradients are left as they were.
    """
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in network.parameters() if p.requires_grad]
    saved = [p.grad for p in params]
    mode, autocast = network.training, network.cpu_autocast
    network.train()
    try:
        for _ in range(draws):
            x = torch.randn(batch, in_channels, *patch_size, generator=gen)
            weights = None
            grads = []
            for dtype in (None, torch.bfloat16):
                network.cpu_autocast = dtype
                out = network(x)
                if weights is None:
                    weights = torch.randn(out.shape, generator=gen)
                grads.append(torch.autograd.grad((out * weights).sum(), params, allow_unused=True))
            for ref, got in zip(*grads):
                if ref is not None and got is not None and not gradients_agree(got, ref, tolerance):
                    return False
        return True
    finally:
        network.cpu_autocast = autocast
        network.train(mode)
        for p, g in zip(params, saved):
            p.grad = g


def parameter_counts(network: nn.Module) -> dict[str, Any]:
    """Total, trainable and frozen parameters (and the trainable share)."""
    total = sum(p.numel() for p in network.parameters())
    trainable = sum(p.numel() for p in network.parameters() if p.requires_grad)
    return {"total": int(total), "trainable": int(trainable), "frozen": int(total - trainable),
            "trainable_fraction": trainable / total if total else 0.0}


def build_network(input_channels: int, num_classes: int, deep_supervision: bool = False, *, encoder: str,
                  weights: str | None = None, encoder_kwargs: dict[str, Any] | None = None,
                  blocks: Sequence[int] | None = None, axes: Sequence[int] | None = None,
                  patch_size: Sequence[int] | None = None, kind: str | None = None,
                  decoder: dict[str, Any] | None = None, train_encoder: bool = False) -> FrozenEncoderNetwork:
    """nnU-Net's network factory: frozen registry ``encoder`` (strictly loaded ``weights``) + decoder.

    ``kind`` is inferred from the encoder ("slices2d" -> 2D ViT network, "volume3d" -> the
    baseline's 3D network); ``patch_size`` (nnU-Net's) is checked against the encoder's grid.
    ``train_encoder``: leave the encoder trainable (full fine-tuning, Supp. Table 6).
    """
    if deep_supervision:
        raise ConfigError("frozen-encoder segmentation networks have no deep supervision (the paper disables it)")
    enc = create_encoder(encoder, weights, freeze=not train_encoder, **dict(encoder_kwargs or {}))
    kind = kind or enc.input_kind
    if kind != enc.input_kind:
        raise ConfigError(f"encoder {encoder!r} is {enc.input_kind}, the plans ask for {kind}")
    if kind == "slices2d":
        if patch_size is not None:
            if len(patch_size) != 2 or any(int(p) % enc.patch_size for p in patch_size):
                raise ConfigError(f"2D patch size {list(patch_size)} must be 2 multiples of the ViT patch size "
                                  f"{enc.patch_size}")
        return FrozenViT2DSegmenter(enc, num_classes, input_channels, blocks, axes if axes is not None else (0, 1))
    from brainfm.segmentation.volume import build_volume_network

    return build_volume_network(enc, num_classes, input_channels, blocks=blocks,
                                axes=axes if axes is not None else (0, 1, 2), patch_size=patch_size,
                                decoder=decoder)
