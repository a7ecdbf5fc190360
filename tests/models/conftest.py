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
