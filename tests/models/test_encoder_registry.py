"""Registry behaviour: names, errors, freezing, seeding, plugin import, adding an encoder in one file."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from brainfm.errors import ConfigError
from brainfm.models import Encoder, create_encoder, list_encoders, register_encoder
from brainfm.models import registry


def test_builtin_names_sorted_and_filterable():
    names = list_encoders()
    assert {"vit_dinov3", "braindino", "dinov3", "vit_random", "brainfound"} <= set(names)
    assert names == sorted(names)
    assert list_encoders("vit_*") == [n for n in names if n.startswith("vit_")]


def test_unknown_name_lists_known_names():
    with pytest.raises(ConfigError) as err:
        create_encoder("no_such_encoder")
    msg = str(err.value)
    assert "no_such_encoder" in msg and "braindino" in msg and "vit_random" in msg


def test_unknown_kwarg_is_a_config_error(tiny):
    with pytest.raises(ConfigError, match="not_an_option"):
        create_encoder("vit_dinov3", not_an_option=3, **tiny)


def test_pretrained_names_require_weights_and_random_control_refuses_them(tiny, tmp_path):
    for name in ("braindino", "dinov3", "brainfound"):
        with pytest.raises(ConfigError, match="needs a weights file"):
            create_encoder(name, **tiny)
    with pytest.raises(ConfigError, match="takes no weights"):
        create_encoder("vit_random", weights=str(tmp_path / "w.pth"), **tiny)
    # "none" (what the workflow passes for null weights) means no weights
    assert create_encoder("vit_random", weights="none", **tiny).weights_info is None


def test_created_encoders_are_frozen_and_stay_in_eval(tiny):
    enc = create_encoder("vit_random", arch_overrides={"drop_path_rate": 0.5}, **{k: v for k, v in tiny.items()})
    assert enc.name == "vit_random" and enc.frozen
    assert any(type(m).__name__ == "DropPath" for m in enc.modules())  # the guard below is really tested
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    enc.train()  # e.g. a head module calling .train() on everything (the public code's drop-path bug)
    assert not enc.training and not any(m.training for m in enc.modules())
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        a, b = enc.forward_features(x)["cls"], enc.forward_features(x)["cls"]
    assert torch.equal(a, b)  # drop-path at rate 0.5 would make these differ
    trainable = create_encoder("vit_random", freeze=False, **tiny)
    assert trainable.training and all(p.requires_grad for p in trainable.parameters())


def test_vit_random_is_seeded_and_leaves_global_rng_alone(tiny):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = create_encoder("vit_random", seed=7, **tiny)
    after = torch.rand(3)
    assert torch.equal(after, expected)  # building a model consumed no global random numbers
    b = create_encoder("vit_random", seed=7, **tiny)
    c = create_encoder("vit_random", seed=8, **tiny)
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].std() > 0)


class _TinyConv3D(Encoder):
    """A real (small) 3D encoder written the way a baseline would be: one class + one registry line."""

    input_kind = "volume3d"

    def __init__(self, width: int = 8):
        super().__init__()
        self.net = nn.Sequential(nn.Conv3d(1, width, 3, padding=1), nn.GELU(), nn.Conv3d(width, width, 3, padding=1))
        self.embed_dim = width
        self.layer_names = ["conv0", "conv1"]

    def weight_module(self) -> nn.Module:
        return self.net

    def preprocess(self, volume):
        return torch.as_tensor(volume, dtype=torch.float32)[None, None]

    def forward_features(self, x, layers=(), return_patch=False):
        h0 = self.net[1](self.net[0](x))
        h1 = self.net[2](h0)
        out = {"cls": h1.mean(dim=(2, 3, 4))}
        if layers:
            feats = [h0.mean(dim=(2, 3, 4)), h1.mean(dim=(2, 3, 4))]
            out["layers"] = [feats[self.layer_index(i)] for i in layers]
        if return_patch:
            out["patch"] = h1.permute(0, 2, 3, 4, 1)
        return out


def test_register_a_new_encoder_in_one_line():
    name = "test_tiny_conv3d"
    try:
        @register_encoder(name)
        def factory(weights=None, width: int = 8):
            return _TinyConv3D(width)

        assert name in list_encoders()
        enc = create_encoder(name, width=4)
        assert isinstance(enc, _TinyConv3D) and enc.name == name and enc.frozen and enc.embed_dim == 4
        assert enc.layer_index("conv1") == 1 and enc.layer_index(-1) == 1
        with pytest.raises(ConfigError, match="out of range"):
            enc.layer_index(2)
        # same function again (module re-import) is fine; a different one under the same name is not
        register_encoder(name)(factory)

        def other(weights=None):
            return _TinyConv3D()

        with pytest.raises(ConfigError, match="already registered"):
            register_encoder(name)(other)
    finally:
        registry._REGISTRY.pop(name, None)


def test_factory_must_return_an_encoder():
    name = "test_not_an_encoder"
    try:
        register_encoder(name)(lambda weights=None: nn.Linear(2, 2))
        with pytest.raises(TypeError, match="not an Encoder"):
            create_encoder(name)
    finally:
        registry._REGISTRY.pop(name, None)


def test_optional_plugin_absent_is_tolerated_but_broken_plugin_raises(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "_PLUGINS", ("brainfm.models.vit", "brainfm_absent_plugin_xyz"))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    registry.load_plugins()  # absent optional module: fine

    (tmp_path / "brainfm_broken_plugin_xyz.py").write_text("import a_dependency_that_is_not_installed_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_PLUGINS", ("brainfm.models.vit", "brainfm_broken_plugin_xyz"))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    with pytest.raises(ModuleNotFoundError, match="a_dependency_that_is_not_installed_xyz"):
        registry.load_plugins()
    sys.modules.pop("brainfm_broken_plugin_xyz", None)
    monkeypatch.setattr(registry, "_plugins_loaded", True)


def test_the_catalogue_is_the_one_list_of_built_in_encoders():
    """Every built-in encoder is catalogued with the module that registers it, and nothing else is."""
    import importlib

    from brainfm.models import list_encoders
    from brainfm.models.catalog import ENCODERS
    from brainfm.models.registry import _REGISTRY

    assert set(list_encoders()) == set(ENCODERS)
    for name, info in ENCODERS.items():
        importlib.import_module(info.module)
        assert _REGISTRY[name].__module__ == info.module, name
