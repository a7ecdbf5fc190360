"""BM-MAE baseline (Robinet et al. 2025; perkyfever/BM-MAE): a multimodal 3D ViT encoder.

Architecture (``bmmae/model.py::ViTEncoder`` with ``bmmae/tokenizers.py::MRITokenizer``)
    One tokenizer per MRI modality, each a MONAI ``PatchEmbeddingBlock`` (1 channel, 128^3 input,
    16^3 conv patches, fixed 3D sin-cos position embedding) -> 512 tokens of 768-d; a learnable CLS
    token is prepended to the concatenated tokens of the given modalities; 12 MONAI
    ``TransformerBlock`` (768-d, **MLP 1536**, 12 heads, qkv bias) and a final LayerNorm. The
    feature is the final-normed CLS token. Built here from the same MONAI blocks under the same
    attribute names, so the state-dict keys are those of the released files:
    ``cls_token``, ``norm.*``, ``blocks.N.{norm1,attn.qkv,attn.out_proj,norm2,mlp.linear1,mlp.linear2}.*``
    and ``tokenizers.<m>.patch_embedding.{patch_embeddings.weight,patch_embeddings.bias,position_embeddings}``.

Modality keys are **lowercase** ``t1``, ``t1ce``, ``t2``, ``flair`` (the decoder and the
fine-tuning scripts use exactly these). The public BrainDINO config asks for ``"T1"``; with the
``strict=False`` load of the public code that silently leaves the used tokenizer random. Here an
unknown or upper-case modality is a ConfigError (:func:`bmmae_key` maps our canonical names
``T1``/``T1c``/``T2``/``FLAIR`` explicitly, for callers that want the mapping).

Released files (``bmmae.pth``, ``bmmae_tcga.pth``): the raw ``BMMAE.state_dict()`` of pretraining
(``loops.py``), i.e. the encoder keys above plus the MAE ``decoder.*``, which the fine-tuning
scripts drop (``if "decoder" not in k``) -- here the ``decoder.*`` keys are declared unused and
every other key must match. The sin-cos position embeddings are stored in the file and loaded from
it (the authors note they were not frozen in their MONAI version). MONAI >= 1.4 adds unused
cross-attention keys to each block; they are accepted both ways by declaration.

Input. Pretraining (``bmmae/augmentations.py``): ``Spacing(1 mm)`` -> ``CenterSpatialCrop(128^3)``
-> ``NormalizeIntensity(nonzero=True, channel_wise=True)``, arrays in MONAI ``LoadImage`` (x, y, z)
order, no reorientation (BraTS files, with random flips along all axes during pretraining). Our
store holds a brain-cropped cube, so ``protocol="native"`` permutes it to (x, y, z), resizes it
trilinearly to 128^3 (the whole brain, not a 1 mm centre crop) and applies the non-zero z-score.
``protocol="braindino"`` reproduces the public BrainDINO feeding: its own robust z-scored
(z, x, y) volume resized to 128^3, no re-normalisation.

The encoder takes one channel per entry of ``modalities`` (default ``("t1",)``): our feature
store has one volume per modality; multi-channel input concatenates the tokens of several
modalities, as ``ViTEncoder`` does. ``modalities="auto"`` (the paper config) feeds every volume
through the tokenizer of its own sequence (T1 -> ``t1``, T1c -> ``t1ce``, T2 -> ``t2``, FLAIR ->
``flair``, via :func:`bmmae_key`): feature extraction calls :meth:`BMMAEEncoder.use_modality` with
each volume's manifest modality (``per_modality``). The public BrainDINO code instead asked for
``"T1"`` for every sequence (a tokenizer key the file lacks, so a random one was used); we do not
reproduce that.

Paper config: ``protocol="braindino"`` (the public code's input: its robust z-scored volume,
(z, x, y) axes, trilinear to 128^3) with ``modalities="auto"``. Layers for CKA:
``block0..block11``, the CLS token of each block after the final LayerNorm (the last equals ``cls``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.networks.blocks import PatchEmbeddingBlock, TransformerBlock
from monai.networks.layers import trunc_normal_
from torch import nn

from brainfm.errors import ConfigError
from brainfm.models.baselines.common import (
    AXES_CANONICAL,
    AXES_XYZ,
    MONAI_DEAD_KEYS,
    VolumeEncoder3D,
    check_module_dead,
    early_mid_late,
    nonzero_zscore,
    resize3d,
    patch_grid,
    seeded,
)
from brainfm.models.checkpoint import Layout
from brainfm.models.registry import register_encoder

__all__ = ["BMMAE_MODALITIES", "CANONICAL_TO_BMMAE", "bmmae_key", "MRITokenizer3D", "BMMAEViT", "BMMAEEncoder"]

BMMAE_MODALITIES = ("t1", "t1ce", "t2", "flair")
CANONICAL_TO_BMMAE = {"T1": "t1", "T1c": "t1ce", "T2": "t2", "FLAIR": "flair"}


def bmmae_key(modality: str) -> str:
    """Our canonical modality name (``T1``, ``T1c``, ``T2``, ``FLAIR``) -> BM-MAE's tokenizer key."""
    try:
        return CANONICAL_TO_BMMAE[modality]
    except KeyError:
        raise ConfigError(f"no BM-MAE tokenizer for modality {modality!r}; canonical names: "
                          f"{sorted(CANONICAL_TO_BMMAE)}") from None


def _check_modalities(requested: str | Sequence[str], available: Sequence[str]) -> tuple[str, ...]:
    mods = (requested,) if isinstance(requested, str) else tuple(requested)
    if not mods:
        raise ConfigError("BM-MAE needs at least one modality")
    for m in mods:
        if m not in available:
            hint = f" (BM-MAE keys are lowercase: did you mean {m.lower()!r}?)" if m.lower() in available else ""
            hint = hint or (f" (did you mean {CANONICAL_TO_BMMAE[m]!r}?)" if CANONICAL_TO_BMMAE.get(m) in available
                            else "")
            raise ConfigError(f"BM-MAE has no tokenizer {m!r}; tokenizers: {list(available)}{hint}")
    if len(set(mods)) != len(mods):
        raise ConfigError(f"BM-MAE modalities repeat: {list(mods)}")
    return mods


class MRITokenizer3D(nn.Module):
    """One modality's patch tokenizer: conv 16^3 patches + fixed sin-cos position embedding.

    The only submodule is ``patch_embedding`` (MONAI ``PatchEmbeddingBlock``), as in BM-MAE, whose
    conv weight is Xavier-initialised (this matters only for random-initialisation controls).
    """

    def __init__(self, img_size: Sequence[int], patch_size: int, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.patch_embedding = PatchEmbeddingBlock(in_channels=1, img_size=tuple(img_size), patch_size=patch_size,
                                                   hidden_size=hidden_size, num_heads=num_heads, proj_type="conv",
                                                   pos_embed_type="sincos", dropout_rate=0.0, spatial_dims=3)
        w = self.patch_embedding.patch_embeddings.weight.data
        nn.init.xavier_uniform_(w.view(w.size(0), -1))
        self.patch_embedding.position_embeddings.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch_embedding(x)


class BMMAEViT(nn.Module):
    """The BM-MAE encoder network (``ViTEncoder`` with a CLS token) with the released key names."""

    def __init__(self, *, tokenizers: Sequence[str] = BMMAE_MODALITIES, img_size: Sequence[int] = (128, 128, 128),
                 patch_size: int = 16, hidden_size: int = 768, num_layers: int = 12, num_heads: int = 12,
                 mlp_dim: int = 1536, qkv_bias: bool = True) -> None:
        super().__init__()
        self.modalities = tuple(tokenizers)
        self.tokenizers = nn.ModuleDict({m: MRITokenizer3D(img_size, patch_size, hidden_size, num_heads)
                                         for m in self.modalities})
        self.norm = nn.LayerNorm(hidden_size)
        self.blocks = nn.ModuleList([TransformerBlock(hidden_size=hidden_size, mlp_dim=mlp_dim, num_heads=num_heads,
                                                      dropout_rate=0.0, qkv_bias=qkv_bias, save_attn=False)
                                     for _ in range(num_layers)])
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        trunc_normal_(self.cls_token, std=0.02)

    def tokens(self, x: torch.Tensor, modalities: Sequence[str]) -> torch.Tensor:
        """(B, C, d, h, w) with channel i = ``modalities[i]`` -> (B, 1 + C * n_patches, D) input tokens."""
        parts = [self.tokenizers[m](x[:, i:i + 1]) for i, m in enumerate(modalities)]
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return torch.cat([cls, *parts], dim=1)


class BMMAEEncoder(VolumeEncoder3D):
    """Frozen BM-MAE: ``cls`` = final-normed CLS token (768-d)."""

    expected_layout = ("BM-MAE raw state dict {'cls_token', 'norm.*', 'blocks.N.*', "
              "'tokenizers.<t1|t1ce|t2|flair>.patch_embedding.*', 'decoder.*' (unused)}")
    expected_missing = MONAI_DEAD_KEYS
    expected_unexpected = MONAI_DEAD_KEYS + ("decoder.*",)

    def __init__(self, *, modalities: str | Sequence[str] = ("t1",), tokenizers: Sequence[str] = BMMAE_MODALITIES,
                 img_size: int | Sequence[int] = 128, patch_size: int = 16, hidden_size: int = 768,
                 num_layers: int = 12, num_heads: int = 12, mlp_dim: int = 1536, protocol: str = "native",
                 seed: int = 0) -> None:
        if protocol not in ("native", "braindino"):
            raise ConfigError(f"protocol must be 'native' or 'braindino', got {protocol!r}")
        perm = AXES_XYZ if protocol == "native" else AXES_CANONICAL
        super().__init__(input_perm=perm, grid_axes=perm)
        tokenizers = tuple(tokenizers)
        if not tokenizers or len(set(tokenizers)) != len(tokenizers):
            raise ConfigError(f"BM-MAE tokenizers must be distinct and non-empty, got {list(tokenizers)}")
        self.tokenizer_keys = tokenizers
        self.per_modality = modalities == "auto"
        self.modalities = (tokenizers[0],) if self.per_modality else _check_modalities(modalities, tokenizers)
        self.protocol = protocol
        self.img_size, self.patch_size = patch_grid(img_size, patch_size)
        try:
            with seeded(seed):
                self.net = BMMAEViT(tokenizers=tokenizers, img_size=self.img_size, patch_size=self.patch_size,
                                    hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
                                    mlp_dim=mlp_dim)
        except (ValueError, AssertionError) as exc:
            raise ConfigError(f"cannot build the BM-MAE ViT: {exc}") from exc
        check_module_dead(self.net)
        self.grid = tuple(s // self.patch_size for s in self.img_size)
        self.embed_dim = int(hidden_size)
        self.layer_names = [f"block{i}" for i in range(num_layers)]
        self.cka_layers = early_mid_late(len(self.layer_names))
        self.config = {"modalities": "auto" if self.per_modality else list(self.modalities),
                       "tokenizers": list(tokenizers),
                       "img_size": list(self.img_size), "patch_size": self.patch_size, "hidden_size": hidden_size,
                       "num_layers": num_layers, "num_heads": num_heads, "mlp_dim": mlp_dim, "protocol": protocol,
                       "input_axes": list(self.input_perm), "seed": int(seed)}

    def weight_module(self) -> nn.Module:
        return self.net

    def use_modality(self, modality: str) -> None:
        """``modalities="auto"``: encode the next volumes with the tokenizer of ``modality`` (canonical name)."""
        if not self.per_modality:
            raise ConfigError("use_modality needs an encoder built with modalities='auto'")
        self.modalities = _check_modalities(bmmae_key(modality), self.tokenizer_keys)

    def preprocess(self, volume: torch.Tensor) -> torch.Tensor:
        """native: (x, y, z), trilinear 128^3, non-zero z-score; braindino: (z, x, y), trilinear 128^3, as stored."""
        x = resize3d(self.to_network_axes(volume), self.img_size, "trilinear")
        return nonzero_zscore(x) if self.protocol == "native" else x

    def forward_features(self, x: torch.Tensor, layers: Sequence[int | str] = (),
                         return_patch: bool = False) -> dict[str, Any]:
        if x.shape[1] != len(self.modalities):
            raise ValueError(f"BM-MAE encoder for modalities {list(self.modalities)} expects {len(self.modalities)} "
                             f"channel(s), got {x.shape[1]}")
        net = self.net
        h = net.tokens(x, self.modalities)
        wanted = {self.layer_index(layer) for layer in layers}
        hidden: dict[int, torch.Tensor] = {}
        for i, blk in enumerate(net.blocks):
            h = blk(h)
            if i in wanted:
                hidden[i] = h
        final = net.norm(h)
        out: dict[str, Any] = {"cls": final[:, 0]}
        if layers:
            out["layers"] = [net.norm(hidden[self.layer_index(layer)][:, 0]) for layer in layers]
        if return_patch:
            b, n_mod = final.shape[0], len(self.modalities)
            patch = final[:, 1:].reshape(b, n_mod, *self.grid, final.shape[-1]).mean(dim=1)  # modality average
            out["patch"] = self.grid_to_canonical(patch)
        return out

    def select_state(self, state: dict[str, torch.Tensor], path: Path, layout: Layout) -> dict[str, torch.Tensor]:
        layout.recognise("bmmae_raw", "BM-MAE raw")  # decoder.* are declared unused (expected_unexpected)
        return state


# ============================================================================ registry
def _build(seed: int, **kwargs: Any) -> BMMAEEncoder:
    return BMMAEEncoder.build("BM-MAE", seed=seed, **kwargs)


@register_encoder("bmmae")
def bmmae(weights: str | None = None, *, seed: int = 0, **kwargs: Any) -> BMMAEEncoder:
    """BM-MAE from ``bmmae.pth`` / ``bmmae_tcga.pth``; ``modalities`` picks the tokenizer(s) (lowercase).

    kwargs: ``modalities`` (default ``("t1",)``), ``tokenizers`` held by the file (default all four),
    ``protocol`` ("native" | "braindino"), and sizes (``img_size``, ``patch_size``, ``hidden_size``,
    ``num_layers``, ``num_heads``, ``mlp_dim``).
    """
    if not weights:
        raise ConfigError("encoder 'bmmae' needs a weights file (use 'bmmae_scratch' for a randomly initialised "
                          "control)")
    enc = _build(seed, **kwargs)
    enc.load_weights(weights)
    return enc


@register_encoder("bmmae_scratch")
def bmmae_scratch(weights: str | None = None, *, seed: int = 0, **kwargs: Any) -> BMMAEEncoder:
    """Random-initialisation control of the BM-MAE encoder (initialisation drawn from ``seed``)."""
    if weights:
        raise ConfigError("encoder 'bmmae_scratch' takes no weights (it is the random-initialisation control)")
    return _build(seed, **kwargs)
