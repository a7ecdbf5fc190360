"""BrainMVP baseline (Rui et al., CVPR 2025; shaohao011/BrainMVP): a 3D UniFormer-S encoder.

Architecture (``models/uniformer_blocks.py`` = ``Downstream/model/uniformer.py::uniformer_small``)
    Four stages, depths (3, 4, 8, 3), widths (64, 128, 320, 512), head dim 64, MLP ratio 4, qkv bias.
    Each stage starts with a ``PatchEmbed`` (2^3 conv with stride 2, then LayerNorm over channels), so
    stage k works at 1/2^k of the input. Stages 1-2 are convolutional "local MHRA" blocks (``CBlock``:
    depth-wise 3^3 conv position encoding, BatchNorm, 1x1 conv -> depth-wise 5^3 conv -> 1x1 conv,
    BatchNorm + 1x1-conv MLP); stages 3-4 are self-attention blocks (``SABlock``: the same conv
    position encoding, then pre-norm multi-head self-attention and MLP over all tokens, LayerNorm
    eps 1e-6). The last stage is followed by ``BatchNorm3d(512)``; the feature is its global average
    (512-d), as in BrainDINO's comparison code. Module and parameter names follow the original
    (``patch_embed{1..4}.{proj,norm}``, ``blocks{1..4}.N.{pos_embed,norm1,conv1,attn,conv2,norm2,mlp.fc1,
    mlp.fc2}`` / ``attn.{qkv,proj}``, ``norm``) so released state dicts load unchanged. Attention is
    computed with ``scaled_dot_product_attention`` (same maths, much less memory at 16^3 tokens).

Input permute. ``UniFormer.forward`` starts with ``x.permute(0, 1, 4, 2, 3)`` ("C*H*W*D to C*D*H*W"):
    the MONAI-loaded array (x, y, z) of an RAS-oriented image becomes (z, x, y) inside the network, in
    pretraining (``models/uniformer_blocks.py``) and downstream alike. That internal order is exactly
    our canonical (D, H, W), so ``protocol="native"`` hands the network (x, y, z) and keeps the
    permute, which the network then undoes. ``protocol="braindino"`` reproduces the public BrainDINO
    comparison code, which passes its (z, x, y) volume of 128 x 224 x 224 straight in, so the network
    runs on (y, z, x) (its comment "[B, 512, 14, 8, 14]" confirms the shape). ``config/paper.yaml``
    selects ``protocol: braindino`` so the BrainMVP rows compare what the paper compared.

Intensity. Pretraining: RAS, 1 mm, foreground crop, ``ScaleIntensityRangePercentiles(5, 95, 0, 1,
    clip=True)``; downstream recipe (``Downstream/dataset/transforms.py``): the same percentile
    scaling with ``clip=False`` (MONAI's default), RAS, 1 mm, foreground crop. ``native`` applies the
    downstream recipe over the whole cube (percentiles over all voxels, background included, after
    :func:`~brainfm.models.baselines.common.rebase_background`), then a trilinear resize to 128^3;
    ``clip=True`` selects the pretraining variant. ``braindino`` keeps the stored z-scored values.

Checkpoint. ``BrainMVP_uniformer.pt`` is the pretraining checkpoint ``{"current_epoch", "state_dict",
    "optimizer", "scheduler", "val_best"}`` of a DDP-wrapped ``RecModel``: state keys
    ``module.encoder.uniformer.<UniFormer key>``, ``module.decoder.*``, ``module.rep_template``. The
    downstream loader (``Downstream/train_script.py``) takes ``ck["state_dict"]``, removes
    ``module.`` and ``uniformer.`` from every key, drops ``encoder.patch_embed1.proj.{weight,bias}``
    (its downstream nets have 4 input channels, pretraining had 1) and loads with ``strict=False``.
    Here the same renaming is applied, the ``encoder.*`` keys are selected, decoder and templates
    are reported as ignored, and the rest is checked strictly (layout ``BrainMVP RecModel``). A file
    that is already a bare UniFormer state dict (BrainDINO's ``BrainMVP.pt``, layout ``UniFormer``)
    loads too. A stem whose input channels
    differ from ``in_chans`` is an error unless declared: ``stem_mismatch="reinit"`` (the official
    loader's choice: a seeded random stem) or ``"repeat"`` (tile the pretrained kernel over the new
    channels and divide by the tiling factor, BrainDINO's segmentation adaptation); the choice is
    recorded in the load info.

Layers for CKA: ``stage1..stage4``, the global average of each stage's output (the last one after
the final BatchNorm, equal to ``cls``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from brainfm.errors import CheckpointError, ConfigError
from brainfm.models.baselines.common import (
    AXES_CANONICAL,
    AXES_XYZ,
    VolumeEncoder3D,
    early_mid_late,
    percentile_scale,
    rebase_background,
    resize3d,
    seeded,
    size3,
)
from brainfm.models.checkpoint import Layout
from brainfm.models.registry import register_encoder

__all__ = ["UniFormer3D", "BrainMVPEncoder", "UNIFORMER_S"]

UNIFORMER_S = {"depth": (3, 4, 8, 3), "embed_dim": (64, 128, 320, 512), "head_dim": 64, "mlp_ratio": 4.0}
INPUT_PERMUTE = (0, 1, 4, 2, 3)  # UniFormer.forward's first line


class PatchEmbed3D(nn.Module):
    """2^3 conv with stride 2, then LayerNorm over channels (keys ``proj.*``, ``norm.*``)."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int = 2) -> None:
        super().__init__()
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        return self.norm(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3).contiguous()


class ConvMlp(nn.Module):
    """1x1x1-conv MLP (``fc1``, GELU, ``fc2``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv3d(dim, hidden, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv3d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TokenMlp(nn.Module):
    """Linear MLP over tokens (``fc1``, GELU, ``fc2``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LocalBlock(nn.Module):
    """UniFormer local MHRA block (``CBlock``): conv position encoding, depth-wise 5^3 aggregation, conv MLP."""

    def __init__(self, dim: int, mlp_ratio: float) -> None:
        super().__init__()
        self.pos_embed = nn.Conv3d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.BatchNorm3d(dim)
        self.conv1 = nn.Conv3d(dim, dim, 1)
        self.conv2 = nn.Conv3d(dim, dim, 1)
        self.attn = nn.Conv3d(dim, dim, 5, padding=2, groups=dim)
        self.norm2 = nn.BatchNorm3d(dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        x = x + self.conv2(self.attn(self.conv1(self.norm1(x))))
        return x + self.mlp(self.norm2(x))


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection and an output ``proj``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(head_dim)) v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class GlobalBlock(nn.Module):
    """UniFormer global MHRA block (``SABlock``): conv position encoding, then a pre-norm transformer layer."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool = True) -> None:
        super().__init__()
        self.pos_embed = nn.Conv3d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = TokenMlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        b, c, d, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        t = t + self.attn(self.norm1(t))
        t = t + self.mlp(self.norm2(t))
        return t.transpose(1, 2).reshape(b, c, d, h, w)


class UniFormer3D(nn.Module):
    """3D UniFormer backbone with the parameter names of BrainMVP's ``uniformer_small``.

    ``forward(x)`` takes (B, C, H, W, D) as the original (applying its input permute) and returns the
    four stage outputs in the network's internal (D, H, W) order, the last after ``norm``.
    """

    def __init__(self, *, in_chans: int = 1, depth: Sequence[int] = UNIFORMER_S["depth"],
                 embed_dim: Sequence[int] = UNIFORMER_S["embed_dim"], head_dim: int = UNIFORMER_S["head_dim"],
                 mlp_ratio: float = UNIFORMER_S["mlp_ratio"], qkv_bias: bool = True) -> None:
        super().__init__()
        depth, embed_dim = tuple(int(d) for d in depth), tuple(int(e) for e in embed_dim)
        if len(depth) != 4 or len(embed_dim) != 4 or any(e % head_dim for e in embed_dim[2:]):
            raise ConfigError(f"UniFormer needs 4 depths and 4 widths (stages 3-4 multiples of head_dim "
                              f"{head_dim}), got depth={depth}, embed_dim={embed_dim}")
        self.depth, self.embed_dim = depth, embed_dim
        chans = (int(in_chans),) + embed_dim[:3]
        for i in range(4):
            setattr(self, f"patch_embed{i + 1}", PatchEmbed3D(chans[i], embed_dim[i]))
        self.blocks1 = nn.ModuleList([LocalBlock(embed_dim[0], mlp_ratio) for _ in range(depth[0])])
        self.blocks2 = nn.ModuleList([LocalBlock(embed_dim[1], mlp_ratio) for _ in range(depth[1])])
        self.blocks3 = nn.ModuleList([GlobalBlock(embed_dim[2], embed_dim[2] // head_dim, mlp_ratio, qkv_bias)
                                      for _ in range(depth[2])])
        self.blocks4 = nn.ModuleList([GlobalBlock(embed_dim[3], embed_dim[3] // head_dim, mlp_ratio, qkv_bias)
                                      for _ in range(depth[3])])
        self.norm = nn.BatchNorm3d(embed_dim[3])
        for m in self.modules():  # the original's init: Kaiming-normal convs (fan_out), zero conv biases
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = x.permute(*INPUT_PERMUTE)
        outs = []
        for i in range(1, 5):
            x = getattr(self, f"patch_embed{i}")(x)
            for blk in getattr(self, f"blocks{i}"):
                x = blk(x)
            outs.append(x)
        outs[-1] = self.norm(outs[-1])
        return outs


class BrainMVPEncoder(VolumeEncoder3D):
    """Frozen BrainMVP UniFormer-S: ``cls`` = GAP of the normed last stage (512-d)."""

    expected_layout = ("BrainMVP checkpoint {'state_dict': {'module.encoder.uniformer.<UniFormer key>', "
              "'module.decoder.*', 'module.rep_template'}} or a bare UniFormer state dict")

    def __init__(self, *, in_chans: int = 1, img_size: int | Sequence[int] | None = None, protocol: str = "native",
                 clip: bool = False, stem_mismatch: str = "error", depth: Sequence[int] = UNIFORMER_S["depth"],
                 embed_dim: Sequence[int] = UNIFORMER_S["embed_dim"], head_dim: int = UNIFORMER_S["head_dim"],
                 seed: int = 0) -> None:
        if protocol not in ("native", "braindino"):
            raise ConfigError(f"protocol must be 'native' or 'braindino', got {protocol!r}")
        if stem_mismatch not in ("error", "reinit", "repeat"):
            raise ConfigError(f"stem_mismatch must be 'error', 'reinit' or 'repeat', got {stem_mismatch!r}")
        if protocol == "native":  # network input (x, y, z); after its permute the grid is (z, x, y)
            input_perm, grid_axes = AXES_XYZ, AXES_CANONICAL
        else:  # canonical (z, x, y) fed as is; after the permute the grid is (y, z, x)
            input_perm, grid_axes = AXES_CANONICAL, tuple(AXES_CANONICAL[p - 2] for p in INPUT_PERMUTE[2:])
        super().__init__(input_perm=input_perm, grid_axes=grid_axes)
        default = (128, 128, 128) if protocol == "native" else (128, 224, 224)
        self.img_size = size3(default if img_size is None else img_size)
        if any(s % 16 for s in self.img_size):
            raise ConfigError(f"img_size {self.img_size} must be a multiple of 16 (four stride-2 stages)")
        self.protocol, self.clip, self.stem_mismatch = protocol, bool(clip), stem_mismatch
        self.in_chans = int(in_chans)
        with seeded(seed):
            self.net = UniFormer3D(in_chans=self.in_chans, depth=depth, embed_dim=embed_dim, head_dim=head_dim)
        self.embed_dim = int(self.net.embed_dim[-1])
        self.layer_names = ["stage1", "stage2", "stage3", "stage4"]
        self.cka_layers = early_mid_late(len(self.layer_names))
        self.config = {"in_chans": self.in_chans, "img_size": list(self.img_size), "protocol": protocol,
                       "clip": self.clip, "stem_mismatch": stem_mismatch, "depth": list(self.net.depth),
                       "embed_dim": list(self.net.embed_dim), "head_dim": int(head_dim),
                       "input_axes": list(self.input_perm), "grid_axes": list(self.grid_axes), "seed": int(seed)}

    def weight_module(self) -> nn.Module:
        return self.net

    def preprocess(self, volume: torch.Tensor) -> torch.Tensor:
        """native: (x, y, z), 5-95 percentile -> [0, 1], trilinear 128^3; braindino: (z, x, y) 128x224x224 as stored."""
        x = self.to_network_axes(volume)
        if self.protocol == "native":
            x = percentile_scale(rebase_background(x), 5.0, 95.0, 0.0, 1.0, clip=self.clip)
        x = resize3d(x, self.img_size, "trilinear")
        return x.expand(-1, self.in_chans, -1, -1, -1).contiguous() if self.in_chans > 1 else x

    def forward_features(self, x: torch.Tensor, layers: Sequence[int | str] = (),
                         return_patch: bool = False) -> dict[str, Any]:
        stages = self.net(x)
        return self.pool_stages(stages, layers, return_patch)

    # ------------------------------------------------------------------ weights
    def select_state(self, state: dict[str, torch.Tensor], path: Path, layout: Layout) -> dict[str, torch.Tensor]:
        # Downstream/train_script.py: drop 'module.' and 'uniformer.' everywhere in the key
        renamed = {k.replace("module.", "").replace("uniformer.", ""): v for k, v in state.items()}
        if len(renamed) != len(state):
            raise CheckpointError(path, "keys collide after removing 'module.'/'uniformer.'")
        if any(k.startswith("encoder.") for k in renamed):  # RecModel / UniUnet checkpoint
            layout.recognise("brainmvp_recmodel", "BrainMVP RecModel")
            layout.outside += sorted(k for k in renamed if not k.startswith("encoder."))
            renamed = {k[len("encoder."):]: v for k, v in renamed.items() if k.startswith("encoder.")}
        else:
            layout.recognise("uniformer", "UniFormer")
        self._adapt_stem(renamed, path)
        return renamed

    def _adapt_stem(self, state: dict[str, torch.Tensor], path: Path) -> None:
        key = "patch_embed1.proj.weight"
        w = state.get(key)
        own = self.net.patch_embed1.proj.weight
        if w is None or w.ndim != 5 or w.shape[1] == own.shape[1] or w.shape[0] != own.shape[0]:
            return  # absent, or a different mismatch: the strict check reports it
        c_file, c_model = int(w.shape[1]), int(own.shape[1])
        if self.stem_mismatch == "error":
            raise CheckpointError(path, f"{key} has {c_file} input channel(s), the encoder {c_model}; pass "
                                        "stem_mismatch='reinit' (official downstream loader: random stem) or "
                                        "'repeat' (tile the pretrained kernel)")
        if self.stem_mismatch == "reinit":
            state[key] = own.detach().clone()
            state["patch_embed1.proj.bias"] = self.net.patch_embed1.proj.bias.detach().clone()
            self._notes["stem"] = f"patch_embed1 re-initialised (file {c_file} -> model {c_model} channels)"
            return
        if c_model % c_file:
            raise CheckpointError(path, f"stem_mismatch='repeat' needs the encoder's {c_model} channels to be a "
                                        f"multiple of the file's {c_file}")
        reps = c_model // c_file
        state[key] = w.repeat(1, reps, 1, 1, 1) / reps
        self._notes["stem"] = f"patch_embed1 kernel tiled x{reps} and divided by {reps} ({c_file} -> {c_model})"


# ============================================================================ registry
def _build(seed: int, **kwargs: Any) -> BrainMVPEncoder:
    return BrainMVPEncoder.build("BrainMVP", seed=seed, **kwargs)


@register_encoder("brainmvp")
def brainmvp(weights: str | None = None, *, seed: int = 0, **kwargs: Any) -> BrainMVPEncoder:
    """BrainMVP UniFormer-S from ``BrainMVP_uniformer.pt`` (or a bare UniFormer state dict).

    kwargs: ``protocol`` ("native" | "braindino"), ``img_size``, ``clip``, ``in_chans``,
    ``stem_mismatch`` ("error" | "reinit" | "repeat"), and sizes (``depth``, ``embed_dim``, ``head_dim``).
    """
    if not weights:
        raise ConfigError("encoder 'brainmvp' needs a weights file (use 'brainmvp_scratch' for a randomly "
                          "initialised control)")
    enc = _build(seed, **kwargs)
    enc.load_weights(weights)
    return enc


@register_encoder("brainmvp_scratch")
def brainmvp_scratch(weights: str | None = None, *, seed: int = 0, **kwargs: Any) -> BrainMVPEncoder:
    """Random-initialisation control of the BrainMVP UniFormer-S (initialisation drawn from ``seed``)."""
    if weights:
        raise ConfigError("encoder 'brainmvp_scratch' takes no weights (it is the random-initialisation control)")
    return _build(seed, **kwargs)
