"""BrainIAC SimCLR and BrainFound recipes on real volume stores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainfm.errors import CheckpointError, InputError
from brainfm.models.checkpoint import load_encoder_weights
from brainfm.ssl.backbone import build_timm_vit
from brainfm.ssl.config import BrainFoundConfig, SimCLRConfig
from brainfm.ssl.data import StackedSliceSource, VolumeSource
from brainfm.ssl.distributed import init_distributed

SIMCLR_TINY = {"arch": "resnet10", "input_size": 16, "batch_size": 3, "iters": 2, "num_workers": 0,
               "checkpoint_every": 1, "log_every": 1, "proj_hidden": 32, "proj_dim": 8}
BF_TINY = {"arch": "vit_small_patch14_dinov2", "arch_overrides": {"embed_dim": 32, "depth": 2, "num_heads": 2,
                                                                   "img_size": 28},
           "global_size": 28, "local_size": 14, "n_local": 2, "n_prototypes": 32, "head_hidden": 32,
           "head_bottleneck": 16, "iters": 2, "warmup_iters": 1, "batch_size": 4, "num_workers": 0,
           "teacher_temp_warmup_iters": 1, "freeze_last_layer_iters": 0, "lr_scaling": "none"}


def test_simclr_trains_exports_a_monai_resnet_state_dict(volume_store, tmp_path):
    from brainfm.ssl.simclr import build_resnet3d, train_simclr

    out = train_simclr(SIMCLR_TINY, [volume_store], tmp_path / "simclr.pth", tmp_path / "work")
    obj = torch.load(out, weights_only=True)
    net = build_resnet3d("resnet10", 2)
    net.load_state_dict(obj["state_dict"], strict=True)
    net.eval()
    assert not any(k.startswith("fc") for k in obj["state_dict"])
    assert (obj["arch"], obj["conv1_stride"]) == ("resnet10", 2)
    x = torch.randn(2, 1, 16, 16, 16)
    assert net.eval()(x).shape == (2, 512)
    # the registry's brainiac_simclr encoder loads the export and gives the backbone's features on the
    # un-augmented view (canonical axes, trilinear resize, intensities as stored)
    from brainfm.models import create_encoder
    from brainfm.preprocess.store import ShardedStore
    from brainfm.ssl.augment import VolumeAugment

    enc = create_encoder("brainiac_simclr", weights=str(out), arch="resnet10", conv1_stride=2, img_size=16)
    vol = torch.from_numpy(ShardedStore(volume_store)[0])
    x = enc.preprocess(vol)
    view = VolumeAugment(16, crop_scale=(1, 1), flip_prob=0, affine_prob=0, blur_prob=0, noise_prob=0)(
        vol, np.random.default_rng(0))[None]
    torch.testing.assert_close(x, view, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(enc.forward_features(x)["cls"], net(x), rtol=1e-5, atol=1e-6)
    rows = (tmp_path / "work" / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",")[:3] == ["iteration", "loss", "nt_xent"] and len(rows) == 3


def test_simclr_resnet50_has_2048_features():
    from brainfm.ssl.simclr import build_resnet3d

    net = build_resnet3d("resnet50", 2).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 32, 32, 32)).shape == (1, 2048)
    assert net.conv1.stride == (2, 2, 2) and net.conv1.kernel_size == (7, 7, 7)


def test_simclr_epochs_to_iterations():
    from brainfm.ssl.simclr import resolve_iters

    cfg = SimCLRConfig.from_dict({"epochs": 2})
    assert resolve_iters(cfg, n_volumes=100, world_size=1) == 7  # ceil(2 * 100 / 32)
    assert resolve_iters(SimCLRConfig.from_dict({"iters": 5}), 100, 1) == 5


def test_volume_source_empty_store(tmp_path):
    from brainfm.preprocess.store import ShardWriter

    with ShardWriter(tmp_path / "empty", (4, 8, 8), "volume", {}) as w:
        pass
    with pytest.raises(InputError, match="empty"):
        VolumeSource([tmp_path / "empty"])


def test_stacked_slices_adjacent_and_modalities(volume_store):
    from brainfm.preprocess.store import ShardedStore

    store = ShardedStore(volume_store)
    adj = StackedSliceSource([volume_store], stack="adjacent", step=1)
    depth = store.meta["item_shape"][0]
    assert len(adj) == len(store) * (depth - 2)
    x = adj.read(0)  # volume 0, centre slice k = 1
    np.testing.assert_array_equal(x, np.asarray(store[0], dtype=np.float32)[0:3])
    mods = StackedSliceSource([volume_store], stack="modalities", modalities=["T1", "T2", "FLAIR"])
    assert len(mods) == 6 * depth
    y = mods.read(depth + 4)  # second session, slice 4
    idx = store.index
    rows = [int(idx.index[(idx["subject"] == "s001") & (idx["modality"] == m)][0]) for m in ("T1", "T2", "FLAIR")]
    np.testing.assert_array_equal(y, np.stack([np.asarray(store[r], dtype=np.float32)[4] for r in rows]))
    with pytest.raises(InputError, match="sessions with all of"):
        StackedSliceSource([volume_store], stack="modalities", modalities=["T1", "T2", "T1c"])


def test_brainfound_continues_from_an_initialisation(volume_store, tmp_path):
    from brainfm.ssl.brainfound import BrainFoundMethod, train_brainfound
    from brainfm.ssl.export import timm_weights_path

    torch.manual_seed(123)
    init_vit = build_timm_vit(BF_TINY["arch"], BF_TINY["arch_overrides"])
    init_path = tmp_path / "init.pth"
    torch.save(init_vit.state_dict(), init_path)  # a timm state dict, as DINOv2 weights are distributed
    cfg = BrainFoundConfig.from_dict({**BF_TINY, "init": str(init_path)})
    method = BrainFoundMethod(cfg, init_distributed("cpu"))
    for name, p in init_vit.state_dict().items():
        assert torch.equal(method.student.backbone.vit.state_dict()[name], p)
        assert torch.equal(method.teacher.backbone.vit.state_dict()[name], p)
    out = train_brainfound(cfg, [volume_store], tmp_path / "bf.pth", tmp_path / "work")
    trained = build_timm_vit(BF_TINY["arch"], BF_TINY["arch_overrides"])
    load_encoder_weights(trained, timm_weights_path(out))
    key = "blocks.0.attn.qkv.weight"
    assert not torch.equal(trained.state_dict()[key], init_vit.state_dict()[key])
    # the registry's BrainFound encoder (adjacent slices as channels) loads the DINOv3-format export
    from brainfm.models import create_encoder

    enc = create_encoder("brainfound", weights=str(out), arch=BF_TINY["arch"],
                         arch_overrides=BF_TINY["arch_overrides"], img_size=28)
    vol = torch.from_numpy(np.asarray(__import__("brainfm.preprocess.store", fromlist=["x"]).ShardedStore(
        volume_store)[0]))
    x = enc.preprocess(vol)
    assert x.shape == (vol.shape[0], 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(enc.forward_features(x)["cls"], trained.eval()(x), rtol=0, atol=0)


def test_brainfound_init_from_wrong_architecture_is_refused(tmp_path):
    from brainfm.ssl.brainfound import BrainFoundMethod

    other = build_timm_vit(BF_TINY["arch"], {**BF_TINY["arch_overrides"], "embed_dim": 48})
    path = tmp_path / "other.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(CheckpointError, match="other.pth.*shape mismatch"):
        BrainFoundMethod(BrainFoundConfig.from_dict({**BF_TINY, "init": str(path)}), init_distributed("cpu"))
    path.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="cannot be read"):
        BrainFoundMethod(BrainFoundConfig.from_dict({**BF_TINY, "init": str(path)}), init_distributed("cpu"))


def test_simclr_control_is_the_runs_own_starting_point():
    """brainiac_simclr_scratch with the run's seed holds the weights SimCLR training starts from."""
    from brainfm.errors import ConfigError
    from brainfm.models import create_encoder
    from brainfm.ssl.simclr import SimCLRModel

    cfg = SimCLRConfig.from_dict({**SIMCLR_TINY, "seed": 3})
    torch.manual_seed(cfg.seed)
    start = SimCLRModel(cfg).backbone.state_dict()
    control = create_encoder("brainiac_simclr_scratch", arch="resnet10", img_size=16, seed=3)
    got = control.weight_module().state_dict()
    assert set(got) == set(start)
    for k in start:
        torch.testing.assert_close(got[k], start[k], rtol=0, atol=0)
    other = create_encoder("brainiac_simclr_scratch", arch="resnet10", img_size=16, seed=4).weight_module()
    assert not torch.equal(other.state_dict()["conv1.weight"], start["conv1.weight"])
    with pytest.raises(ConfigError, match="takes no weights"):
        create_encoder("brainiac_simclr_scratch", weights="w.pth", arch="resnet10")
