"""2D slice encoders: timm DINOv3 / DINOv2 ViTs applied to the axial slices of a volume.

The paper's protocol (§4.3): every volume is resampled to 128 x 256 x 256, each axial slice goes
through the frozen 2D ViT, and the per-slice CLS tokens are averaged into one subject vector
(the averaging lives in :mod:`brainfm.features.extract`). This module provides the per-slice
part: :class:`SliceEncoder2D` wraps a timm model created with ``num_classes=0,
global_pool='token'`` and ``dynamic_img_size=True``.

Choices, each deliberate:

* ``preprocess``: bilinear resize of each slice to ``img_size`` (no antialias, like
  ``F.interpolate`` in the public code), no ImageNet mean/std by default (the store already
  holds robust z-scored intensities; the public BrainDINO pipeline feeds them as is, for every
  2D encoder alike; ``normalize="imagenet"`` is available). A gray slice is replicated to the 3
  input channels (``stacking="replicate"``) or, for BrainFound, channels are slices
  (k - step, k, k + step) with indices clamped at the volume's ends (``stacking="adjacent"``;
  the pretraining sampler only drew interior k, extraction must cover every slice).
* ``forward_features``: ``"cls"`` is the CLS token after the final norm (timm ``forward_head``
  with token pooling, i.e. DINOv3's ``x_norm_clstoken``). ``"layers"`` are the CLS tokens of the
  requested blocks passed through the same final norm (timm ``forward_intermediates(norm=True,
  return_prefix_tokens=True, output_fmt='NLC')``), which puts all depths on the scale the model
  was trained to emit and makes the last block's entry equal ``"cls"``; for CKA this is the
  paper's "CLS token at block k". ``"patch"`` is the normed patch-token grid (B, h, w, D);
  register tokens are never returned.
* Input resolution (``img_size``) is separate from the construction size of the timm model:
  models are built with the architecture's own ``img_size`` (it fixes the shape of DINOv2's
  absolute position table, so checkpoints from pretraining and from Meta load) and run at any
  multiple of the patch size thanks to ``dynamic_img_size``.

Numerics that a weights file cannot fully tell (encoder args, i.e. ``backbones.<name>.args``):

* ``norm_eps``: LayerNorm epsilon. timm's DINOv3 ViTs use 1e-5, as Meta's hub models
  (``norm_layer="layernormbf16"``) and our own pretraining; Meta's *trainer* default
  ``norm_layer: layernorm`` is 1e-6. No checkpoint records it, so weights from a default DINOv3
  training run need ``norm_eps: 1.0e-6`` (a warning says so when such a checkpoint is loaded with
  another value). The value in use is recorded in the load info (``layernorm_eps``).
* ``rope_dtype``: ``"auto"`` (default) runs RoPE in bf16 for a DINOv3 trainer teacher checkpoint
  with bf16 periods (Meta's trainer default) and in float32 otherwise; ``"float32"`` /
  ``"bfloat16"`` force it (:mod:`brainfm.models.rope`). Recorded in the load info.
* ``allow_missing_rope_periods``: accept native DINOv3 weights without ``rope_embed.periods``
  (refused by default, as by Meta's loader); recorded in the load info.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from brainfm.errors import ConfigError
from brainfm.models.base import Encoder
from brainfm.models.registry import register_encoder

__all__ = ["SliceEncoder2D", "build_slice_encoder", "ARCH_PATTERNS"]

log = logging.getLogger("brainfm.models")

ARCH_PATTERNS = ("vit_*_dinov3*", "vit_*_dinov2*")
META_TRAINER_NORM_EPS = 1e-6  # DINOv3 trainer default norm_layer "layernorm"
STACKINGS = ("replicate", "adjacent")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class SliceEncoder2D(Encoder):
    """A frozen timm ViT applied slice by slice (``input_kind = "slices2d"``)."""

    input_kind = "slices2d"

    def __init__(self, model: nn.Module, *, img_size: int, stacking: str = "replicate", stack_step: int = 1,
                 normalize: str = "none", config: dict[str, Any] | None = None):
        super().__init__()
        for attr in ("patch_embed", "blocks", "forward_intermediates", "forward_head", "num_prefix_tokens"):
            if not hasattr(model, attr):
                raise ConfigError(f"{type(model).__name__} is not a timm ViT (no {attr})")
        self.model = model
        self.patch_size = int(model.patch_embed.patch_size[0])
        self.in_chans = int(model.patch_embed.proj.in_channels)
        self.num_prefix_tokens = int(model.num_prefix_tokens)
        self.has_cls = getattr(model, "cls_token", None) is not None
        self.embed_dim = int(model.num_features)
        self.layer_names = [f"block{i}" for i in range(len(model.blocks))]
        self.img_size = int(img_size)
        if self.img_size <= 0 or self.img_size % self.patch_size:
            raise ConfigError(f"img_size {img_size} must be a positive multiple of the patch size {self.patch_size}")
        if stacking not in STACKINGS:
            raise ConfigError(f"stacking must be one of {STACKINGS}, got {stacking!r}")
        if stacking == "adjacent" and self.in_chans != 3:
            raise ConfigError(f"stacking='adjacent' needs 3 input channels, the model has {self.in_chans}")
        if int(stack_step) < 1:
            raise ConfigError(f"stack_step must be >= 1, got {stack_step}")
        if normalize not in ("none", "imagenet"):
            raise ConfigError(f"normalize must be 'none' or 'imagenet', got {normalize!r}")
        self.stacking, self.stack_step, self.normalize = stacking, int(stack_step), normalize
        mean = torch.tensor(_IMAGENET_MEAN[: self.in_chans] if normalize == "imagenet" else [0.0] * self.in_chans)
        std = torch.tensor(_IMAGENET_STD[: self.in_chans] if normalize == "imagenet" else [1.0] * self.in_chans)
        self.register_buffer("_mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("_std", std.view(1, -1, 1, 1), persistent=False)
        self.config = dict(config or {})
        self.config.update(img_size=self.img_size, stacking=stacking, stack_step=self.stack_step,
                           normalize=normalize, patch_size=self.patch_size, timm_class=type(model).__name__)

    def weight_module(self) -> nn.Module:
        return self.model

    @property
    def grid(self) -> tuple[int, int]:
        return self.img_size // self.patch_size, self.img_size // self.patch_size

    def preprocess(self, volume: torch.Tensor) -> torch.Tensor:
        """(D, H, W) volume -> (D, 3, img_size, img_size) slices (resized, channels replicated or stacked)."""
        v = torch.as_tensor(volume)
        if v.ndim != 3:
            raise ValueError(f"expected a (D, H, W) volume, got shape {tuple(v.shape)}")
        x = v.to(dtype=torch.float32).unsqueeze(1)  # (D, 1, H, W)
        if tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            x = F.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)
        if self.stacking == "adjacent":
            k = torch.arange(x.shape[0], device=x.device)
            idx = torch.stack([(k - self.stack_step).clamp(min=0), k, (k + self.stack_step).clamp(max=x.shape[0] - 1)],
                              dim=1)  # (D, 3)
            x = x[:, 0][idx]  # (D, 3, s, s)
        else:
            x = x.expand(-1, self.in_chans, -1, -1)
        if self.normalize != "none":
            x = (x - self._mean.to(x.device)) / self._std.to(x.device)
        return x.contiguous()

    def forward_features(self, x: torch.Tensor, layers: Sequence[int | str] = (),
                         return_patch: bool = False) -> dict[str, Any]:
        """(B, C, s, s) -> {"cls": (B, D)} [+ "layers": [(B, D), ...]] [+ "patch": (B, h, w, D)]."""
        m = self.model
        out: dict[str, Any] = {}
        if layers:
            idx = [self.layer_index(layer) for layer in layers]
            uniq = sorted(set(idx))
            final, inter = m.forward_intermediates(x, indices=uniq, norm=True, output_fmt="NLC",
                                                   return_prefix_tokens=True)
            pooled = {}
            for i, (spatial, prefix) in zip(uniq, inter):
                pooled[i] = prefix[:, 0] if self.has_cls else spatial.mean(dim=1)
            out["layers"] = [pooled[i] for i in idx]
        else:
            final = m.forward_features(x)
        out["cls"] = m.forward_head(final, pre_logits=True)
        if return_patch:
            h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
            out["patch"] = final[:, self.num_prefix_tokens:].reshape(x.shape[0], h, w, -1)
        return out


# ----------------------------------------------------------------------------- construction
def _check_arch(arch: str) -> None:
    if not any(fnmatch.fnmatchcase(arch, p) for p in ARCH_PATTERNS) or arch not in timm.list_models():
        known = sorted(n for p in ARCH_PATTERNS for n in timm.list_models(p))
        raise ConfigError(f"unsupported ViT arch {arch!r}; timm DINOv3/DINOv2 ViTs: {', '.join(known)}")


def build_slice_encoder(arch: str = "vit_base_patch16_dinov3", *, img_size: int | None = None,
                        embed_dim: int | None = None, depth: int | None = None, num_heads: int | None = None,
                        patch_size: int | None = None, arch_overrides: dict[str, Any] | None = None,
                        stacking: str = "replicate", stack_step: int = 1, normalize: str = "none",
                        norm_eps: float | None = None, seed: int = 0) -> SliceEncoder2D:
    """Create a randomly initialised (seeded, global RNG untouched) timm ViT wrapped as a slice encoder.

    ``embed_dim``/``depth``/``num_heads``/``patch_size`` and ``arch_overrides`` (any timm
    constructor argument, as in the pretraining config) shrink or alter the architecture, e.g.
    for CPU demos; ``img_size`` is the input resolution (default: the architecture's own).
    ``norm_eps`` sets every LayerNorm's epsilon: timm's DINOv3 ViTs use 1e-5 (Meta's
    ``layernormbf16``, the released hub models), but Meta's trainer default ``norm_layer:
    layernorm`` is 1e-6 -- a value no state dict records, so it must be given for such weights
    (see the module docstring).
    """
    _check_arch(arch)
    kwargs: dict[str, Any] = dict(arch_overrides or {})
    for key, val in (("embed_dim", embed_dim), ("depth", depth), ("num_heads", num_heads),
                     ("patch_size", patch_size)):
        if val is not None:
            kwargs[key] = int(val)
    kwargs.setdefault("dynamic_img_size", True)
    kwargs.setdefault("drop_path_rate", 0.0)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            model = timm.create_model(arch, pretrained=False, num_classes=0, global_pool="token", **kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError) as exc:
        raise ConfigError(f"cannot build {arch!r} with {kwargs}: {exc}") from exc
    if norm_eps is not None:
        for mod in model.modules():
            if isinstance(mod, nn.LayerNorm):
                mod.eps = float(norm_eps)
    if img_size is None:
        img_size = int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    config = {"arch": arch,
              "arch_overrides": {k: v for k, v in kwargs.items() if k not in ("dynamic_img_size", "drop_path_rate")},
              "norm_eps": norm_eps, "seed": int(seed)}
    return SliceEncoder2D(model, img_size=int(img_size), stacking=stacking, stack_step=stack_step,
                          normalize=normalize, config=config)


def _with_weights(enc: SliceEncoder2D, weights: str | None, weights_format: str,
                  expected_missing: Sequence[str], expected_unexpected: Sequence[str], rope_dtype: str = "auto",
                  allow_missing_rope_periods: bool = False) -> SliceEncoder2D:
    if not weights:
        if rope_dtype != "auto" or allow_missing_rope_periods:
            raise ConfigError("rope_dtype / allow_missing_rope_periods apply to loaded weights; no weights given")
        return enc
    info = enc.load_weights(weights, fmt=weights_format, expected_missing=tuple(expected_missing),
                            expected_unexpected=tuple(expected_unexpected), rope_dtype=rope_dtype,
                            allow_missing_rope_periods=allow_missing_rope_periods)
    if (info.get("format") == "dinov3_teacher" and info.get("rope_dtype") == "bfloat16"
            and enc.config.get("norm_eps") is None and info.get("layernorm_eps") != META_TRAINER_NORM_EPS):
        log.warning("%s: a DINOv3 trainer checkpoint (bf16 RoPE); the trainer's default norm_layer 'layernorm' has "
                    "LayerNorm eps %g, this encoder uses %s: set norm_eps: %g in the encoder args unless the run "
                    "used norm_layer 'layernormbf16' (eps 1e-5)", weights, META_TRAINER_NORM_EPS,
                    info.get("layernorm_eps"), META_TRAINER_NORM_EPS)
    return enc


def _require(name: str, weights: str | None) -> None:
    if not weights:
        raise ConfigError(f"encoder {name!r} needs a weights file (use 'vit_random' or 'vit_dinov3' without "
                          "weights for a randomly initialised ViT)")


# ----------------------------------------------------------------------------- registry entries
@register_encoder("vit_dinov3")
def vit_dinov3(weights: str | None = None, *, arch: str = "vit_base_patch16_dinov3", weights_format: str = "auto",
               expected_missing: Sequence[str] = (), expected_unexpected: Sequence[str] = (),
               rope_dtype: str = "auto", allow_missing_rope_periods: bool = False,
               **kwargs: Any) -> SliceEncoder2D:
    """Generic timm DINOv3 (or DINOv2) ViT slice encoder; random init when ``weights`` is None.

    kwargs: img_size, embed_dim, depth, num_heads, patch_size, arch_overrides, stacking,
    stack_step, normalize, norm_eps, seed (see :func:`build_slice_encoder`); ``rope_dtype`` and
    ``allow_missing_rope_periods`` go to the loader (see the module docstring).
    """
    enc = build_slice_encoder(arch, **kwargs)
    return _with_weights(enc, weights, weights_format, expected_missing, expected_unexpected, rope_dtype,
                        allow_missing_rope_periods)


@register_encoder("braindino")
def braindino(weights: str | None = None, *, arch: str = "vit_base_patch16_dinov3", weights_format: str = "auto",
              expected_missing: Sequence[str] = (), expected_unexpected: Sequence[str] = (),
              rope_dtype: str = "auto", allow_missing_rope_periods: bool = False,
              **kwargs: Any) -> SliceEncoder2D:
    """BrainDINO: ViT-B/16 DINOv3 (RoPE, 4 registers) with weights from our pretraining export.

    A checkpoint from Meta's DINOv3 trainer (``{"teacher": ...}`` with bf16 RoPE periods) runs RoPE
    in bf16 as the trainer did; give ``norm_eps=1e-6`` if it was trained with the default
    ``norm_layer: layernorm`` (see the module docstring).
    """
    _require("braindino", weights)
    enc = build_slice_encoder(arch, **kwargs)
    return _with_weights(enc, weights, weights_format, expected_missing, expected_unexpected, rope_dtype,
                        allow_missing_rope_periods)


@register_encoder("dinov3")
def dinov3(weights: str | None = None, *, arch: str = "vit_base_patch16_dinov3", weights_format: str = "auto",
           expected_missing: Sequence[str] = (), expected_unexpected: Sequence[str] = (),
           rope_dtype: str = "auto", allow_missing_rope_periods: bool = False,
           **kwargs: Any) -> SliceEncoder2D:
    """Natural-image DINOv3 (user-supplied timm ``.safetensors`` or Meta ``.pth``), same slice protocol.

    Meta's ViT-B has (zero) q/v biases: they load into the bias-free ``vit_base_patch16_dinov3``
    only when all zero, otherwise choose ``arch="vit_base_patch16_dinov3_qkvb"``.
    """
    _require("dinov3", weights)
    enc = build_slice_encoder(arch, **kwargs)
    return _with_weights(enc, weights, weights_format, expected_missing, expected_unexpected, rope_dtype,
                        allow_missing_rope_periods)


@register_encoder("vit_random")
def vit_random(weights: str | None = None, *, arch: str = "vit_base_patch16_dinov3", seed: int = 0,
               **kwargs: Any) -> SliceEncoder2D:
    """Random-initialisation control: the same ViT with timm's init drawn from ``seed``.

    Caveat (measured): with DINOv3's layer-scale init of 1e-5 the blocks barely touch the CLS
    token, so random CLS features vary across inputs by only ~1e-5 of their magnitude (patch
    tokens vary normally). Heads that standardise features still see the signal; pass
    ``arch_overrides={"init_values": 1.0}`` for a control whose CLS varies at full scale.
    """
    if weights:
        raise ConfigError("encoder 'vit_random' takes no weights (it is the random-initialisation control)")
    return build_slice_encoder(arch, seed=seed, **kwargs)


@register_encoder("brainfound")
def brainfound(weights: str | None = None, *, arch: str = "vit_large_patch14_dinov2", img_size: int = 224,
               stacking: str = "adjacent", weights_format: str = "auto", expected_missing: Sequence[str] = (),
               expected_unexpected: Sequence[str] = (), rope_dtype: str = "auto",
               allow_missing_rope_periods: bool = False, **kwargs: Any) -> SliceEncoder2D:
    """BrainFound: a DINO ViT whose 3 input channels are adjacent axial slices (k-step, k, k+step).

    Defaults follow our BrainFound pretraining recipe (DINOv2 ViT-L/14 at 224 px,
    ``stack_step`` 1); ``arch`` may be any DINOv2/DINOv3 timm ViT.
    """
    _require("brainfound", weights)
    enc = build_slice_encoder(arch, img_size=img_size, stacking=stacking, **kwargs)
    return _with_weights(enc, weights, weights_format, expected_missing, expected_unexpected, rope_dtype,
                        allow_missing_rope_periods)
