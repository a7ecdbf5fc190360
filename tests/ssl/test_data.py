"""Streaming data: positions, process/worker independence, resumability, store resolution."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from brainfm.errors import InputError
from brainfm.ssl.augment import MultiCrop
from brainfm.ssl.data import (
    DinoCropDataset,
    PositionBatchSampler,
    SliceSource,
    collate_dino,
    make_loader,
    resolve_store,
)


def _sampler(rank=0, world=1, batch=4, start_it=0, start_pos=None, n=6, ratios=(1.0,)):
    start_pos = start_it * batch * world if start_pos is None else start_pos
    return PositionBatchSampler(start_pos, start_it, n, batch * world, batch, rank, seed=3, pair_ratios=ratios)


def test_two_processes_cover_the_single_process_batches():
    single = list(_sampler(batch=6, n=5))
    r0 = list(_sampler(rank=0, world=2, batch=3, n=5))
    r1 = list(_sampler(rank=1, world=2, batch=3, n=5))
    for s, a, b in zip(single, r0, r1):
        assert s == a + b


def test_resumed_sampler_continues_the_stream():
    full = list(_sampler(n=10, ratios=(0.3, 0.7)))
    tail = list(_sampler(start_it=4, n=6, ratios=(0.3, 0.7)))
    assert full[4:] == tail


def test_crop_pairs_follow_their_ratios_and_agree_across_processes():
    s0 = _sampler(rank=0, world=2, n=4000, batch=1, ratios=(0.3, 0.3, 0.3, 0.05, 0.05))
    s1 = _sampler(rank=1, world=2, n=4000, batch=1, ratios=(0.3, 0.3, 0.3, 0.05, 0.05))
    pairs0 = [b[0][1] for b in s0]
    assert pairs0 == [b[0][1] for b in s1]
    freq = np.bincount(pairs0, minlength=5) / len(pairs0)
    np.testing.assert_allclose(freq, [0.3, 0.3, 0.3, 0.05, 0.05], atol=0.03)


def _dataset(store):
    return DinoCropDataset(SliceSource([store]), MultiCrop(n_local=2), [(16, 8)], patch_size=8, seed=11,
                           mask_prob=0.5, mask_ratio=(0.1, 0.5), mask_min_patches=1)


def test_batches_do_not_depend_on_worker_count(slice_store):
    ds = _dataset(slice_store)
    a = list(make_loader(ds, _sampler(n=3), collate_dino, num_workers=0))
    b = list(make_loader(ds, _sampler(n=3), collate_dino, num_workers=2))
    for x, y in zip(a, b):
        for k in x:
            assert torch.equal(x[k], y[k])
    x = a[0]
    assert x["global"].shape == (8, 1, 16, 16) and x["local"].shape == (8, 1, 8, 8) and x["masks"].shape == (8, 2, 2)
    # crop-major: rows 0..3 are crop 0 of samples 0..3, rows 4..7 crop 1
    s1 = ds[(1, 0)]
    assert torch.equal(x["global"][1], s1["global"][0]) and torch.equal(x["global"][5], s1["global"][1])
    assert torch.equal(x["local"][4 + 1], s1["local"][1])


def test_every_non_blank_slice_once_per_epoch(slice_store):
    ds = _dataset(slice_store)
    n = len(ds.source)
    items = [ds.order(p) for p in range(n)]
    assert sorted(items) == list(range(n))
    assert [ds.order(p) for p in range(n, 2 * n)] != items  # a new permutation per epoch


def test_resolve_store_finds_the_kind_in_subdirectories(slice_store, volume_store, tmp_path):
    root = tmp_path / "preprocessed"
    root.mkdir()
    (root / "pretrain").symlink_to(slice_store, target_is_directory=True)
    (root / "downstream").symlink_to(volume_store, target_is_directory=True)
    (root / "report.json").write_text(json.dumps({}))
    assert resolve_store(root, "slice") == root / "pretrain"
    assert resolve_store(root, "volume") == root / "downstream"
    assert resolve_store(slice_store, "slice") == slice_store
    with pytest.raises(InputError, match="no volume store"):
        resolve_store(slice_store, "volume")
