"""Full fine-tuning (Supplementary Table 6): same protocol as the frozen heads, encoder trained too."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from brainfm.errors import ConfigError, LeakageError
from brainfm.tasks.finetune import finetune_grid, volume_rows
from brainfm.config import FinetuneSpec, TaskSpec

TINY = dict(arch="vit_small_patch16_dinov3", embed_dim=32, depth=2, num_heads=2, img_size=16, patch_size=8,
            arch_overrides={"init_values": 1.0})
DEPTH, SIZE, N = 4, 16, 24


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Volumes whose central ball is bright for class 1 and dim for class 0 (an easy, real image signal)."""
    from brainfm.preprocess.store import ShardedStore, ShardWriter

    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("ft") / "store"
    zz, yy, xx = np.mgrid[:DEPTH, :SIZE, :SIZE].astype(np.float32)
    rows = []
    with ShardWriter(path, (DEPTH, SIZE, SIZE), "volume", {"test": "finetune"}, shard_size=8) as w:
        for i in range(N):
            label = i % 2
            ball = ((yy - 8) ** 2 + (xx - 8) ** 2) < rng.uniform(20, 30)
            vol = ball * (2.0 if label else 0.5) + 0.2 * rng.standard_normal(ball.shape)
            w.add({"dataset": "toy", "subject": f"s{i:02d}", "session": "0", "modality": "T1"}, vol.astype(np.float32))
            rows.append(dict(dataset="toy", subject=f"s{i:02d}", session="0", modality="T1", path="x", site="a",
                             split="test" if i % 6 in (0, 1) else "train", bright=label, age=float(20 + i)))
    return ShardedStore(path), pd.DataFrame(rows)


def _encoder():
    from brainfm.models import create_encoder

    return create_encoder("vit_random", **TINY)


HEAD = {"lr": 3e-3, "batch_size": 4}


def _spec(head=HEAD, **kw):
    d = {"dataset": "toy", "kind": "classification", "target": "bright", "classes": [0, 1], **kw}
    return TaskSpec.from_config("bright", d, {"ratios": [0.5, 1.0], "seeds": [0], "head": head})


CFG = FinetuneSpec.from_dict(dict(ratios=(0.5, 1.0), seeds=(0,), batch_size=4, max_epochs=6, patience=3, encoder_lr=1e-4))


def test_samples_and_folds_match_the_frozen_protocol(cohort):
    from brainfm.tasks.data import assemble
    from brainfm.tasks.runs import plan_folds

    store, manifest = cohort
    data, rows = volume_rows(_spec(), store.index, manifest)
    assert len(rows) == N and all(len(r) == 1 for r in rows)
    keys = manifest[["subject", "session"]]
    frozen = assemble(_spec(), keys, np.zeros((N, 3), np.float32), manifest)
    assert [f.test for f in plan_folds(data)] == [f.test for f in plan_folds(frozen)]
    # each sample's store row really holds that subject
    idx = store.index.reset_index(drop=True)
    assert [idx.loc[r[0], "subject"] for r in rows] == data.table["subject"].tolist()


def test_finetuning_learns_trains_the_encoder_and_is_deterministic(cohort):
    store, manifest = cohort
    made = []

    def make():
        made.append(_encoder())
        return made[-1]

    a = finetune_grid(_spec(), store, manifest, make, backbone="vit", cfg=CFG, progress=False)
    b = finetune_grid(_spec(), store, manifest, _encoder, backbone="vit", cfg=CFG, progress=False)
    assert {k.ratio for k in a} == {0.5, 1.0}
    full = next(e for k, e in a.items() if k.ratio == 1.0)
    assert full["metrics"]["auc"] >= 0.8, full["metrics"]
    assert set(full["predictions"]["subject"]) == {f"s{i:02d}" for i in range(N) if i % 6 in (0, 1)}  # the fixed test set
    assert full["info"]["mode"] == "finetune" and full["folds"][0]["epochs_run"] >= 1
    for key in a:
        pd.testing.assert_frame_equal(a[key]["predictions"], b[key]["predictions"])
    # the encoder itself moved (it is not a frozen-feature head)
    fresh = _encoder().state_dict()
    moved = [k for k, v in made[-1].state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, fresh[k])]
    assert moved, "fine-tuning left every encoder weight unchanged"


def test_bad_settings_and_leakage_are_errors(cohort):
    store, manifest = cohort
    with pytest.raises(ConfigError, match="unknown key"):
        FinetuneSpec.from_dict({"epochs": 3})
    surv = TaskSpec.from_config("cox", {"dataset": "toy", "kind": "survival", "target": "age"}, {})
    with pytest.raises(ConfigError, match="classification and regression"):
        finetune_grid(surv, store, manifest, _encoder, backbone="vit", cfg=CFG)
    with pytest.raises(LeakageError):
        finetune_grid(_spec(), store, manifest, _encoder, backbone="vit", cfg=CFG, pretrain_subjects=["s06"],
                      progress=False)


def test_dropout_head_trains_and_stays_deterministic(cohort):
    """The IDH-style head (dropout after the GELU) works end to end and is seeded."""
    store, manifest = cohort
    cfg = FinetuneSpec.from_dict(dict(ratios=(1.0,), seeds=(0,), batch_size=8, max_epochs=2, patience=2, train_slices=2))
    spec = _spec(head={**HEAD, "dropout": 0.3})
    a = finetune_grid(spec, store, manifest, _encoder, backbone="vit", cfg=cfg, progress=False)
    b = finetune_grid(spec, store, manifest, _encoder, backbone="vit", cfg=cfg, progress=False)
    (key,) = a
    pd.testing.assert_frame_equal(a[key]["predictions"], b[key]["predictions"])
    assert a[key]["info"]["head"]["dropout"] == 0.3


def test_checkpointed_slice_chunks_use_every_slice_with_the_same_gradients():
    """Supp. Table 6 like for like: all slices of a volume, in checkpointed chunks, equal one full pass."""
    from brainfm.tasks.finetune import _features

    torch.manual_seed(0)
    vols = [[torch.randn(DEPTH, SIZE, SIZE)], [torch.randn(DEPTH, SIZE, SIZE), torch.randn(DEPTH, SIZE, SIZE)]]
    grads = []
    for chunk in (None, 3):
        enc = _encoder()
        for p in enc.parameters():
            p.requires_grad_(True)
        out = _features(enc, vols, torch.device("cpu"), "fp32", None, None, slice_chunk=chunk)
        out.square().sum().backward()
        grads.append((out.detach(), [p.grad.clone() for p in enc.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    assert len(grads[0][1]) == len(grads[1][1]) > 0
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_paper_finetuning_keeps_every_slice_and_the_frozen_target_scale(cohort):
    from pathlib import Path

    from brainfm.config import load_config
    from brainfm.tasks.runner import run_grid

    paper = load_config(Path(__file__).resolve().parents[2] / "config" / "paper.yaml").finetune
    assert paper.train_slices is None and paper.slice_chunk
    store, manifest = cohort
    spec = TaskSpec.from_config("age", {"dataset": "toy", "kind": "regression", "target": "age"},
                                {"ratios": [0.5, 1.0], "seeds": [0],
                                 "head": {**HEAD, "max_epochs": 3, "standardize_target": True}})
    cfg = FinetuneSpec.from_dict(dict(ratios=(0.5,), seeds=(0,), batch_size=8, max_epochs=1, patience=1))
    tuned = finetune_grid(spec, store, manifest, _encoder, backbone="vit", cfg=cfg, progress=False)
    data, _ = volume_rows(spec, store.index, manifest)
    frozen = run_grid(data, backbone="vit", ratios=spec.ratios, seeds=spec.seeds)
    (scale,) = {tuple(e["info"]["target_scale"].values()) for e in tuned.values()}
    assert scale[1] is not None
    assert all(tuple(e["info"]["target_scale"].values()) == scale for e in frozen.values())
