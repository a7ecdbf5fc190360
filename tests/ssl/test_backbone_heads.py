"""The maskable ViT equals timm's forward without masks; heads and the one-call student forward."""

from __future__ import annotations

import pytest
import torch

from brainfm.ssl.backbone import MaskableViT, build_timm_vit
from brainfm.ssl.dino import SelfDistillModel
from brainfm.ssl.heads import DINOHead

TINY = {"embed_dim": 32, "depth": 2, "num_heads": 2}


@pytest.mark.parametrize("arch", ["vit_base_patch16_dinov3", "vit_small_patch14_dinov2"])
def test_unmasked_forward_equals_timm(arch):
    torch.manual_seed(0)
    vit = build_timm_vit(arch, TINY).eval()
    wrapped = MaskableViT(vit).eval()
    ps = wrapped.patch_size
    x = torch.randn(3, 3, 4 * ps, 3 * ps)
    with torch.no_grad():
        ref = vit(x)  # global_pool='token', num_classes=0 -> CLS after the final norm
        out = wrapped(x)
        ref_tokens = vit.forward_features(x)
    torch.testing.assert_close(out["cls"], ref, rtol=0, atol=0)
    torch.testing.assert_close(out["patch"], ref_tokens[:, vit.num_prefix_tokens:], rtol=0, atol=0)
    assert out["patch"].shape == (3, 12, 32) and out["reg"].shape[1] == vit.num_prefix_tokens - 1
    # an all-False mask is the unmasked forward; a masked patch changes the tokens
    with torch.no_grad():
        no_mask = wrapped(x, masks=torch.zeros(3, 4, 3, dtype=torch.bool))
        wrapped.mask_token.fill_(5.0)
        m = torch.zeros(3, 4, 3, dtype=torch.bool)
        m[0, 1, 1] = True
        masked = wrapped(x, masks=m)
    torch.testing.assert_close(no_mask["cls"], ref, rtol=0, atol=0)
    assert not torch.allclose(masked["cls"][0], ref[0])
    torch.testing.assert_close(masked["cls"][1:], ref[1:], rtol=0, atol=0)


def test_grayscale_input_is_replicated_to_three_channels():
    vit = build_timm_vit("vit_base_patch16_dinov3", TINY).eval()
    wrapped = MaskableViT(vit).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x)["cls"], vit(x.expand(-1, 3, -1, -1)), rtol=0, atol=0)


def test_dino_head_structure_and_output():
    torch.manual_seed(0)
    head = DINOHead(32, 100, hidden_dim=48, bottleneck_dim=16, n_layers=3)
    assert [type(m).__name__ for m in head.mlp] == ["Linear", "GELU", "Linear", "GELU", "Linear"]
    assert head.last_layer.bias is None and head.last_layer.weight.shape == (100, 16)
    x = torch.randn(5, 32)
    z = torch.nn.functional.normalize(head.mlp(x), dim=-1)
    torch.testing.assert_close(head(x), z @ head.last_layer.weight.t())


def test_student_forward_selects_masked_patches():
    torch.manual_seed(0)
    vit = build_timm_vit("vit_base_patch16_dinov3", TINY)
    model = SelfDistillModel(MaskableViT(vit), DINOHead(32, 20, 32, 8), DINOHead(32, 24, 32, 8)).eval()
    g = torch.randn(4, 1, 32, 32)
    loc = torch.randn(6, 1, 16, 16)
    masks = torch.zeros(4, 2, 2, dtype=torch.bool)
    masks[1, 0, 1] = masks[3, 1, 0] = masks[3, 1, 1] = True
    with torch.no_grad():
        out = model(g, loc, masks)
    assert out["dino_global"].shape == (4, 20) and out["dino_local"].shape == (6, 20)
    assert out["ibot"].shape == (3, 24) and not bool(out["ibot_empty"])
    with torch.no_grad():
        empty = model(g, loc, torch.zeros_like(masks))
    assert bool(empty["ibot_empty"]) and empty["ibot"].shape == (1, 24)


def test_dino_head_norm_last_layer_gives_cosine_logits():
    torch.manual_seed(0)
    head = DINOHead(32, 50, hidden_dim=48, bottleneck_dim=16, norm_last_layer=True)
    x = torch.randn(7, 32)
    z = torch.nn.functional.normalize(head.mlp(x), dim=-1)
    w = head.last_layer.weight / head.last_layer.weight.norm(dim=1, keepdim=True)
    out = head(x)
    torch.testing.assert_close(out, z @ w.t())
    assert out.abs().max() <= 1.0 + 1e-6
    assert set(head.state_dict()) == set(DINOHead(32, 50, 48, 16).state_dict())  # same file layout
