"""brainfm.device: ``auto`` precision -> bf16 exactly where the hardware computes bf16 natively."""

from __future__ import annotations

import pytest

from brainfm.device import (
    autocast_dtype,
    cpu_flags,
    cpu_has_native_bf16,
    resolve_precision,
)
from brainfm.errors import ConfigError

XEON_AVX512 = ["fpu", "sse4_2", "avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni"]  # no BF16, no AMX


@pytest.mark.parametrize("flags, capability, expected", [
    (XEON_AVX512, "AVX512", "fp32"),  # the Xeon: bf16 autocast there is ~3x slower than fp32
    (XEON_AVX512 + ["avx512_bf16"], "AVX512", "bf16"),  # Cooper Lake / Zen 4
    (XEON_AVX512 + ["amx_bf16", "amx_tile"], "AVX512", "bf16"),  # Sapphire Rapids
    (["fp", "asimd", "sve", "bf16"], "SVE256", "bf16"),  # Arm with the BF16 extension ("Features")
    (["fpu", "avx2"], "AVX2", "fp32"),
    ([], "DEFAULT", "fp32"),
    ([], "AMX", "bf16"),  # no flags readable, but torch dispatches to AMX kernels
])
def test_auto_on_cpu_follows_the_native_bf16_flags(flags, capability, expected):
    assert cpu_has_native_bf16(flags, capability) is (expected == "bf16")
    assert resolve_precision("auto", "cpu", flags=flags, capability=capability) == expected
    assert resolve_precision(None, "cpu", flags=flags, capability=capability) == expected


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_on_cuda_follows_the_gpus_bf16_support(native, expected):
    assert resolve_precision("auto", "cuda", cuda_bf16=native) == expected
    assert resolve_precision("auto", "cuda:1", cuda_bf16=native) == expected


def test_explicit_choices_are_kept_whatever_the_hardware(caplog):
    assert resolve_precision("fp32", "cpu", flags=["avx512_bf16"], capability="AVX512") == "fp32"
    assert resolve_precision("fp32", "cuda", cuda_bf16=True) == "fp32"
    with caplog.at_level("WARNING", logger="brainfm"):
        assert resolve_precision("bf16", "cpu", flags=XEON_AVX512, capability="AVX512") == "bf16"
    assert "without native bf16" in caplog.text


@pytest.mark.parametrize("name, device, match", [
    ("fp16", "cpu", "precision must be one of"),
    ("auto", "auto", "resolved device"),
    ("auto", "mps", "resolved device"),
])
def test_bad_precision_or_unresolved_device_is_a_config_error(name, device, match):
    with pytest.raises(ConfigError, match=match):
        resolve_precision(name, device, flags=[], capability="DEFAULT")


def test_cpu_flags_reads_x86_flags_and_arm_features(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx512f avx512_bf16\n\n"
                   "processor\t: 1\nflags\t\t: fpu\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd bf16 i8mm\n")
    assert cpu_flags(x86) == {"fpu", "avx512f", "avx512_bf16"}
    assert cpu_flags(arm) == {"fp", "asimd", "bf16", "i8mm"}
    assert cpu_flags(tmp_path / "absent") == frozenset()
    assert resolve_precision("auto", "cpu", flags=cpu_flags(x86), capability="AVX512") == "bf16"


def test_autocast_dtype_needs_a_resolved_precision():
    import torch

    assert autocast_dtype("fp32") is None and autocast_dtype("bf16") is torch.bfloat16
    with pytest.raises(ConfigError):
        autocast_dtype("auto")


def test_auto_avoids_bf16_for_3d_convolution_training_where_its_gradients_are_wrong():
    """A CPU with native bf16 whose bf16 Conv3d weight gradients disagree with fp32 trains 3D nets in fp32."""
    native = {"avx512_bf16"}
    assert resolve_precision("auto", "cpu", flags=native, conv3d_training=True, conv3d_ok=False) == "fp32"
    assert resolve_precision("auto", "cpu", flags=native, conv3d_training=True, conv3d_ok=True) == "bf16"
    assert resolve_precision("auto", "cpu", flags=native, conv3d_ok=False) == "bf16"  # not training 3D convolutions
    assert resolve_precision("bf16", "cpu", flags=native, conv3d_training=True, conv3d_ok=False) == "bf16"  # asked


def test_the_conv3d_gradient_check_catches_wrong_bf16_gradients_found_independently():
    """Where a float64 reference finds a wrong bf16 Conv3d gradient in this process, the check says so.

    (The wrong results come and go between draws, so only this direction is certain: a machine
    whose gradients are right passes both.)"""
    import torch

    from brainfm.device import bf16_conv3d_gradients_ok

    gen = torch.Generator().manual_seed(1)
    worst = 0.0
    for channels, batch, size in ((64, 2, 2), (128, 16, 4), (256, 16, 2)):
        conv = torch.nn.Conv3d(channels, channels, 3, padding=1, bias=False)
        x = torch.randn(batch, channels, size, size, size, generator=gen)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(x)
        grad = torch.randn(y.shape, generator=gen)
        y.backward(grad.to(y.dtype))
        low = conv.weight.grad.double()
        ref = torch.nn.grad.conv3d_weight(x.double(), conv.weight.shape, grad.double(), padding=1)
        worst = max(worst, float((low - ref).norm() / ref.norm()))
    if not worst < 0.05:
        assert bf16_conv3d_gradients_ok() is False
    else:
        assert isinstance(bf16_conv3d_gradients_ok(), bool)


def test_cpu_attention_switches_timm_attention_to_the_explicit_product_under_cpu_bf16_only():
    import timm
    import torch

    from brainfm.device import cpu_attention

    def vit():
        torch.manual_seed(0)
        return timm.create_model("vit_small_patch16_dinov3", img_size=32, patch_size=8, embed_dim=64, depth=2,
                                 num_heads=2, pretrained=False).eval()

    assert cpu_attention([vit()], "cuda:0", "bf16") == 0 and cpu_attention([vit()], "cpu", "fp32") == 0
    fused, explicit = vit(), vit()
    assert cpu_attention([explicit], "cpu", "bf16") == 2  # one per block
    assert not any(getattr(m, "fused_attn", False) for m in explicit.modules())
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(explicit(x), fused(x), rtol=1e-4, atol=1e-4)  # fp32: the same attention
