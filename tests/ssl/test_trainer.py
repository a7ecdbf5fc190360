"""DINO trainer on a real slice store: resume equality, logs, stage 2, NaN guard, bad inputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from brainfm.errors import CheckpointError, InputError
from brainfm.ssl.checkpointing import list_checkpoints
from brainfm.ssl.config import DinoConfig
from brainfm.ssl.data import SliceSource
from brainfm.ssl.dino import DinoMethod, run_dino_stage, train_dino
from brainfm.ssl.distributed import init_distributed
from brainfm.ssl.engine import NonFiniteLossError

TINY = {
    "arch_overrides": {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8},
    "global_size": 32, "local_size": 16, "n_local": 2,
    "n_prototypes": 32, "head_hidden": 32, "head_bottleneck": 16,
    "iters": 6, "warmup_iters": 2, "batch_size": 4, "lr": 1e-3, "lr_scaling": "none",
    "teacher_temp_warmup_iters": 3, "freeze_last_layer_iters": 1, "num_workers": 0,
    "checkpoint_every": 2, "log_every": 1, "drop_path_rate": 0.1,
}


def _states_equal(a: dict, b: dict) -> bool:
    return all(torch.equal(a[p][k], b[p][k]) for p in a for k in a[p]) and a.keys() == b.keys()


def test_resume_in_process_is_bit_identical(slice_store, tmp_path):
    env = init_distributed("cpu")
    source = SliceSource([slice_store])
    full, res_full = run_dino_stage(DinoConfig.from_dict(TINY), source, tmp_path / "a", env)
    part, res_part = run_dino_stage(DinoConfig.from_dict({**TINY, "max_iters_this_run": 3}), source, tmp_path / "b",
                                    env)
    assert res_part.final_iteration == 3 and not res_part.finished
    assert [i for i, _ in list_checkpoints(tmp_path / "b" / "ckpt")] == [2, 3]
    resumed, res = run_dino_stage(DinoConfig.from_dict(TINY), source, tmp_path / "b", env)
    assert res.start_iteration == 3 and res.finished and res.samples_seen == 6 * 4
    assert _states_equal(full.state_dict(), resumed.state_dict())
    # the log has one row per iteration, no duplicates after the resume, and every term
    with open(tmp_path / "b" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["iteration"]) for r in rows] == list(range(6))
    for col in ("loss", "dino", "ibot", "koleo", "lr", "momentum", "teacher_temp", "weight_decay", "img_per_s"):
        assert col in rows[0] and np.isfinite(float(rows[-1][col]))
    assert float(rows[0]["lr"]) == 0.0 and float(rows[2]["lr"]) == pytest.approx(1e-3)
    assert float(rows[0]["teacher_temp"]) == pytest.approx(0.04)
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "b" / "tb").iterdir())


def test_training_moves_student_and_teacher(slice_store, tmp_path):
    env = init_distributed("cpu")
    cfg = DinoConfig.from_dict({**TINY, "iters": 3, "momentum": 0.5})
    init = {k: v.clone() for k, v in DinoMethod(cfg, env).student.state_dict().items()}
    trained, res = run_dino_stage(cfg, SliceSource([slice_store]), tmp_path / "w", env)
    assert res.finished
    s, t = trained.student.state_dict(), trained.teacher.state_dict()
    key = "backbone.vit.blocks.0.attn.qkv.weight"
    assert not torch.equal(s[key], init[key]) and not torch.equal(t[key], init[key])
    assert not torch.equal(s[key], t[key])


def test_ema_update_formula(slice_store):
    env = init_distributed("cpu")
    method = DinoMethod(DinoConfig.from_dict(TINY), env)
    with torch.no_grad():
        for p in method.student.parameters():
            p.add_(1.0)
    before_t = [p.clone() for p in method.teacher.parameters()]
    s = [p.clone() for p in method.student.parameters()]
    method.after_step(0, {"momentum": 0.9})
    for t0, s0, t1 in zip(before_t, s, method.teacher.parameters()):
        torch.testing.assert_close(t1, 0.9 * t0 + 0.1 * s0)


def test_stage2_continues_from_stage1(slice_store, tmp_path):
    from brainfm.config import PretrainSpec
    from brainfm.ssl.entry import pretrain

    spec = {"name": "run", "recipe": "dino", "datasets": ["synth"], "params": {**TINY, "iters": 2, "checkpoint_every": 5},
            "stages": [{}, {"stage": "2", "upsample_to": 64, "crop_pairs": [[48, 16], [64, 24]],
                            "crop_pair_ratios": [0.5, 0.5], "batch_size": 2, "iters": 2, "warmup_iters": 0}]}
    out = tmp_path / "pretrain" / "run" / "weights.pth"
    summary = tmp_path / "pretrain" / "run" / "summary.json"
    info = pretrain(PretrainSpec.from_dict(spec), [slice_store], out, summary, tmp_path / "work")
    assert info["finished"] and [s["stage"] for s in info["stages"]] == ["1", "2"]
    s2 = info["stages"][1]["config"]
    assert s2["upsample_to"] == 64 and s2["batch_size"] == 2 and s2["n_prototypes"] == 32
    saved = json.loads(summary.read_text())
    assert saved["weights_sha256"] and Path(saved["timm_weights"]).exists()
    # stage 2 started from the final stage-1 state
    env = init_distributed("cpu")
    cfg2 = DinoConfig.from_dict({**TINY, **spec["stages"][1]})
    m2 = DinoMethod(cfg2, env)
    stage1_final = sorted((tmp_path / "work" / "stage1" / "ckpt").glob("iter-*.pt"))[-1]
    m2.load_training_state(stage1_final)
    st1 = torch.load(stage1_final, weights_only=True)["model"]
    assert _states_equal(st1, m2.state_dict())
    export = torch.load(out, weights_only=True)
    assert any(k.startswith("backbone.") for k in export["teacher"])
    assert any(k.startswith("dino_head.") for k in export["teacher"])


def test_nonfinite_guard_stops_with_clear_message(slice_store, tmp_path):
    # a diverging learning rate: the first step blows the weights up, every later loss is NaN
    env = init_distributed("cpu")
    for centering in ("sinkhorn_knopp", "softmax"):
        cfg = DinoConfig.from_dict({**TINY, "iters": 10, "max_nonfinite": 3, "lr": 1e30, "warmup_iters": 0,
                                    "centering": centering})
        with pytest.raises(NonFiniteLossError, match="non-finite for 3 consecutive iterations.*lower lr"):
            run_dino_stage(cfg, SliceSource([slice_store]), tmp_path / centering, env)
        with open(tmp_path / centering / "metrics.csv") as fh:
            rows = list(csv.DictReader(fh))
        assert np.isfinite(float(rows[0]["loss"])) and [r["loss"] for r in rows[1:]] == ["nan"] * 3


def test_nonfinite_gradients_skip_the_step_when_the_recipe_does_not_clip(slice_store, tmp_path, monkeypatch):
    """The guard reads the gradients without clipping too (SimCLR's default): one overflowing step is
    skipped, the weights stay finite, training goes on (bf16 once overflowed through a BatchNorm)."""
    env = init_distributed("cpu")
    cfg = DinoConfig.from_dict({**TINY, "iters": 4, "clip_grad": None, "max_nonfinite": 2})
    original = DinoMethod.forward_loss
    calls = {"n": 0}

    def forward_loss(self, batch, it, sched):
        loss, metrics = original(self, batch, it, sched)
        calls["n"] += 1
        if calls["n"] == 2:  # this iteration's gradients overflow, once
            param = next(p for p in self.student.parameters() if p.requires_grad)
            handle = []

            def overflow(grad):
                handle[0].remove()
                return torch.full_like(grad, float("inf"))

            handle.append(param.register_hook(overflow))
        return loss, metrics

    monkeypatch.setattr(DinoMethod, "forward_loss", forward_loss)
    method, res = run_dino_stage(cfg, SliceSource([slice_store]), tmp_path / "w", env)
    assert res.finished and calls["n"] == 4
    assert all(torch.isfinite(v).all() for v in method.student.state_dict().values() if v.is_floating_point())
    with open(tmp_path / "w" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [np.isfinite(float(r["loss"])) for r in rows] == [True] * 4


def test_resume_from_other_architecture_is_refused(slice_store, tmp_path):
    env = init_distributed("cpu")
    source = SliceSource([slice_store])
    run_dino_stage(DinoConfig.from_dict({**TINY, "iters": 2}), source, tmp_path / "w", env)
    other = {**TINY, "iters": 4, "arch_overrides": {**TINY["arch_overrides"], "embed_dim": 48}}
    with pytest.raises(CheckpointError, match="another architecture.*embed_dim"):
        run_dino_stage(DinoConfig.from_dict(other), source, tmp_path / "w", env)


def test_corrupt_checkpoint_is_reported(slice_store, tmp_path):
    env = init_distributed("cpu")
    source = SliceSource([slice_store])
    run_dino_stage(DinoConfig.from_dict({**TINY, "iters": 2}), source, tmp_path / "w", env)
    ckpt = list_checkpoints(tmp_path / "w" / "ckpt")[-1][1]
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 3])  # truncated by a crash outside our atomic writes
    with pytest.raises(CheckpointError, match=r"iter-00000002\.pt.*cannot be read"):
        run_dino_stage(DinoConfig.from_dict({**TINY, "iters": 4}), source, tmp_path / "w", env)
    ckpt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot be read"):
        run_dino_stage(DinoConfig.from_dict({**TINY, "iters": 4}), source, tmp_path / "w", env)


def test_empty_and_all_blank_stores_are_refused(tmp_path, make_slice_store):
    all_blank = make_slice_store(tmp_path / "blank", n=5, n_blank=5)
    with pytest.raises(InputError, match="no non-blank slices"):
        SliceSource([all_blank])
    with pytest.raises(InputError, match="does not exist"):
        SliceSource([tmp_path / "missing"])
    (tmp_path / "nostore").mkdir()
    with pytest.raises(InputError, match="no slice store"):
        SliceSource([tmp_path / "nostore"])
    with pytest.raises(InputError):
        train_dino(TINY, [all_blank], tmp_path / "w.pth", tmp_path / "work")


def test_blank_slices_are_never_sampled(slice_store):
    from brainfm.preprocess.store import ShardedStore

    source = SliceSource([slice_store])
    blank = ShardedStore(slice_store).index["blank"].to_numpy()
    assert len(source) == int((~blank).sum()) and not blank[source.item].any()
    for j in range(len(source)):
        assert source.read(j).std() > 0
