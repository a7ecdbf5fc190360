"""BrainIAC baselines (Tak et al.): v1 3D ResNet50, v2 3D ViT-B, and our own SimCLR-trained ResNet.

Two incompatible public versions exist (``notes/anchors.md`` §4); BrainDINO compared against v2.

``brainiac_v1`` -- AIM-KannLab/BrainIAC (Mar 2025), ``src/BrainIAC/model.py::ResNet50_3D``
    MONAI ``resnet50`` whose stem is ``Conv3d(1, 64, 7, stride 2, padding 3, bias=False)`` and whose
    ``fc`` is ``Identity``: 2048-d global-average-pooled features. Built here as
    ``monai.networks.nets.resnet50(spatial_dims=3, n_input_channels=1, conv1_t_size=7,
    conv1_t_stride=2, feed_forward=False)``, which has the same modules and key names (MONAI's default
    shortcut "B" with a biased 1x1 downsampling conv, as in MONAI 1.3.2 that BrainIAC pins).
    Released file: a Lightning checkpoint ``{"state_dict": {"backbone.<resnet key>": ...,
    <other heads>}, ...}``; ``load_brainiac.py`` keeps the keys *containing* ``backbone`` and loads
    them strictly into ``ResNet50_3D`` (whose own keys are ``backbone.<resnet key>``). Here the same
    keys are selected, ``backbone.`` is stripped, everything else is reported as ignored (layout
    ``Lightning``; a bare MONAI resnet state dict is layout ``MONAI``).
    Input (``dataset2.py``, validation transform): the NIfTI array in nibabel (x, y, z) order,
    ``Resized(128^3)`` with MONAI's default ``area`` mode, then ``ScaleIntensity(0, 1)`` (min-max).
    Layers for CKA: the four residual stages ``layer1..layer4`` (GAP of each).

``brainiac`` -- v2 (xwumed/BrainIAC, Feb 2026; ``src/model.py::ViTBackboneNet``)
    MONAI ``ViT(in_channels=1, img_size=96^3, patch_size=16^3, hidden_size=768, mlp_dim=3072,
    num_layers=12, num_heads=12)`` with ``classification=False``: learnable position embedding,
    no qkv bias, **no CLS token**. The public feature ``features[0][:, 0]`` (called "CLS" in the
    code) is therefore the final-normed *first patch token* (the corner patch of the grid);
    ``pool="first"`` reproduces it (BrainIAC's and BrainDINO's choice), ``pool="mean"`` averages all
    patch tokens instead (the nidl port's choice). Released file ``BrainIAC.ckpt``: Lightning
    ``{"state_dict": {"backbone.<ViT key>": ..., <projection head>}}``; the public loader keeps the
    ``backbone.`` keys, strips the prefix and loads with ``strict=True`` -- as here. BrainIAC pins
    MONAI 1.3.2, whose transformer blocks have no cross-attention keys; MONAI >= 1.4 adds unused
    ones (``norm_cross_attn``/``cross_attn``), accepted both ways by declaration.
    Input (``src/dataset.py::get_validation_transform``): ``Resized(96^3, trilinear)`` then
    ``NormalizeIntensityd(nonzero=True, channel_wise=True)`` of the atlas-registered (x, y, z) array.
    Layers for CKA: ``block0..block11``, each pooled like ``cls`` after the final LayerNorm (so the
    last block's entry equals ``cls``).

``brainiac_simclr`` -- the v1 architecture trained by our SimCLR recipe (:mod:`brainfm.ssl.simclr`)
    File layout (``brainfm.ssl.export.export_resnet3d``): ``{"state_dict": <MONAI resnet state dict
    without fc>, "arch": "resnet50", "conv1_stride": 2}``, the network built by
    ``build_resnet3d`` = ``monai.networks.nets.<arch>(spatial_dims=3, n_input_channels=1,
    conv1_t_size=7, conv1_t_stride=<conv1_stride>, feed_forward=False)``. ``arch``/``conv1_stride``
    recorded in the file must match the encoder's (a stride mismatch would not show in the keys).
    The recipe trains on views of the canonical store volumes, so inference feeds the canonical
    (z, x, y) volume, trilinearly resized to ``img_size`` (the recipe's ``input_size``), intensities
    unchanged.

Axis order: the store's canonical (D, H, W) = (z, x, y) volume is permuted to (x, y, z) for v1/v2,
the nibabel order of their RAS-ish atlas-registered inputs (the atlas file is not in the public
snapshot, so its exact orientation is unverified). ``protocol="braindino"`` (v2 only) instead
reproduces how the public BrainDINO code fed BrainIAC: its own robust z-scored (z, x, y) volume
resized to 96^3, no re-normalisation. ``config/paper.yaml`` selects ``protocol: braindino``
(with ``pool="first"``, the default), so the BrainIAC rows compare what the paper compared.

``*_scratch``: the same architectures with a seeded random initialisation (controls);
``brainiac_simclr_scratch`` is the SimCLR run's own starting point.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.networks import nets as monai_nets
from torch import nn

from brainfm.errors import CheckpointError, ConfigError
from brainfm.models.baselines.common import (
    AXES_CANONICAL,
    AXES_XYZ,
    MONAI_DEAD_KEYS,
    VolumeEncoder3D,
    check_module_dead,
    early_mid_late,
    minmax_scale,
    nonzero_zscore,
    patch_grid,
    rebase_background,
    resize3d,
    seeded,
    size3,
    strip_prefix,
)
from brainfm.models.checkpoint import Layout, read_checkpoint
from brainfm.models.registry import register_encoder

__all__ = ["ResNetEncoder3D", "BrainIACViT", "RESNET_FEATURES", "build_monai_resnet"]

RESNET_FEATURES = {"resnet10": 512, "resnet18": 512, "resnet34": 512, "resnet50": 2048}
RESNET_RECIPES = ("brainiac_v1", "simclr", "medicalnet")
PROTOCOLS = ("native", "braindino")


def _check_choice(value: str, choices: Sequence[str], what: str) -> str:
    if value not in choices:
        raise ConfigError(f"{what} must be one of {tuple(choices)}, got {value!r}")
    return value


def build_monai_resnet(arch: str = "resnet50", *, conv1_stride: int = 2, shortcut_type: str = "B",
                       bias_downsample: bool = True) -> nn.Module:
    """MONAI 3D ResNet, 1 input channel, 7^3 stem with ``conv1_stride``, no ``fc`` (pooled features out)."""
    _check_choice(arch, tuple(RESNET_FEATURES), "ResNet arch")
    return getattr(monai_nets, arch)(pretrained=False, spatial_dims=3, n_input_channels=1, conv1_t_size=7,
                                     conv1_t_stride=int(conv1_stride), feed_forward=False,
                                     shortcut_type=shortcut_type, bias_downsample=bias_downsample)


def dilate_like_medicalnet(net: nn.Module) -> None:
    """MedicalNet's layout of the last two stages: stride 1 with dilation 2 (layer3) and 4 (layer4).

    MONAI's ResNet has the same parameters but strides 2 there; only conv hyper-parameters change
    (every 3x3x3 conv of the stage gets ``dilation = padding = d`` and stride 1, the 1x1 shortcut
    stride 1), so the same weights load either way.
    """
    for layer, d in ((net.layer3, 2), (net.layer4, 4)):
        for block in layer:
            for conv in block.modules():
                if isinstance(conv, nn.Conv3d) and conv.kernel_size == (3, 3, 3):
                    conv.stride, conv.dilation, conv.padding = (1, 1, 1), (d, d, d), (d, d, d)
            ds = block.downsample
            if isinstance(ds, nn.Sequential) and isinstance(ds[0], nn.Conv3d):
                ds[0].stride = (1, 1, 1)
            elif isinstance(ds, functools.partial):  # shortcut "A": strided average pooling
                block.downsample = functools.partial(ds.func, *ds.args, **{**ds.keywords, "stride": 1})


# ============================================================================ ResNet (v1, SimCLR, MedicalNet)
class ResNetEncoder3D(VolumeEncoder3D):
    """A frozen MONAI 3D ResNet: ``cls`` = GAP of ``layer4`` (2048-d for ResNet50)."""

    def __init__(self, *, arch: str = "resnet50", recipe: str = "brainiac_v1", img_size: int | Sequence[int] = 128,
                 conv1_stride: int = 2, shortcut_type: str = "B", bias_downsample: bool = True,
                 dilated: bool = False, input_perm: Sequence[int] = AXES_XYZ, seed: int = 0,
                 expected_layout: str = "") -> None:
        super().__init__(input_perm=input_perm, grid_axes=input_perm)
        self.recipe = _check_choice(recipe, RESNET_RECIPES, "recipe")
        self.img_size = size3(img_size)
        with seeded(seed):
            self.net = build_monai_resnet(arch, conv1_stride=conv1_stride, shortcut_type=shortcut_type,
                                          bias_downsample=bias_downsample)
        if dilated:
            dilate_like_medicalnet(self.net)
        self.arch, self.conv1_stride = arch, int(conv1_stride)
        self.embed_dim = RESNET_FEATURES[arch]
        self.layer_names = ["layer1", "layer2", "layer3", "layer4"]
        self.cka_layers = early_mid_late(len(self.layer_names))
        self.expected_layout = expected_layout
        self.config = {"arch": arch, "recipe": recipe, "img_size": list(self.img_size),
                       "conv1_stride": int(conv1_stride), "shortcut_type": shortcut_type,
                       "bias_downsample": bool(bias_downsample), "dilated": bool(dilated),
                       "input_axes": list(self.input_perm), "seed": int(seed)}

    def weight_module(self) -> nn.Module:
        return self.net

    def preprocess(self, volume: torch.Tensor) -> torch.Tensor:
        """Canonical (D, H, W) -> (1, 1, *img_size) in the recipe's axis order and intensity scale.

        ``brainiac_v1``: (x, y, z), area resize, min-max to [0, 1] (background rebased to the minimum
        first). ``simclr``: canonical order, trilinear resize, intensities as stored. ``medicalnet``:
        (z, y, x), trilinear resize, z-score over foreground (> 0 after rebasing), background 0
        (MedicalNet fills it with N(0, 1) noise during training; omitted for determinism).
        """
        x = self.to_network_axes(volume)
        if self.recipe == "brainiac_v1":
            return minmax_scale(resize3d(rebase_background(x), self.img_size, "area"))
        if self.recipe == "simclr":
            return resize3d(x, self.img_size, "trilinear")
        return nonzero_zscore(resize3d(rebase_background(x), self.img_size, "trilinear"))

    def forward_features(self, x: torch.Tensor, layers: Sequence[int | str] = (),
                         return_patch: bool = False) -> dict[str, Any]:
        net = self.net
        h = net.act(net.bn1(net.conv1(x)))
        if not net.no_max_pool:
            h = net.maxpool(h)
        stages = []
        for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
            h = layer(h)
            stages.append(h)
        return self.pool_stages(stages, layers, return_patch)

    # ------------------------------------------------------------------ weights
    def select_state(self, state: dict[str, torch.Tensor], path: Path, layout: Layout) -> dict[str, torch.Tensor]:
        if self.recipe == "brainiac_v1":
            if not any("backbone" in k for k in state):
                layout.recognise("monai", "MONAI")
                return state
            # load_brainiac.py: keep keys containing 'backbone'; ResNet50_3D names them 'backbone.<key>'
            layout.recognise("lightning", "Lightning")
            layout.outside += sorted(k for k in state if "backbone" not in k)
            return {k[len("backbone."):] if k.startswith("backbone.") else k: v
                    for k, v in state.items() if "backbone" in k}
        if self.recipe == "medicalnet":
            if "module." in layout.stripped:
                layout.recognise("medicalnet_dataparallel", "MedicalNet DataParallel")
            else:
                layout.recognise("monai", "MONAI")
            layout.outside += sorted(k for k in state if k.startswith("conv_seg."))  # segmentation head
            return {k: v for k, v in state.items() if not k.startswith("conv_seg.")}
        layout.recognise("simclr_export", "brainfm SimCLR export")
        return state

    def load_weights(self, path: str | Path, **kwargs: Any) -> dict[str, Any]:
        if self.recipe == "simclr":
            self._check_simclr_metadata(Path(path))
        return super().load_weights(path, **kwargs)

    def _check_simclr_metadata(self, path: Path) -> None:
        obj = read_checkpoint(path)
        if not isinstance(obj, dict):
            return
        want = {"arch": self.arch, "conv1_stride": self.conv1_stride}
        bad = [f"{k}={obj[k]!r} (encoder: {v!r})" for k, v in want.items() if k in obj and obj[k] != v]
        if bad:
            raise CheckpointError(path, "SimCLR export was trained with another architecture: " + ", ".join(bad)
                                  + "; pass the matching arch/conv1_stride to the encoder")


# ============================================================================ ViT (v2)
class BrainIACViT(VolumeEncoder3D):
    """BrainIAC v2: MONAI 3D ViT-B/16 at 96^3, no CLS token (see module docstring for ``pool``)."""

    expected_layout = ("BrainIAC v2 Lightning checkpoint {'state_dict': {'backbone.<MONAI ViT key>': ...}} "
              "(patch_embedding.*, blocks.N.*, norm.*), or the bare MONAI ViT state dict")
    expected_missing = MONAI_DEAD_KEYS
    expected_unexpected = MONAI_DEAD_KEYS

    def __init__(self, *, img_size: int | Sequence[int] = 96, patch_size: int = 16, hidden_size: int = 768,
                 mlp_dim: int = 3072, num_layers: int = 12, num_heads: int = 12, pool: str = "first",
                 protocol: str = "native", seed: int = 0) -> None:
        _check_choice(protocol, PROTOCOLS, "protocol")
        perm = AXES_XYZ if protocol == "native" else AXES_CANONICAL
        super().__init__(input_perm=perm, grid_axes=perm)
        self.pool = _check_choice(pool, ("first", "mean"), "pool")
        self.protocol = protocol
        self.img_size, self.patch_size = patch_grid(img_size, patch_size)
        try:
            with seeded(seed):
                self.vit = monai_nets.ViT(in_channels=1, img_size=self.img_size, patch_size=self.patch_size,
                                          hidden_size=hidden_size, mlp_dim=mlp_dim, num_layers=num_layers,
                                          num_heads=num_heads, classification=False, save_attn=False)
        except (ValueError, AssertionError) as exc:
            raise ConfigError(f"cannot build the BrainIAC ViT: {exc}") from exc
        check_module_dead(self.vit)
        self.grid = tuple(s // self.patch_size for s in self.img_size)
        self.embed_dim = int(hidden_size)
        self.layer_names = [f"block{i}" for i in range(num_layers)]
        self.cka_layers = early_mid_late(len(self.layer_names))
        self.config = {"img_size": list(self.img_size), "patch_size": self.patch_size, "hidden_size": hidden_size,
                       "mlp_dim": mlp_dim, "num_layers": num_layers, "num_heads": num_heads, "pool": pool,
                       "protocol": protocol, "input_axes": list(self.input_perm), "seed": int(seed)}

    def weight_module(self) -> nn.Module:
        return self.vit

    def preprocess(self, volume: torch.Tensor) -> torch.Tensor:
        """native: (x, y, z), trilinear 96^3, non-zero z-score; braindino: (z, x, y), trilinear 96^3, as stored."""
        x = resize3d(self.to_network_axes(volume), self.img_size, "trilinear")
        return nonzero_zscore(x) if self.protocol == "native" else x

    def _pool(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens[:, 0] if self.pool == "first" else tokens.mean(dim=1)

    def forward_features(self, x: torch.Tensor, layers: Sequence[int | str] = (),
                         return_patch: bool = False) -> dict[str, Any]:
        vit = self.vit
        h = vit.patch_embedding(x)
        wanted = {self.layer_index(layer) for layer in layers}
        hidden: dict[int, torch.Tensor] = {}
        for i, blk in enumerate(vit.blocks):
            h = blk(h)
            if i in wanted:
                hidden[i] = h
        final = vit.norm(h)
        out: dict[str, Any] = {"cls": self._pool(final)}
        if layers:
            out["layers"] = [self._pool(vit.norm(hidden[self.layer_index(layer)])) for layer in layers]
        if return_patch:
            out["patch"] = self.grid_to_canonical(final.reshape(final.shape[0], *self.grid, final.shape[-1]))
        return out

    def select_state(self, state: dict[str, torch.Tensor], path: Path, layout: Layout) -> dict[str, torch.Tensor]:
        if any(k.startswith("backbone.") for k in state):  # ViTBackboneNet: keep backbone.*, strip it
            layout.recognise("lightning", "Lightning")
            kept, outside = strip_prefix(state, "backbone.")
            layout.outside += outside
            return kept
        layout.recognise("monai", "MONAI")
        return state


# ============================================================================ registry
_V1_LAYOUT = ("BrainIAC v1 Lightning checkpoint {'state_dict': {'backbone.<MONAI resnet50 key>': ...}} "
              "(keys containing 'backbone' are used), or the bare MONAI resnet50 state dict")
_SIMCLR_LAYOUT = ("brainfm SimCLR export {'state_dict': <MONAI 3D ResNet state dict without fc>, 'arch', "
                  "'conv1_stride'}")


def _need(name: str, weights: str | None) -> str:
    if not weights:
        raise ConfigError(f"encoder {name!r} needs a weights file (use '{name}_scratch' for a randomly "
                          "initialised control)")
    return weights


def _no_weights(name: str, weights: str | None) -> None:
    if weights:
        raise ConfigError(f"encoder {name!r} takes no weights (it is the random-initialisation control)")


def _v1(img_size: int | Sequence[int], seed: int) -> ResNetEncoder3D:
    return ResNetEncoder3D(arch="resnet50", recipe="brainiac_v1", img_size=img_size, conv1_stride=2,
                           input_perm=AXES_XYZ, seed=seed, expected_layout=_V1_LAYOUT)


@register_encoder("brainiac_v1")
def brainiac_v1(weights: str | None = None, *, img_size: int | Sequence[int] = 128,
                seed: int = 0) -> ResNetEncoder3D:
    """BrainIAC v1 (3D ResNet50, 2048-d) from the released Lightning checkpoint."""
    path = _need("brainiac_v1", weights)
    enc = _v1(img_size, seed)
    enc.load_weights(path)
    return enc


@register_encoder("brainiac_v1_scratch")
def brainiac_v1_scratch(weights: str | None = None, *, img_size: int | Sequence[int] = 128,
                        seed: int = 0) -> ResNetEncoder3D:
    """Random-initialisation control of the BrainIAC v1 ResNet50 (MONAI init drawn from ``seed``)."""
    _no_weights("brainiac_v1_scratch", weights)
    return _v1(img_size, seed)


@register_encoder("brainiac_simclr")
def brainiac_simclr(weights: str | None = None, *, arch: str = "resnet50", conv1_stride: int = 2,
                    img_size: int | Sequence[int] = 128, seed: int = 0) -> ResNetEncoder3D:
    """The BrainIAC v1 architecture with weights written by our SimCLR recipe (``brainfm.ssl.simclr``)."""
    path = _need("brainiac_simclr", weights)
    enc = ResNetEncoder3D(arch=arch, recipe="simclr", img_size=img_size, conv1_stride=conv1_stride,
                          input_perm=AXES_CANONICAL, seed=seed, expected_layout=_SIMCLR_LAYOUT)
    enc.load_weights(path)
    return enc


@register_encoder("brainiac_simclr_scratch")
def brainiac_simclr_scratch(weights: str | None = None, *, arch: str = "resnet50", conv1_stride: int = 2,
                            img_size: int | Sequence[int] = 128, seed: int = 0) -> ResNetEncoder3D:
    """Random-initialisation control of ``brainiac_simclr``: the SimCLR recipe's ResNet before training.

    Built under ``seed`` in the recipe's module order, so with the run's seed it holds the very
    weights the SimCLR run started from (what pretraining added is measured against them).
    """
    _no_weights("brainiac_simclr_scratch", weights)
    return ResNetEncoder3D(arch=arch, recipe="simclr", img_size=img_size, conv1_stride=conv1_stride,
                           input_perm=AXES_CANONICAL, seed=seed)


def _v2(seed: int, **kwargs: Any) -> BrainIACViT:
    return BrainIACViT.build("BrainIAC ViT", seed=seed, **kwargs)


@register_encoder("brainiac")
def brainiac(weights: str | None = None, *, seed: int = 0, **kwargs: Any) -> BrainIACViT:
    """BrainIAC v2 (MONAI ViT-B/16 at 96^3, first-token feature), the version BrainDINO compared against.

    kwargs: ``pool`` ("first" | "mean"), ``protocol`` ("native" | "braindino"), and architecture
    sizes (``img_size``, ``patch_size``, ``hidden_size``, ``mlp_dim``, ``num_layers``, ``num_heads``).
    """
    path = _need("brainiac", weights)
    enc = _v2(seed, **kwargs)
    enc.load_weights(path)
    return enc


@register_encoder("brainiac_scratch")
def brainiac_scratch(weights: str | None = None, *, seed: int = 0, **kwargs: Any) -> BrainIACViT:
    """Random-initialisation control of the BrainIAC v2 ViT (MONAI init drawn from ``seed``)."""
    _no_weights("brainiac_scratch", weights)
    return _v2(seed, **kwargs)
