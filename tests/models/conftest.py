"""Tiny timm DINOv3 ViTs (embed 64, depth 2, 32 px) so every model test runs in seconds on a CPU."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

TINY = dict(arch="vit_small_patch16_dinov3", embed_dim=64, depth=2, num_heads=2, img_size=32)


@pytest.fixture
def tiny() -> dict:
    return dict(TINY)


@pytest.fixture
def tiny_qkvb() -> dict:
    return dict(TINY, arch="vit_small_patch16_dinov3_qkvb")


def _perturb(module: torch.nn.Module, seed: int = 1, scale: float = 0.2) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return module


@pytest.fixture
def perturb() -> Callable[..., torch.nn.Module]:
    """Add seeded noise to every parameter so no weight (layer scale 1e-5, zero biases, tokens) is trivial."""
    return _perturb


@pytest.fixture
def images() -> Callable[..., torch.Tensor]:
    def make(n: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
        return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))

    return make


def _native_by_hand(vit: torch.nn.Module, k_bias_seed: int | None = None, mask: bool = True) -> dict:
    """timm Eva state dict -> Meta DINOv3 names, written independently of brainfm's exporter.

    ``k_bias_seed`` fills the key part of ``qkv.bias`` with noise; ``mask`` adds DINOv3's
    ``bias_mask`` (1 for q and v, 0 for k: ``mask_k_bias=True``).
    """
    sd = vit.state_dict()
    out = {}
    for k, v in sd.items():
        if k.endswith("attn.v_bias"):
            continue
        if k.endswith("attn.q_bias"):
            v_b = sd[k.replace("q_bias", "v_bias")]
            k_b = torch.zeros_like(v) if k_bias_seed is None else torch.randn(
                v.shape, generator=torch.Generator().manual_seed(k_bias_seed))
            out[k.replace("q_bias", "qkv.bias")] = torch.cat([v, k_b, v_b])
            if mask:
                out[k.replace("q_bias", "qkv.bias_mask")] = torch.cat(
                    [torch.ones_like(v), torch.zeros_like(v), torch.ones_like(v)])
            continue
        name = {"reg_token": "storage_tokens"}.get(k, k)
        name = name.replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma")
        out[name] = v.clone()
    head_dim = vit.embed_dim // vit.blocks[0].attn.num_heads
    # DINOv3 RopePositionEmbedding: periods = base ** (2 * arange(D/4) / (D/2)), base 100
    out["rope_embed.periods"] = 100.0 ** (2 * torch.arange(head_dim // 4, dtype=torch.float32) / (head_dim // 2))
    out["mask_token"] = torch.randn(1, vit.embed_dim)
    return out


@pytest.fixture
def native_by_hand() -> Callable[..., dict]:
    """A timm DINOv3 ViT's weights in Meta's native names, written independently of brainfm's exporter."""
    return _native_by_hand
