"""Shared machinery of the 3D baseline encoders: axis order, native intensity recipes, strict loading.

Axis order
    The downstream store holds a canonical volume ``(D, H, W) = (axial z, x, y)`` of an RAS+ image
    (``np.moveaxis(vol, 2, 0)`` of what nibabel returns after ``as_closest_canonical``). Each baseline
    was pretrained on arrays in another order: MONAI ``LoadImage`` and nibabel give ``(x, y, z)``
    (BrainIAC, BM-MAE, BrainMVP's input before its own permute), MedicalNet stores ``(z, y, x)``.
    An encoder states two permutations of the canonical axes:

    * ``input_perm``: canonical axis of each spatial axis of the network input
      (``(1, 2, 0)`` turns (z, x, y) into (x, y, z));
    * ``grid_axes``: canonical axis of each spatial axis of the network's internal feature grid
      (differs from ``input_perm`` when the network permutes its input, as BrainMVP does).

    Patch grids are returned in canonical order (axial axis first), as the feature extractor expects.

Intensity recipes
    Every function below reproduces one MONAI transform on a single-channel volume, computed with
    torch on the volume's device (the tests compare each with MONAI itself):
    :func:`nonzero_zscore` = ``NormalizeIntensity(nonzero=True, channel_wise=True)``,
    :func:`minmax_scale` = ``ScaleIntensity(minv=0, maxv=1)``, :func:`percentile_scale` =
    ``ScaleIntensityRangePercentiles(lower, upper, b_min, b_max, clip)``, :func:`resize3d` =
    ``Resize(mode="trilinear" | "area")``. The store's volumes are z-scored over the brain with the
    background kept at exactly 0, so foreground values are negative as well as positive. Recipes
    that assume "background = darkest value" (min-max, percentiles over the whole image, MedicalNet's
    ``volume > 0`` mask) first apply :func:`rebase_background`, which shifts the foreground so its
    minimum is 0 and keeps the background 0; every recipe used here is invariant to a shift of the
    foreground, so this only restores where the background sits relative to the brain.

Loading
    :class:`VolumeEncoder3D` runs :func:`brainfm.models.checkpoint.load_encoder_weights` (read with
    ``weights_only=True``, wrapper prefixes such as DataParallel's ``module.`` removed key by key,
    every key checked, shapes checked, non-finite values refused) after the encoder's
    :meth:`select_state` hook has recognised the authors' layout (``Lightning``, ``MONAI``,
    ``MedicalNet DataParallel``, ``BrainMVP RecModel``, ``BM-MAE raw`` ...) and reproduced the
    public loader's unwrapping (prefix selection and stripping). Keys the public loader drops on
    purpose (projection heads, decoders) are listed in the load info under ``ignored`` and logged
    at WARNING; any other surplus or missing key is a :class:`~brainfm.errors.CheckpointError`
    naming the file, the keys, the recognised layout and the expected one. The recognised layout is
    recorded in the load info (``format``, ``layout``, ``container``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from brainfm.errors import CheckpointError, ConfigError
from brainfm.models.base import Encoder
from brainfm.models.checkpoint import Layout, load_encoder_weights

__all__ = [
    "VolumeEncoder3D",
    "AXES_XYZ",
    "AXES_ZYX",
    "AXES_CANONICAL",
    "as_volume",
    "resize3d",
    "nonzero_zscore",
    "minmax_scale",
    "percentile",
    "percentile_scale",
    "rebase_background",
    "seeded",
    "size3",
    "MONAI_DEAD_KEYS",
    "early_mid_late",
    "strip_prefix",
    "check_module_dead",
]

AXES_CANONICAL = (0, 1, 2)  # (z, x, y): the store's own order
AXES_XYZ = (1, 2, 0)  # nibabel / MONAI LoadImage voxel order
AXES_ZYX = (0, 2, 1)  # MedicalNet's stored "DHW" order

# MONAI >= 1.4 ``TransformerBlock`` builds a cross-attention norm (and, in 1.4-1.5, a whole
# ``CrossAttentionBlock``) even when ``with_cross_attention=False``; the forward pass never uses them.
# Checkpoints from MONAI 1.3 lack these keys, checkpoints from 1.4-1.5 carry them. They are
# accepted both ways by declaration (``ViT.load_old_state_dict`` in MONAI 1.6 drops them too).
MONAI_DEAD_KEYS = ("blocks.*.norm_cross_attn.*", "blocks.*.cross_attn.*")


def size3(value: int | Sequence[int], what: str = "img_size") -> tuple[int, int, int]:
    """An int or 3 ints -> a 3-tuple of positive ints."""
    vals = (value,) * 3 if isinstance(value, int) else tuple(value)
    if len(vals) != 3 or any(int(v) != v or int(v) <= 0 for v in vals):
        raise ConfigError(f"{what} must be a positive int or 3 positive ints, got {value!r}")
    return tuple(int(v) for v in vals)  # type: ignore[return-value]


def patch_grid(img_size: int | Sequence[int], patch_size: int) -> tuple[tuple[int, int, int], int]:
    """(img_size as 3 ints, patch_size) for a 3D ViT, refusing a size the patches do not tile."""
    size, patch = size3(img_size), int(patch_size)
    if any(s % patch for s in size):
        raise ConfigError(f"img_size {size} must be a multiple of patch_size {patch_size}")
    return size, patch


class seeded:  # noqa: N801 - used as a context manager
    """Build modules under ``torch.manual_seed(seed)`` without touching the caller's global RNG."""

    def __init__(self, seed: int):
        self.seed = int(seed)
        self._fork = torch.random.fork_rng(devices=[])

    def __enter__(self) -> None:
        self._fork.__enter__()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc: Any) -> None:
        self._fork.__exit__(*exc)


# ----------------------------------------------------------------------------- intensity recipes
def as_volume(volume: torch.Tensor | Any) -> torch.Tensor:
    """A (D, H, W) float32 tensor (the canonical store item), or ValueError."""
    v = torch.as_tensor(volume)
    if v.ndim != 3:
        raise ValueError(f"expected a canonical (D, H, W) volume, got shape {tuple(v.shape)}")
    return v.to(dtype=torch.float32)


def resize3d(x: torch.Tensor, size: Sequence[int], mode: str = "trilinear") -> torch.Tensor:
    """MONAI ``Resize(spatial_size, mode)`` of a (B, C, d, h, w) tensor, without anti-aliasing.

    ``trilinear`` uses ``align_corners=False`` (MONAI's default ``align_corners=None``); ``area`` is
    MONAI's default mode (adaptive average pooling, used by BrainIAC v1).
    """
    size = tuple(int(s) for s in size)
    if tuple(x.shape[-3:]) == size:
        return x
    if mode == "trilinear":
        return F.interpolate(x, size=size, mode="trilinear", align_corners=False)
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    raise ConfigError(f"unknown resize mode {mode!r}")


def nonzero_zscore(x: torch.Tensor) -> torch.Tensor:
    """``NormalizeIntensity(nonzero=True)`` of one channel: (v - mean) / std over non-zero voxels.

    Zero voxels stay 0; the std is the population std (``unbiased=False``) and 1 when it is 0.
    """
    mask = x != 0
    if not bool(mask.any()):
        return x.clone()
    vals = x[mask]
    mean = vals.mean()
    std = vals.std(unbiased=False)
    std = torch.where(std == 0, torch.ones_like(std), std)
    out = torch.zeros_like(x)
    out[mask] = (vals - mean) / std
    return out


def minmax_scale(x: torch.Tensor, minv: float = 0.0, maxv: float = 1.0) -> torch.Tensor:
    """``ScaleIntensity(minv, maxv)``: linear map of [min, max] of the whole volume onto [minv, maxv]."""
    lo, hi = x.min(), x.max()
    if bool(lo == hi):
        return x * minv
    return (x - lo) / (hi - lo) * (maxv - minv) + minv


def percentile(x: torch.Tensor, q: float) -> torch.Tensor:
    """``q``-th percentile with linear interpolation (``numpy.percentile``'s default), any size, any device."""
    flat = x.reshape(-1)
    n = flat.numel()
    pos = float(q) / 100.0 * (n - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    v_lo = torch.kthvalue(flat, lo + 1).values
    if hi == lo:
        return v_lo
    v_hi = torch.kthvalue(flat, hi + 1).values
    return v_lo + (pos - lo) * (v_hi - v_lo)


def percentile_scale(x: torch.Tensor, lower: float, upper: float, b_min: float = 0.0, b_max: float = 1.0,
                     clip: bool = False) -> torch.Tensor:
    """``ScaleIntensityRangePercentiles(lower, upper, b_min, b_max, clip)`` over all voxels of one channel."""
    a_min, a_max = percentile(x, lower), percentile(x, upper)
    if bool(a_max == a_min):  # MONAI: warn and only shift
        return x - a_min + b_min
    out = (x - a_min) / (a_max - a_min) * (b_max - b_min) + b_min
    return out.clamp(b_min, b_max) if clip else out


def rebase_background(x: torch.Tensor) -> torch.Tensor:
    """Shift the foreground (non-zero voxels) so that the background (0) is the darkest value.

    Foreground values are shifted by their minimum when it is negative (z-scored input), so the
    result is >= 0 with the background still exactly 0; non-negative input is returned unchanged.
    """
    mask = x != 0
    if not bool(mask.any()):
        return x.clone()
    shift = torch.clamp(x[mask].min(), max=0.0)
    return torch.where(mask, x - shift, torch.zeros_like(x))


# ----------------------------------------------------------------------------- encoder base
class VolumeEncoder3D(Encoder):
    """Base of the 3D baselines: axis bookkeeping and layout-aware strict loading.

    Subclasses set ``input_perm`` / ``grid_axes`` (see the module docstring), ``expected_layout``
    (a short description of the released checkpoint layout, quoted in errors) and implement
    :meth:`select_state`, :meth:`preprocess` and :meth:`forward_features`.
    """

    input_kind = "volume3d"
    expected_layout: str = ""
    # declared patterns for load_encoder_weights (model keys that may stay at init / file keys left unused)
    expected_missing: tuple[str, ...] = ()
    expected_unexpected: tuple[str, ...] = ()

    def __init__(self, input_perm: Sequence[int], grid_axes: Sequence[int]) -> None:
        super().__init__()
        for perm in (input_perm, grid_axes):
            if sorted(perm) != [0, 1, 2]:
                raise ValueError(f"not a permutation of the 3 canonical axes: {perm}")
        self.input_perm = tuple(int(a) for a in input_perm)
        self.grid_axes = tuple(int(a) for a in grid_axes)
        self._notes: dict[str, Any] = {}
        self.cka_layers: tuple[int, ...] = ()  # early / mid / late indices into layer_names (set by subclasses)

    @classmethod
    def build(cls, what: str, **kwargs: Any) -> VolumeEncoder3D:
        """Construct from config keywords; an unknown keyword is a ConfigError naming the encoder."""
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"{what}: {exc}") from exc

    def pool_stages(self, stages: Sequence[torch.Tensor], layers: Sequence[int | str],
                    return_patch: bool) -> dict[str, Any]:
        """Encoder outputs of a CNN: global-average-pooled last stage (cls), requested stages, last grid."""
        out: dict[str, Any] = {"cls": stages[-1].mean(dim=(2, 3, 4))}
        if layers:
            out["layers"] = [stages[self.layer_index(layer)].mean(dim=(2, 3, 4)) for layer in layers]
        if return_patch:
            out["patch"] = self.grid_to_canonical(stages[-1].permute(0, 2, 3, 4, 1))
        return out

    # ------------------------------------------------------------------ axes
    def to_network_axes(self, volume: torch.Tensor) -> torch.Tensor:
        """Canonical (D, H, W) volume -> (1, 1, *network axes)."""
        return as_volume(volume).permute(self.input_perm).unsqueeze(0).unsqueeze(0)

    def grid_to_canonical(self, grid: torch.Tensor) -> torch.Tensor:
        """(B, g0, g1, g2, C) in the network's grid order -> (B, g_axial, g_x, g_y, C)."""
        order = [0] + [1 + self.grid_axes.index(c) for c in range(3)] + [4]
        return grid.permute(order)

    # ------------------------------------------------------------------ weights
    def select_state(self, state: dict[str, torch.Tensor], path: Path, layout: Layout) -> dict[str, torch.Tensor]:
        """Public-loader unwrapping: the state in ``weight_module()`` names.

        Implementations name the layout they recognise (``layout.recognise``) and put the keys the
        authors' loader drops on purpose (heads, decoders) in ``layout.outside``.
        """
        return state

    def convert_state_dict(self, state: dict[str, torch.Tensor], path: Path,
                           layout: Layout | None = None) -> dict[str, torch.Tensor]:
        if layout is None:
            layout = Layout("state_dict", "state dict", "bare state dict")
        return self.select_state(dict(state), Path(path), layout)

    def load_weights(self, path: str | Path, **kwargs: Any) -> dict[str, Any]:
        """Strictly load a file in the released layout (see :meth:`select_state`)."""
        if kwargs:
            raise ConfigError(f"{type(self).__name__}.load_weights takes no options, got {sorted(kwargs)}")
        self._notes = {}
        try:
            info = load_encoder_weights(self, path, expected_missing=self.expected_missing,
                                        expected_unexpected=self.expected_unexpected)
        except CheckpointError as exc:
            reason = exc.reason
            if "Weights only load failed" in reason:
                reason += (" -- the file also pickles Python objects (e.g. a Lightning checkpoint's hyper-parameters),"
                           " which are never unpickled here. If you trust its source, keep only the tensors once: "
                           "python -c \"import torch; c = torch.load('IN', weights_only=False); "
                           "torch.save({'state_dict': c['state_dict']}, 'OUT')\"")
            raise CheckpointError(exc.path, f"{reason} [expected layout: {self.expected_layout}]") from exc
        info.update(self._notes)
        self.weights_info = info
        return info


def early_mid_late(n_layers: int) -> tuple[int, ...]:
    """Early/mid/late block indices for CKA: the paper's blocks 2/6/11 of 12, scaled to ``n_layers``.

    Four-stage CNNs (ResNet, UniFormer) get stages 2-4 (indices 1, 2, 3): the first stage is
    the stem-level feature map, the paper's "early" for BrainMVP is ambiguous.
    """
    if n_layers == 4:
        return (1, 2, 3)
    return tuple(sorted({round(f * (n_layers - 1)) for f in (2 / 11, 6 / 11, 1.0)}))


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Keys under ``prefix`` with it removed, and the other keys (left out)."""
    kept = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return kept, sorted(k for k in state if not k.startswith(prefix))


def check_module_dead(module: nn.Module) -> None:
    """Refuse MONAI transformer blocks that really use cross-attention (their keys are declared dead)."""
    for name, sub in module.named_modules():
        if getattr(sub, "with_cross_attention", False):
            raise ConfigError(f"{name}: cross-attention blocks are not supported by the baseline loaders")
