"""MedicalNet ResNet: DataParallel layout, dilated last stages checked against an independent MedicalNet-style net."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import resnet10
from torch import nn

from brainfm.errors import CheckpointError
from brainfm.models import create_encoder


class RefBasicBlock(nn.Module):
    """MedicalNet's BasicBlock: both 3^3 convs dilated, the first strided; same parameter names as MONAI."""

    def __init__(self, cin: int, c: int, stride: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(cin, c, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm3d(c)
        self.conv2 = nn.Conv3d(c, c, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm3d(c)
        self.downsample = (nn.Sequential(nn.Conv3d(cin, c, 1, stride=stride, bias=False), nn.BatchNorm3d(c))
                           if stride != 1 or cin != c else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (self.downsample(x) if self.downsample is not None else x))


class RefMedicalNet10(nn.Module):
    """ResNet10 as in Tencent/MedicalNet ``models/resnet.py`` (layer3: stride 1 dilation 2; layer4: dilation 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(1, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.layer1 = nn.Sequential(RefBasicBlock(64, 64, 1, 1))
        self.layer2 = nn.Sequential(RefBasicBlock(64, 128, 2, 1))
        self.layer3 = nn.Sequential(RefBasicBlock(128, 256, 1, 2))
        self.layer4 = nn.Sequential(RefBasicBlock(256, 512, 1, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool3d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def perturb_(module: nn.Module, seed: int = 1, scale: float = 0.05) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, t in module.state_dict().items():
            if t.is_floating_point():
                t.add_(torch.randn(t.shape, generator=g) * scale)
                if k.endswith("running_var"):
                    t.abs_().add_(0.5)
    return module.eval()


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    torch.manual_seed(0)
    ref = perturb_(RefMedicalNet10())
    path = tmp_path_factory.mktemp("mednet") / "resnet_10_23dataset.pth"
    state = {f"module.{k}": v for k, v in ref.state_dict().items()}
    state["module.conv_seg.0.weight"] = torch.randn(512, 32, 2, 2, 2)  # a fine-tuned segmentation head
    torch.save({"state_dict": state}, path)
    return path, ref


def test_dilated_medicalnet_matches_reference(released) -> None:
    path, ref = released
    enc = create_encoder("medicalnet", weights=path, arch="resnet10", img_size=32)
    assert enc.weights_info["ignored"] == ["conv_seg.0.weight"] and enc.embed_dim == 512
    x = torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        fmap = ref(x)
        out = enc.forward_features(x, return_patch=True)
    assert fmap.shape[2:] == (4, 4, 4)
    torch.testing.assert_close(out["cls"], fmap.mean(dim=(2, 3, 4)), atol=1e-5, rtol=1e-5)
    # network axes are (z, y, x): the patch grid goes back to canonical (z, x, y)
    torch.testing.assert_close(out["patch"], fmap.permute(0, 2, 4, 3, 1), atol=1e-5, rtol=1e-5)


def test_monai_port_is_strided_and_same_parameters(released) -> None:
    path, _ = released
    enc = create_encoder("medicalnet", weights=path, arch="resnet10", img_size=32, dilated=False)
    with torch.no_grad():
        out = enc.forward_features(torch.randn(1, 1, 32, 32, 32), return_patch=True)
    assert out["patch"].shape == (1, 1, 1, 1, 512)


def test_parameter_free_shortcut_is_dilated_too() -> None:
    """ResNet18 uses MedicalNet's shortcut "A" (strided pooling + zero channels), which must lose its stride too."""
    enc = create_encoder("medicalnet_scratch", arch="resnet18", img_size=32)
    assert enc.net.layer3[0].downsample.keywords["stride"] == 1 and enc.net.layer2[0].downsample.keywords["stride"] == 2
    with torch.no_grad():
        out = enc.forward_features(torch.randn(1, 1, 32, 32, 32), return_patch=True)
    assert out["patch"].shape == (1, 4, 4, 4, 512)


def test_biased_downsample_files_are_refused(tmp_path) -> None:
    """A MONAI-default ResNet (biased 1x1 shortcut, as BrainIAC's) is not a MedicalNet file."""
    net = resnet10(spatial_dims=3, n_input_channels=1, conv1_t_stride=2, feed_forward=False)
    p = tmp_path / "monai_default.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, p)
    with pytest.raises(CheckpointError, match="downsample.0.bias"):
        create_encoder("medicalnet", weights=p, arch="resnet10", img_size=32)


def test_dataparallel_layout_is_named_and_a_stray_key_is_reported_as_itself(released, tmp_path, caplog) -> None:
    path, ref = released
    with caplog.at_level("WARNING", logger="brainfm.models"):
        enc = create_encoder("medicalnet", weights=path, arch="resnet10", img_size=32)
    info = enc.weights_info
    assert (info["format"], info["layout"]) == ("medicalnet_dataparallel", "MedicalNet DataParallel")
    assert info["stripped_prefixes"] == {"module.": len(ref.state_dict()) + 1}
    assert any("conv_seg.0.weight" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    # one key saved without DataParallel's prefix among the prefixed ones: that key, and only it, is named
    state = torch.load(path, weights_only=True)["state_dict"]
    stray = tmp_path / "stray.pth"
    torch.save({"state_dict": {**state, "fc.weight": torch.zeros(2, 512)}}, stray)
    with pytest.raises(CheckpointError) as err:
        create_encoder("medicalnet", weights=stray, arch="resnet10", img_size=32)
    msg = str(err.value)
    assert "recognised layout: MedicalNet DataParallel" in msg and "1 unexpected key(s): fc.weight [" in msg
    assert "missing" not in msg
    # the bare MONAI/MedicalNet state dict (no DataParallel wrapper) is named as such
    bare = tmp_path / "bare.pth"
    torch.save({k: v for k, v in ref.state_dict().items()}, bare)
    assert create_encoder("medicalnet", weights=bare, arch="resnet10", img_size=32).weights_info["layout"] == "MONAI"
