"""Schedules at chosen iterations against their formulas; layer-decay parameter groups; config."""

from __future__ import annotations

import math

import pytest
import torch

from brainfm.errors import ConfigError
from brainfm.ssl.backbone import MaskableViT, build_timm_vit
from brainfm.ssl.config import STAGE2_DEFAULTS, BrainFoundConfig, DinoConfig, SimCLRConfig
from brainfm.ssl.heads import DINOHead
from brainfm.ssl.optim import apply_schedule, build_adamw, layer_id, param_groups
from brainfm.ssl.schedules import Schedule, build_schedules, scaled_lr


def test_warmup_cosine_values():
    s = Schedule(start=0.0, peak=1e-3, end=1e-6, warmup=100, total=1100)
    assert s(0) == 0.0
    assert s(50) == pytest.approx(0.5e-3)
    assert s(99) == pytest.approx(0.99e-3)
    assert s(100) == pytest.approx(1e-3)  # first cosine point is the peak
    n_cos = 1000
    j = 400
    assert s(100 + j) == pytest.approx(1e-6 + (1e-3 - 1e-6) * 0.5 * (1 + math.cos(math.pi * j / (n_cos - 1))))
    assert s(1099) == pytest.approx(1e-6)  # last iteration reaches the end value
    assert s(5000) == pytest.approx(1e-6)
    assert Schedule(0.0, 2.0, 0.0, 0, 3)(1) == pytest.approx(1.0)  # midpoint of a 3-point cosine


def test_paper_schedules_from_config():
    cfg = DinoConfig()  # paper values
    sch = build_schedules(cfg, global_batch=4 * 256, total_iters=cfg.iters)
    peak = 1e-4 * 4 * math.sqrt(1024 / 1024)  # DINOv3 sqrt_wrt_1024 rule at the paper's global batch
    assert sch.lr(10_000) == pytest.approx(peak)
    assert sch.lr(5_000) == pytest.approx(peak / 2)
    assert sch.lr(499_999) == pytest.approx(1e-6 * 4)
    assert sch.momentum(0) == sch.momentum(250_000) == sch.momentum(499_999) == pytest.approx(0.994)
    assert sch.weight_decay(0) == sch.weight_decay(499_999) == pytest.approx(0.04)
    assert sch.teacher_temp(0) == pytest.approx(0.04)
    assert sch.teacher_temp(37_500 // 2) == pytest.approx(0.055)
    assert sch.teacher_temp(37_500) == sch.teacher_temp(400_000) == pytest.approx(0.07)
    assert sch.last_layer_lr(1249) == 0.0 and sch.last_layer_lr(1250) == pytest.approx(sch.lr(1250))


def test_lr_scaling_rules():
    assert scaled_lr(1e-4, 256, "none") == 1e-4
    assert scaled_lr(1e-4, 256, "sqrt_wrt_1024") == pytest.approx(1e-4 * 4 * 0.5)
    assert scaled_lr(1e-4, 512, "linear_wrt_256") == pytest.approx(2e-4)


def test_momentum_cosine_to_one_for_brainfound():
    cfg = BrainFoundConfig.from_dict({"iters": 101, "warmup_iters": 0})
    sch = build_schedules(cfg, 1024, 101)
    assert sch.momentum(0) == pytest.approx(0.992)
    assert sch.momentum(50) == pytest.approx(0.996)
    assert sch.momentum(100) == pytest.approx(1.0)
    assert sch.weight_decay(100) == pytest.approx(0.4)


def _tiny_student():
    vit = build_timm_vit("vit_base_patch16_dinov3", {"embed_dim": 32, "depth": 3, "num_heads": 2})
    model = torch.nn.Module()
    model.backbone = MaskableViT(vit)
    model.dino_head = DINOHead(32, 16, 32, 8)
    return model


def test_layer_decay_groups():
    model = _tiny_student()
    groups = param_groups(model.named_parameters(), n_blocks=3, layer_decay=0.9, patch_embed_lr_mult=0.2)
    by_name = {n: g for g in groups for n in g["names"]}
    assert set(by_name) == {n for n, p in model.named_parameters()}  # each parameter exactly once
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert by_name["backbone.vit.blocks.0.attn.qkv.weight"]["lr_multiplier"] == pytest.approx(0.9**3)
    assert by_name["backbone.vit.blocks.2.mlp.fc1.weight"]["lr_multiplier"] == pytest.approx(0.9)
    assert by_name["backbone.vit.patch_embed.proj.weight"]["lr_multiplier"] == pytest.approx(0.9**4 * 0.2)
    assert by_name["backbone.vit.cls_token"]["lr_multiplier"] == pytest.approx(0.9**4)
    assert by_name["backbone.mask_token"]["lr_multiplier"] == pytest.approx(0.9**4)
    assert by_name["backbone.vit.norm.weight"]["lr_multiplier"] == pytest.approx(1.0)
    assert by_name["dino_head.mlp.0.weight"]["lr_multiplier"] == pytest.approx(1.0)
    for name in ("backbone.vit.cls_token", "backbone.vit.reg_token", "backbone.mask_token",
                 "backbone.vit.blocks.0.norm1.weight", "backbone.vit.blocks.0.attn.proj.bias",
                 "backbone.vit.blocks.1.gamma_1", "dino_head.mlp.0.bias"):
        assert by_name[name]["wd_multiplier"] == 0.0, name
    for name in ("backbone.vit.blocks.0.attn.qkv.weight", "dino_head.last_layer.weight",
                 "backbone.vit.patch_embed.proj.weight"):
        assert by_name[name]["wd_multiplier"] == 1.0, name
    assert by_name["dino_head.last_layer.weight"]["is_last_layer"]
    opt = build_adamw(groups)
    apply_schedule(opt, lr=1.0, weight_decay=0.5, last_layer_lr=0.0)
    for g in opt.param_groups:
        expected = 0.0 if g["is_last_layer"] else g["lr_multiplier"]
        assert g["lr"] == pytest.approx(expected)
        assert g["weight_decay"] == pytest.approx(0.5 * g["wd_multiplier"])
    assert layer_id("dino_head.mlp.0.weight", 3) == 4


def test_config_defaults_unknown_keys_and_stage2():
    cfg = DinoConfig()
    assert (cfg.global_size, cfg.local_size, cfg.n_local) == (256, 112, 8)
    assert cfg.global_scale == (0.32, 1.0) and cfg.local_scale == (0.05, 0.32)
    assert (cfg.n_prototypes, cfg.head_hidden, cfg.head_bottleneck, cfg.head_layers) == (65536, 2048, 256, 3)
    assert (cfg.koleo_weight, cfg.ibot_weight, cfg.momentum, cfg.layer_decay) == (0.1, 1.0, 0.994, 0.9)
    assert (cfg.lr, cfg.weight_decay, cfg.clip_grad, cfg.mask_prob, cfg.mask_ratio) == (1e-4, 0.04, 3.0, 0.5,
                                                                                          (0.1, 0.5))
    with pytest.raises(ConfigError, match="unknown key"):
        DinoConfig.from_dict({"koleo": 0.1})
    with pytest.raises(ConfigError, match="centering"):
        DinoConfig.from_dict({"centering": "mean"})
    s2 = DinoConfig.from_dict({"stage": "2"})
    assert s2.upsample_to == 1024 and s2.pairs() == [tuple(p) for p in STAGE2_DEFAULTS["crop_pairs"]]
    assert s2.pair_ratios() == [0.3, 0.3, 0.3, 0.05, 0.05] and s2.batch_size == 56 and s2.iters == 10_000
    assert DinoConfig.from_dict({"stage": 2, "iters": 7}).iters == 7  # explicit keys win over stage-2 values
    assert SimCLRConfig().input_size == 128 and SimCLRConfig().batch_size == 32
    with pytest.raises(ConfigError):
        SimCLRConfig.from_dict({"iters": 0, "epochs": 0})
    assert DinoConfig.from_dict(cfg.to_dict()) == cfg  # round trip
