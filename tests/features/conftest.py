"""A small real volume store (brainfm.preprocess.store) and tiny ViT encoders for extraction tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

TINY = dict(arch="vit_small_patch16_dinov3", embed_dim=64, depth=2, num_heads=2, img_size=32)
DEPTH, SIZE = 7, 40  # slices per volume (odd, so batches of 3 straddle volumes), in-plane size (resized to 32)


def _volume(rng: np.random.Generator) -> np.ndarray:
    zz, yy, xx = np.mgrid[:DEPTH, :SIZE, :SIZE].astype(np.float32)
    c = rng.uniform(0.4, 0.6, 3) * np.array([DEPTH, SIZE, SIZE])
    r = rng.uniform(0.3, 0.45) * SIZE
    ball = ((zz - c[0]) ** 2 * (SIZE / DEPTH) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) < r * r
    vol = ball * rng.uniform(0.5, 2.0) + 0.3 * rng.standard_normal(ball.shape)
    return vol.astype(np.float32)


def write_volume_store(path: Path, subjects=("s0", "s1", "s2"), modalities=("T1", "FLAIR"), seed: int = 0) -> Path:
    from brainfm.preprocess.store import ShardWriter

    rng = np.random.default_rng(seed)
    with ShardWriter(path, (DEPTH, SIZE, SIZE), "volume", {"test": "features"}, shard_size=4) as w:
        for s in subjects:
            for m in modalities:
                w.add({"dataset": "synth", "subject": s, "session": "0", "modality": m}, _volume(rng))
    return path


@pytest.fixture(scope="module")
def volume_store(tmp_path_factory):
    from brainfm.preprocess.store import ShardedStore

    return ShardedStore(write_volume_store(tmp_path_factory.mktemp("store") / "vol"))


@pytest.fixture(scope="module")
def encoder():
    import torch

    from brainfm.models import create_encoder

    enc = create_encoder("vit_random", **TINY)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # make layer scales / tokens non-trivial so features vary with the input
        for p in enc.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    return enc


@pytest.fixture
def tiny_kwargs() -> dict:
    return dict(TINY)
