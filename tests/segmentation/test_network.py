"""Frozen-encoder segmentation networks: parameter counts, the fusion layer, axes, checkpoints, 3D stems."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from brainfm.errors import CheckpointError, ConfigError
from brainfm.segmentation.network import build_network, default_blocks, native_axes, parameter_counts
from brainfm.segmentation.volume import widen_stem


def _patch_decoder_params(c: int, k: int, stages: int, dims: int = 2) -> int:
    """Hand count: per stage a k^dims transposed conv (weights + bias) and a LayerNorm (weight + bias)."""
    total = 0
    for _ in range(stages):
        total += c * (c // 2) * 2 ** dims + (c // 2) + 2 * (c // 2)
        c //= 2
    return total + c * k + k  # 1x1 head


def _vit_b16_dinov3_params(d: int = 768, depth: int = 12, mlp: int = 3072, prefix_tokens: int = 5) -> int:
    """Hand count of timm's vit_base_patch16_dinov3 (no qkv bias, layer scale, CLS + 4 registers, RoPE)."""
    patch_embed = 3 * 16 * 16 * d + d
    block = (2 * d  # norm1
             + d * 3 * d  # qkv, no bias
             + d * d + d  # proj
             + 2 * d  # norm2
             + d * mlp + mlp + mlp * d + d  # mlp
             + 2 * d)  # layer scales
    return patch_embed + prefix_tokens * d + depth * block + 2 * d  # + final norm


def test_vit_b16_at_256_matches_the_paper_parameter_budget():
    net = build_network(4, 3, encoder="vit_random", encoder_kwargs={"arch": "vit_base_patch16_dinov3",
                                                                    "img_size": 256}, patch_size=[256, 256])
    counts = parameter_counts(net)
    assert counts["frozen"] == _vit_b16_dinov3_params()
    assert counts["trainable"] == _patch_decoder_params(4 * 768, 3, 4) + 4 * 3  # + the 1x1 fusion conv, no bias
    assert round(counts["total"] / 1e6, 1) == 110.7  # paper: 110.7 M
    assert round(100 * counts["trainable_fraction"], 1) == 22.6  # paper: 22.6% trainable
    assert net.blocks == [2, 5, 8, 11]


def test_default_blocks_scale_with_depth():
    assert default_blocks(12) == [2, 5, 8, 11]
    assert default_blocks(4) == [0, 1, 2, 3]
    assert default_blocks(24) == [5, 11, 17, 23]
    assert default_blocks(2) == [0, 1]


@pytest.fixture
def net2d(tiny_vit):
    return build_network(4, 3, encoder="vit_random", encoder_kwargs=tiny_vit, axes=[1, 0])


def test_fusion_conv_starts_as_the_channel_average(net2d):
    x = torch.randn(2, 4, 48, 48)
    fused = net2d.fuse(x)
    assert fused.shape == (2, 3, 48, 48)
    for c in range(3):
        torch.testing.assert_close(fused[:, c], x.mean(dim=1))
    assert net2d.fuse.weight.requires_grad and net2d.fuse.bias is None


def test_only_fusion_and_decoder_train_and_encoder_stays_in_eval(net2d):
    names = {n.split(".")[0] for n, p in net2d.named_parameters() if p.requires_grad}
    assert names == {"fuse", "decoder"}
    net2d.train()
    assert net2d.decoder.training and not net2d.encoder.training and not net2d.encoder.model.training


def test_axes_transpose_the_slice_for_the_encoder(tiny_vit):
    """With axes [1, 0] the network equals the plain one applied to the transposed slice, transposed back."""
    a = build_network(4, 3, encoder="vit_random", encoder_kwargs=tiny_vit, axes=[1, 0])
    b = build_network(4, 3, encoder="vit_random", encoder_kwargs=tiny_vit, axes=[0, 1])
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 4, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x.transpose(-1, -2)).transpose(-1, -2))
    # nnU-Net's RAS arrays are (S, A, R); the store's slices are (R, A): swap for 2D, reverse for 3D
    assert native_axes([0, 1, 2], 2) == [1, 0] and native_axes([0, 1, 2], 3) == [2, 1, 0]
    assert native_axes([2, 1, 0], 3) == [0, 1, 2]


def test_checkpoint_holds_trainable_weights_and_refuses_another_encoder(tiny_vit, tmp_path):
    from brainfm.models import create_encoder, export_timm

    net = build_network(4, 3, encoder="vit_random", encoder_kwargs=tiny_vit)
    state = net.state_dict()
    assert not [k for k in state if k.startswith("encoder.")]
    assert state["_extra_state"]["encoder_identity"]["encoder"] == "vit_random"
    n_trainable = sum(v.numel() for k, v in state.items() if k != "_extra_state")
    assert n_trainable == parameter_counts(net)["trainable"]
    with torch.no_grad():
        net.decoder.decode[-1].weight.add_(1.0)
    fresh = build_network(4, 3, encoder="vit_random", encoder_kwargs=tiny_vit)
    fresh.load_state_dict(net.state_dict())
    torch.testing.assert_close(fresh.decoder.decode[-1].weight, net.decoder.decode[-1].weight)
    # the same architecture with a weights file: the identity (sha256) differs, loading is refused
    weights = tmp_path / "w.safetensors"
    export_timm(create_encoder("vit_random", **tiny_vit, seed=5), weights)
    other = build_network(4, 3, encoder="vit_dinov3", weights=str(weights), encoder_kwargs=tiny_vit)
    with pytest.raises(CheckpointError, match="trained on encoder 'vit_random'"):
        other.load_state_dict(net.state_dict())


def test_2d_network_rejects_bad_settings(tiny_vit):
    with pytest.raises(ConfigError, match="multiples of the ViT patch size"):
        build_network(4, 3, encoder="vit_random", encoder_kwargs=tiny_vit, patch_size=[44, 44])
    with pytest.raises(ConfigError, match="deep supervision"):
        build_network(4, 3, True, encoder="vit_random", encoder_kwargs=tiny_vit)
    net = build_network(4, 3, encoder="vit_random", encoder_kwargs=tiny_vit)
    net.decoder.deep_supervision = False  # what nnU-Net sets
    with pytest.raises(ConfigError, match="deep supervision"):
        net.decoder.deep_supervision = True


def test_widened_stem_keeps_the_response_to_a_channel_constant_image():
    """Repeat-and-rescale: four identical channels give exactly the pretrained single-channel response."""
    conv = nn.Conv3d(1, 8, kernel_size=4, stride=4)
    wide = widen_stem(conv, 4)
    x = torch.randn(2, 1, 8, 8, 8)
    torch.testing.assert_close(wide(x.expand(-1, 4, -1, -1, -1)), conv(x))
    assert wide.weight.shape == (8, 4, 4, 4, 4) and not wide.weight.requires_grad
    with pytest.raises(ConfigError):
        widen_stem(nn.Conv3d(3, 8, 2), 4)


TINY_3D = {
    "brainiac_scratch": dict(img_size=32, hidden_size=48, mlp_dim=96, num_layers=4, num_heads=4),
    "bmmae_scratch": dict(img_size=32, hidden_size=48, mlp_dim=96, num_layers=4, num_heads=4),
    "brainmvp_scratch": dict(depth=(1, 1, 1, 1), embed_dim=(16, 32, 64, 64), head_dim=32),
}


@pytest.mark.parametrize("name", sorted(TINY_3D))
def test_3d_baseline_networks(name):
    net = build_network(4, 3, encoder=name, encoder_kwargs=TINY_3D[name], patch_size=[32, 32, 32], axes=[2, 1, 0])
    x = torch.randn(1, 4, 32, 32, 32)
    out = net(x)
    assert out.shape == (1, 3, 32, 32, 32)
    frozen = [n for n, p in net.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith("encoder.") for n in frozen)
    assert all(n.startswith("decoder.") for n, p in net.named_parameters() if p.requires_grad)
    assert not [k for k in net.state_dict() if k.startswith("encoder.")]
    out.sum().backward()
    assert all(p.grad is None for p in net.encoder.parameters())
    if name != "brainmvp_scratch":  # fixed position embeddings: the patch must be the encoder's input size
        with pytest.raises(ConfigError, match="must equal the encoder's input size"):
            build_network(4, 3, encoder=name, encoder_kwargs=TINY_3D[name], patch_size=[48, 48, 48])


def test_3d_axes_follow_the_baselines_voxel_order():
    """Permuting the input by ``axes`` and the logits back: equal to the identity-axes net on the permuted input."""
    kw = TINY_3D["brainiac_scratch"]
    a = build_network(4, 3, encoder="brainiac_scratch", encoder_kwargs=kw, axes=[2, 1, 0])
    b = build_network(4, 3, encoder="brainiac_scratch", encoder_kwargs=kw, axes=[0, 1, 2])
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 4, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x.permute(0, 1, 4, 3, 2)).permute(0, 1, 4, 3, 2))


class _ScaleGradUnderAutocast(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by 100: a stand-in for a wrong bf16 kernel."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g * 100


def test_cpu_autocast_gives_float32_logits_close_to_fp32(net2d):
    x = torch.randn(2, 4, 48, 48)
    net2d.eval()
    with torch.no_grad():
        ref = net2d(x)
        net2d.cpu_autocast = torch.bfloat16
        got = net2d(x)
    assert got.dtype == torch.float32
    assert float((got - ref).norm() / ref.norm()) < 0.05


def test_bf16_gradient_check_accepts_autocast_and_catches_a_wrong_bf16_gradient(net2d):
    from brainfm.segmentation.network import bf16_gradients_agree

    assert bf16_gradients_agree(net2d, [48, 48], 4)
    assert net2d.cpu_autocast is None and all(p.grad is None for p in net2d.parameters())
    decode = net2d.decoder.forward

    def broken(x):
        y = decode(x)
        return _ScaleGradUnderAutocast.apply(y) if torch.is_autocast_enabled("cpu") else y

    net2d.decoder.forward = broken
    assert not bf16_gradients_agree(net2d, [48, 48], 4)


def test_job_precision_on_cpu_and_cuda(net2d):
    from brainfm.device import cpu_has_native_bf16
    from brainfm.segmentation.job import job_precision

    cpu = torch.device("cpu")
    assert job_precision(net2d, "fp32", cpu, [48, 48], 4) == "fp32"
    assert job_precision(net2d, "auto", torch.device("cuda"), [48, 48], 4) == "nnunet_amp"
    assert job_precision(net2d, "auto", cpu, [48, 48], 4) == ("bf16" if cpu_has_native_bf16() else "fp32")
    decode = net2d.decoder.forward
    net2d.decoder.forward = lambda x: (_ScaleGradUnderAutocast.apply(decode(x)) if torch.is_autocast_enabled("cpu")
                                       else decode(x))
    assert job_precision(net2d, "auto", cpu, [48, 48], 4) == "fp32"
    assert job_precision(net2d, "bf16", cpu, [48, 48], 4) == "bf16"  # asked for explicitly: honoured
