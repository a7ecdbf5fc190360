"""Exports load into the encoder registry and give the training teacher's features exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainfm.errors import CheckpointError
from brainfm.models import create_encoder
from brainfm.ssl.config import DinoConfig
from brainfm.ssl.data import SliceSource
from brainfm.ssl.dino import run_dino_stage
from brainfm.ssl.distributed import init_distributed
from brainfm.ssl.export import encoder_args, export_teacher, timm_weights_path

TINY = {
    "arch_overrides": {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8},
    "global_size": 32, "local_size": 16, "n_local": 2, "n_prototypes": 32, "head_hidden": 32, "head_bottleneck": 16,
    "iters": 3, "warmup_iters": 1, "batch_size": 4, "lr": 1e-3, "lr_scaling": "none", "teacher_temp_warmup_iters": 1,
    "freeze_last_layer_iters": 0, "num_workers": 0, "checkpoint_every": 10, "log_every": 10,
}


@pytest.fixture(scope="module")
def trained(slice_store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    cfg = DinoConfig.from_dict(TINY)
    method, res = run_dino_stage(cfg, SliceSource([slice_store]), tmp / "work", init_distributed("cpu"))
    assert res.finished
    paths = export_teacher(method, tmp / "weights.pth", cfg, res)
    return method, cfg, paths


def test_registry_features_equal_training_teacher(trained, volume_store):
    from brainfm.preprocess.store import ShardedStore

    method, cfg, paths = trained
    args = encoder_args(cfg)
    assert args == {"arch": cfg.arch, "arch_overrides": cfg.arch_overrides, "img_size": 32}
    vol = torch.from_numpy(ShardedStore(volume_store)[0])  # (D, H, W) downstream volume
    teacher = method.teacher.backbone.eval()
    for weights in (paths["weights"], paths["timm_weights"]):
        enc = create_encoder("braindino", weights=weights, **args)
        x = enc.preprocess(vol)
        assert x.shape == (vol.shape[0], 3, 32, 32)
        with torch.no_grad():
            got = enc.forward_features(x, return_patch=True)
            ref = teacher(x)
        torch.testing.assert_close(got["cls"], ref["cls"], rtol=0, atol=0)
        torch.testing.assert_close(got["patch"].flatten(1, 2), ref["patch"], rtol=0, atol=0)


def test_dinov3_file_layout(trained):
    method, cfg, paths = trained
    obj = torch.load(paths["weights"], weights_only=True)
    assert set(obj) == {"teacher"}
    keys = obj["teacher"].keys()
    assert "backbone.storage_tokens" in keys and "backbone.blocks.0.ls1.gamma" in keys  # native DINOv3 names
    assert "backbone.reg_token" not in keys
    assert {k.split(".")[0] for k in keys} == {"backbone", "dino_head", "ibot_head"}
    torch.testing.assert_close(obj["teacher"]["dino_head.last_layer.weight"],
                               method.teacher.dino_head.last_layer.weight.detach())
    assert timm_weights_path(paths["weights"]).exists()


def test_export_into_other_architecture_is_refused(trained):
    _, cfg, paths = trained
    with pytest.raises(CheckpointError, match="weights.pth"):
        create_encoder("braindino", weights=paths["weights"], arch=cfg.arch,
                       arch_overrides={**cfg.arch_overrides, "embed_dim": 48}, img_size=32)


def test_random_init_control_is_the_student_start(trained):
    """The registry's ``vit_random`` with the run's seed is exactly the student before training."""
    from brainfm.ssl.dino import DinoMethod

    _, cfg, _ = trained
    start = DinoMethod(cfg, init_distributed("cpu")).student.backbone.vit.state_dict()
    rnd = create_encoder("vit_random", seed=cfg.seed, **encoder_args(cfg)).model.state_dict()
    assert start.keys() == rnd.keys() and all(torch.equal(start[k], rnd[k]) for k in start)
    assert np.isfinite(next(iter(rnd.values())).numpy()).all()
