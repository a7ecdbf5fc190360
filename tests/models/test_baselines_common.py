"""3D baselines: native intensity recipes against MONAI's own transforms, axis bookkeeping, registry rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import (
    NormalizeIntensity,
    Resize,
    ScaleIntensity,
    ScaleIntensityRangePercentiles,
)

from brainfm.errors import ConfigError
from brainfm.models import create_encoder, list_encoders
from brainfm.models.baselines.common import (
    AXES_XYZ,
    minmax_scale,
    nonzero_zscore,
    percentile,
    percentile_scale,
    rebase_background,
    resize3d,
)

pytestmark = pytest.mark.filterwarnings("ignore:torch.meshgrid:UserWarning")  # MONAI sin-cos embedding

V2_TINY = dict(img_size=32, hidden_size=36, mlp_dim=48, num_layers=3, num_heads=2)
BMMAE_TINY = dict(img_size=32, hidden_size=36, mlp_dim=48, num_layers=3, num_heads=2)
ZNORM = NormalizeIntensity(nonzero=True, channel_wise=True)  # BrainIAC v2 / BM-MAE normalisation
MVP_TINY = dict(img_size=32, depth=(1, 1, 2, 1), embed_dim=(8, 16, 32, 32), head_dim=16)


def brain_like(shape=(20, 24, 28), seed=0) -> torch.Tensor:
    """A z-scored 'brain' (ellipsoid foreground, negative and positive values) on an exact-zero background."""
    g = torch.Generator().manual_seed(seed)
    zz, xx, yy = torch.meshgrid(*[torch.linspace(-1, 1, n) for n in shape], indexing="ij")
    inside = (zz / 0.8) ** 2 + (xx / 0.7) ** 2 + (yy / 0.9) ** 2 < 1
    vals = torch.randn(shape, generator=g) + 0.5 * xx
    vals = (vals - vals[inside].mean()) / vals[inside].std()
    return torch.where(inside, vals, torch.zeros(shape))


# ----------------------------------------------------------------------------- recipes vs MONAI
def test_percentile_matches_numpy() -> None:
    x = torch.randn(1000, generator=torch.Generator().manual_seed(3))
    for q in (0.0, 5.0, 37.3, 95.0, 100.0):
        assert float(percentile(x, q)) == pytest.approx(float(np.percentile(x.numpy(), q)), abs=1e-6)


def test_nonzero_zscore_matches_monai() -> None:
    v = brain_like() * 3 + 1
    v[brain_like() == 0] = 0
    ref = NormalizeIntensity(nonzero=True, channel_wise=True)(v[None].clone())[0]
    ours = nonzero_zscore(v)
    torch.testing.assert_close(ours, torch.as_tensor(ref), atol=1e-5, rtol=1e-5)
    assert bool((ours[v == 0] == 0).all())
    fg = ours[v != 0]
    assert float(fg.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(fg.std(unbiased=False)) == pytest.approx(1.0, 1e-4)


def test_minmax_and_percentile_scale_match_monai() -> None:
    v = rebase_background(brain_like())
    torch.testing.assert_close(minmax_scale(v), torch.as_tensor(ScaleIntensity(minv=0.0, maxv=1.0)(v[None])[0]))
    for clip in (False, True):
        ref = ScaleIntensityRangePercentiles(lower=5, upper=95, b_min=0.0, b_max=1.0, clip=clip, channel_wise=True)
        torch.testing.assert_close(percentile_scale(v, 5, 95, 0.0, 1.0, clip=clip), torch.as_tensor(ref(v[None])[0]),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["trilinear", "area"])
def test_resize_matches_monai(mode: str) -> None:
    v = brain_like()
    ref = Resize(spatial_size=(16, 12, 10), mode=mode)(v[None])
    torch.testing.assert_close(resize3d(v[None, None], (16, 12, 10), mode)[0], torch.as_tensor(ref), atol=1e-5,
                               rtol=1e-5)


def test_rebase_background_makes_background_darkest_and_keeps_contrast() -> None:
    v = brain_like()
    r = rebase_background(v)
    fg = v != 0
    assert bool((r[~fg] == 0).all()) and float(r.min()) == 0.0
    assert float(r[fg].min()) == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(r[fg] - v[fg], torch.full_like(v[fg], -float(v[fg].min())))  # a pure shift
    nonneg = v.abs()
    assert torch.equal(rebase_background(nonneg), nonneg)  # already non-negative: unchanged


# ----------------------------------------------------------------------------- preprocess = upstream recipe
def test_brainiac_v2_preprocess_is_monai_validation_transform() -> None:
    enc = create_encoder("brainiac_scratch", **V2_TINY)
    vol = brain_like()
    x = enc.preprocess(vol)
    ref = ZNORM(Resize((32,) * 3, mode="trilinear")(vol.permute(1, 2, 0)[None]))
    assert x.shape == (1, 1, 32, 32, 32)
    torch.testing.assert_close(x[0], torch.as_tensor(ref), atol=1e-5, rtol=1e-5)
    dino = create_encoder("brainiac_scratch", protocol="braindino", **V2_TINY).preprocess(vol)
    torch.testing.assert_close(dino[0], torch.as_tensor(Resize((32,) * 3, mode="trilinear")(vol[None])))


def test_brainiac_v1_preprocess_is_area_resize_then_minmax() -> None:
    enc = create_encoder("brainiac_v1_scratch", img_size=16)
    vol = brain_like()
    area = Resize((16,) * 3, mode="area")(rebase_background(vol).permute(1, 2, 0)[None])
    ref = ScaleIntensity(minv=0.0, maxv=1.0)(area)
    x = enc.preprocess(vol)
    torch.testing.assert_close(x[0], torch.as_tensor(ref), atol=1e-6, rtol=1e-6)
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0


def test_brainmvp_preprocess_is_percentile_scaling_then_resize() -> None:
    enc = create_encoder("brainmvp_scratch", **MVP_TINY)
    vol = brain_like()
    scaled = ScaleIntensityRangePercentiles(5, 95, 0.0, 1.0, clip=False, channel_wise=True)(
        rebase_background(vol).permute(1, 2, 0)[None])
    ref = Resize((32,) * 3, mode="trilinear")(scaled)
    torch.testing.assert_close(enc.preprocess(vol)[0], torch.as_tensor(ref), atol=1e-5, rtol=1e-5)


def test_medicalnet_preprocess_is_zyx_and_foreground_zscore() -> None:
    enc = create_encoder("medicalnet_scratch", arch="resnet10", img_size=(20, 28, 24))  # no resize needed
    vol = brain_like()
    x = enc.preprocess(vol)[0, 0].numpy()
    r = rebase_background(vol).permute(0, 2, 1).numpy()  # (z, y, x)
    pix = r[r > 0]
    ref = np.where(r > 0, (r - pix.mean()) / pix.std(), 0.0)  # MedicalNet's formula, background kept 0
    np.testing.assert_allclose(x, ref, atol=1e-5)


def test_bmmae_preprocess_same_recipe_as_pretraining_normalisation() -> None:
    enc = create_encoder("bmmae_scratch", **BMMAE_TINY)
    vol = brain_like()
    ref = ZNORM(Resize((32,) * 3, mode="trilinear")(vol.permute(1, 2, 0)[None]))
    torch.testing.assert_close(enc.preprocess(vol)[0], torch.as_tensor(ref), atol=1e-5, rtol=1e-5)


def test_blank_volume_gives_finite_inputs() -> None:
    blank = torch.zeros(20, 24, 28)
    cases = (("brainiac_scratch", V2_TINY), ("brainmvp_scratch", MVP_TINY), ("bmmae_scratch", BMMAE_TINY),
             ("brainiac_v1_scratch", {"img_size": 16}), ("medicalnet_scratch", {"arch": "resnet10", "img_size": 16}))
    for name, kw in cases:
        x = create_encoder(name, **kw).preprocess(blank)
        assert bool(torch.isfinite(x).all()) and float(x.abs().max()) == 0.0, name


# ----------------------------------------------------------------------------- axes
def test_axis_permutations_are_consistent() -> None:
    enc = create_encoder("brainiac_v1_scratch", img_size=(24, 28, 20))  # the (x, y, z) sizes of a 20x24x28 volume
    assert enc.input_perm == AXES_XYZ and enc.cka_layers == (1, 2, 3)
    vol = brain_like()
    assert enc.to_network_axes(vol).shape == (1, 1, 24, 28, 20)
    torch.testing.assert_close(enc.to_network_axes(vol)[0, 0], vol.permute(1, 2, 0))
    canon = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(1, 3, 4, 5, 2)  # (B, z, x, y, C)
    torch.testing.assert_close(enc.grid_to_canonical(canon.permute(0, 2, 3, 1, 4)), canon)


def test_resnet_patch_grid_is_returned_axial_first() -> None:
    enc = create_encoder("brainiac_v1_scratch", img_size=(32, 64, 96))  # network (x, y, z)
    x = torch.randn(1, 1, 32, 64, 96)
    with torch.no_grad():
        out = enc.forward_features(x, return_patch=True)
    assert out["patch"].shape == (1, 3, 1, 2, 2048)  # (z, x, y): 96/32, 32/32, 64/32
    torch.testing.assert_close(out["patch"].mean(dim=(1, 2, 3)), out["cls"], atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- registry rules
def test_registry_names_and_weight_rules(tmp_path) -> None:
    names = set(list_encoders())
    expected = {"brainiac", "brainiac_v1", "brainiac_simclr", "bmmae", "brainmvp", "medicalnet", "brainiac_scratch",
                "brainiac_v1_scratch", "bmmae_scratch", "brainmvp_scratch", "medicalnet_scratch"}
    assert expected <= names
    for name in ("brainiac", "brainiac_v1", "brainiac_simclr", "bmmae", "brainmvp", "medicalnet"):
        with pytest.raises(ConfigError, match="needs a"):
            create_encoder(name)
    dummy = tmp_path / "w.pth"
    dummy.write_bytes(b"x")
    with pytest.raises(ConfigError, match="takes no weights"):
        create_encoder("brainmvp_scratch", weights=str(dummy), **MVP_TINY)
    with pytest.raises(ConfigError):
        create_encoder("brainiac_scratch", protocol="other", **V2_TINY)
    with pytest.raises(ConfigError):
        create_encoder("brainiac_scratch", pool="cls", **V2_TINY)
    with pytest.raises(ConfigError):
        create_encoder("brainiac_scratch", img_size=40, **{k: v for k, v in V2_TINY.items() if k != "img_size"})
    with pytest.raises(ConfigError):
        create_encoder("bmmae_scratch", no_such_option=1, **BMMAE_TINY)


def test_scratch_controls_are_seeded_and_frozen() -> None:
    state = torch.random.get_rng_state()
    a = create_encoder("bmmae_scratch", seed=3, **BMMAE_TINY)
    b = create_encoder("bmmae_scratch", seed=3, **BMMAE_TINY)
    c = create_encoder("bmmae_scratch", seed=4, **BMMAE_TINY)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    sa, sb, sc = a.net.state_dict(), b.net.state_dict(), c.net.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["cls_token"], sc["cls_token"])
    assert a.frozen and not a.training and not any(p.requires_grad for p in a.parameters())
    a.train()
    assert not a.training  # frozen encoders stay in eval mode
    x = a.preprocess(brain_like())
    with torch.no_grad():
        assert torch.equal(a.forward_features(x)["cls"], a.forward_features(x)["cls"])  # deterministic
    assert a.describe()["input_kind"] == "volume3d"
