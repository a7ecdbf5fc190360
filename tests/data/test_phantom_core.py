"""Phantom cohort: template, fields, determinism, files, manifest, resume, splits and bad inputs.

Everything runs at a coarse 4 mm grid so the whole file takes seconds.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi
from scipy.interpolate import BSpline

from brainfm.data.manifest import read_manifest
from brainfm.data.phantom import PHANTOM_DATASETS, generate_dataset, load_template, render_session, \
    sample_cohort, sample_subject
from brainfm.data.phantom.deform import bspline_basis, nonzero_box, sample_grid, smooth_field
from brainfm.data.phantom.template import CHANNELS, TEMPLATE_VERSION, Template, clear_template_cache
from brainfm.errors import ConfigError

VS = 4.0


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("tplcache")


@pytest.fixture(scope="module")
def tpl(cache):
    return load_template(VS, cache)


# ----------------------------------------------------------------------------- template
def test_template_grid_and_tissue_maps(tpl):
    x, y, z = tpl.shape
    assert tpl.affine[0, 0] == tpl.affine[1, 1] == tpl.affine[2, 2] == VS
    # ICBM152 is 197 x 233 x 189 mm; the working grid covers the same field of view
    assert abs(x * VS - 197) <= VS and abs(y * VS - 233) <= VS and abs(z * VS - 189) <= VS
    assert nib.aff2axcodes(tpl.affine) == ("R", "A", "S")
    gm, wm, csf, brain = (tpl.channel(k) for k in ("gm", "wm", "csf", "brain"))
    assert set(np.unique(brain)) == {0.0, 1.0}
    inside = brain > 0
    np.testing.assert_allclose((gm + wm + csf)[inside], 1.0, atol=1e-5)
    assert (gm + wm + csf)[~inside].max() == 0.0
    for k in CHANNELS:
        a = tpl.channel(k)
        assert a.min() >= 0.0 and a.max() <= 1.0 + 1e-6, k
    assert (tpl.channel("vent") <= csf + 1e-6).all()
    # MNI origin (anterior commissure) lies inside the brain, the ventricles near the midline
    ac = np.round(tpl.mni_to_vox(np.zeros(3))).astype(int)
    assert brain[tuple(ac)] == 1
    vent_mni = tpl.mni_coords(tpl.channel("vent") > 0.3)
    assert vent_mni.shape[1] > 20 and abs(vent_mni[0].mean()) < 3.0 and vent_mni[0].std() < 15


def test_template_matches_nilearn_resampled_independently(tpl):
    """GM of the working grid equals nilearn's own resampling of the 1 mm GM map (up to smoothing)."""
    from nilearn import datasets, image

    gm1 = datasets.load_mni152_gm_template(resolution=1)
    ref = image.resample_img(image.smooth_img(gm1, VS), target_affine=tpl.affine, target_shape=tpl.shape,
                             interpolation="linear", force_resample=True, copy_header=True).get_fdata()
    ours = tpl.channel("gm")
    inside = tpl.channel("brain") > 0
    r = np.corrcoef(ours[inside], ref[inside])[0, 1]
    assert r > 0.9


def test_ventricle_field_points_into_the_ventricles(tpl):
    """Following the growth field from a voxel next to a ventricle lands on more ventricle."""
    vent = tpl.channel("vent")
    near = (ndi.binary_dilation(vent > 0.5, iterations=2) & (vent < 0.1))
    idx = np.argwhere(near)
    f = tpl.vfield[:3] + tpl.vfield[3:]
    steps = np.stack([f[a][tuple(idx.T)] for a in range(3)])  # mm per unit growth
    norm = np.linalg.norm(steps, axis=0)
    ok = norm > 0.05
    start = idx.T[:, ok].astype(float)
    end = start + 3.0 * steps[:, ok] / norm[ok] / VS  # 3 mm along the field (in voxels)
    before = ndi.map_coordinates(vent, start, order=1)
    after = ndi.map_coordinates(vent, end, order=1)
    assert (after > before).mean() > 0.9


def test_template_disk_cache_roundtrip(cache, tpl):
    files = list(cache.glob("icbm152_2009a_4mm_v*.npz"))
    assert len(files) == 1
    clear_template_cache()
    again = load_template(VS, cache)
    assert again is not tpl
    np.testing.assert_array_equal(again.maps, tpl.maps)
    np.testing.assert_array_equal(again.vfield, tpl.vfield)


def test_damaged_template_cache_is_rebuilt(tmp_path):
    clear_template_cache()
    bad = tmp_path / f"icbm152_2009a_8mm_v{TEMPLATE_VERSION}.npz"
    bad.write_bytes(b"not a zip file")
    tpl8 = load_template(8.0, tmp_path)
    assert tpl8.shape == (25, 29, 24)
    with np.load(bad) as z:  # replaced by a readable cache
        np.testing.assert_array_equal(z["maps"], tpl8.maps)


def test_bad_voxel_size():
    with pytest.raises(ConfigError, match="voxel_size"):
        load_template(0.1)


# ----------------------------------------------------------------------------- fields and resampling
def test_bspline_basis_matches_scipy():
    spacing = 5.0
    basis = bspline_basis(40, spacing)
    np.testing.assert_allclose(basis.sum(1), 1.0, atol=1e-12)  # partition of unity
    ref = BSpline.basis_element(np.arange(-2.0, 3.0), extrapolate=False)
    n_ctrl = basis.shape[1]
    pos = (40 - 1) / 2.0 + (np.arange(n_ctrl) - (n_ctrl - 1) / 2.0) * spacing
    t = (np.arange(40)[:, None] - pos[None, :]) / spacing
    expect = np.nan_to_num(ref(t.ravel())).reshape(t.shape)
    np.testing.assert_allclose(basis, expect, atol=1e-12)


def test_smooth_field_rms_and_smoothness():
    rng = np.random.default_rng(0)
    f = smooth_field(rng, (40, 44, 36), 6.0, n=8, std=2.0)
    assert f.shape == (8, 40, 44, 36) and f.dtype == np.float32
    assert 1.6 < float(np.sqrt((f**2).mean())) < 2.4
    lag1 = np.corrcoef(f[:, :-1].ravel(), f[:, 1:].ravel())[0, 1]
    assert lag1 > 0.95


def test_sample_grid_equals_scipy_trilinear():
    rng = np.random.default_rng(1)
    vol = rng.random((2, 9, 10, 11)).astype(np.float32)
    coords = rng.uniform(-1.5, 11.5, (3, 500))  # includes points outside the grid
    ours = sample_grid(vol, coords)
    ref = np.stack([ndi.map_coordinates(v, coords, order=1, mode="constant", cval=0.0) for v in vol])
    inside = ((coords >= 0) & (coords <= np.array([8, 9, 10])[:, None])).all(0)
    np.testing.assert_allclose(ours[:, inside], ref[:, inside], atol=1e-5)
    far = ((coords < -1) | (coords > np.array([9, 10, 11])[:, None])).any(0)
    assert np.all(ours[:, far] == 0)


def test_sample_grid_skipping_outside_the_nonzero_box_changes_no_sample():
    """Positions whose eight neighbours are zero are skipped, including ones exactly one voxel off the box."""
    rng = np.random.default_rng(2)
    vol = np.zeros((3, 12, 13, 14), dtype=np.float32)
    vol[:, 3:8, 4:10, 2:9] = rng.random((3, 5, 6, 7))
    box = nonzero_box(vol)
    assert [b.tolist() for b in box] == [[3, 4, 2], [7, 9, 8]]
    coords = rng.uniform(-2, 15, (3, 4000)).astype(np.float32)
    coords[:, :300] = np.round(coords[:, :300])  # on grid lines, e.g. at lo - 1 and hi + 1
    np.testing.assert_array_equal(sample_grid(vol, coords, box=box), sample_grid(vol, coords))
    assert nonzero_box(np.zeros((1, 2, 2, 2))) is None


# ----------------------------------------------------------------------------- determinism
def test_same_seed_identical_other_seed_different(tpl):
    a = sample_subject("phantom_tumor", 2, 7, tpl, 3)
    b = sample_subject("phantom_tumor", 2, 7, tpl, 3)
    c = sample_subject("phantom_tumor", 2, 8, tpl, 3)
    assert a.labels == b.labels and a.labels != c.labels
    ra, rb, rc = (render_session(s, 0, tpl) for s in (a, b, c))
    for m in ra.images:
        np.testing.assert_array_equal(ra.images[m], rb.images[m])
        assert not np.array_equal(ra.images[m], rc.images[m])
    np.testing.assert_array_equal(ra.mask, rb.mask)


def test_subjects_independent_of_cohort_size_and_order(cache):
    small = sample_cohort("phantom_adni", 3, seed=5, voxel_size=VS, cache_dir=cache)
    large = sample_cohort("phantom_adni", 6, seed=5, voxel_size=VS, cache_dir=cache)
    assert small == large[:3]


def test_labels_do_not_depend_on_voxel_size(tpl):
    """Lesion centres are drawn last from pre-drawn uniforms, so a coarser grid changes no label."""
    coarse = Template(2 * VS, tpl.affine @ np.diag([2.0, 2.0, 2.0, 1.0]), tpl.maps[:, ::2, ::2, ::2],
                      tpl.vfield[:, ::2, ::2, ::2], tpl.depth_mm[::2, ::2, ::2])
    for name in ("phantom_tumor", "phantom_stroke"):
        a = [sample_subject(name, i, 3, tpl, 3) for i in range(4)]
        b = [sample_subject(name, i, 3, coarse, 3) for i in range(4)]
        assert [s.labels for s in a] == [s.labels for s in b]
        assert [s.sessions for s in a] == [s.sessions for s in b]
        for x, y in zip(a, b):
            np.testing.assert_array_equal((x.tumor or x.stroke).axes_mm, (y.tumor or y.stroke).axes_mm)


def test_subject_ids_never_collide_between_datasets(tpl):
    prefixes = [d.prefix for d in PHANTOM_DATASETS.values()]
    ids = {name: {sample_subject(name, i, 0, tpl, 2).subject for i in range(3)} for name in PHANTOM_DATASETS}
    names = list(ids)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not ids[a] & ids[b]
    # no prefix is a prefix of another one followed by digits ("sub-AD" vs "sub-ADNI")
    for p in prefixes:
        assert not any(q != p and q.startswith(p) for q in prefixes)


# ----------------------------------------------------------------------------- files and manifest
@pytest.fixture(scope="module")
def tumor_dir(tmp_path_factory, cache):
    out = tmp_path_factory.mktemp("tumor")
    df = generate_dataset("phantom_tumor", out, 5, seed=1, voxel_size=VS, cache_dir=cache, progress=False)
    return out, df


def test_manifest_schema_and_files(tumor_dir):
    out, df = tumor_dir
    m = read_manifest(out / "manifest.parquet")  # the lead's validator: files exist, no leakage, schema
    assert list(m.columns[:7]) == ["dataset", "subject", "session", "modality", "path", "site", "split"]
    for col in ("mask_path", "survival_days", "event", "idh", "age", "sex"):
        assert col in m.columns
    assert set(m["modality"]) == {"T1", "T1c", "T2", "FLAIR"}
    assert len(m) == 5 * 4 and m["subject"].nunique() == 5
    assert set(m["split"]) <= {"train", "test"} and (m["split"] == "test").any()
    assert m["subject"].str.match(r"^sub-GLI\d{4}$").all()
    assert m["path"].str.endswith(".nii.gz").all() and not m["path"].str.startswith("/").any()
    t1c = m[m["modality"] == "T1c"]["path"].iloc[0]
    assert t1c.endswith("_ce-gd_T1w.nii.gz") and "/ses-01/anat/" in t1c
    assert m.groupby("subject")[["survival_days", "event", "idh", "age"]].nunique().max().max() == 1
    pd.testing.assert_frame_equal(m, df, check_dtype=False)
    parts = pd.read_csv(out / "participants.tsv", sep="\t")
    assert list(parts["participant_id"]) == sorted(m["subject"].unique())
    labels = pd.read_csv(out / "labels.csv")
    assert {"subject", "session", "survival_days", "event", "idh", "age", "sex"} <= set(labels.columns)
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "raw"


def test_nifti_conventions_and_brats_labels(tumor_dir):
    out, df = tumor_dir
    n_ring = 0
    for _, row in df[df["modality"] == "T1"].iterrows():
        img = nib.load(out / row["path"])
        assert img.get_data_dtype() == np.int16
        assert img.dataobj.slope > 0 and img.dataobj.inter == 0
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        np.testing.assert_allclose(np.abs(np.diag(img.affine)[:3]), VS)
        data = np.asarray(img.dataobj)
        corner = data[:3, :3, :3]
        assert (corner == 0).all() and data.min() >= 0  # skull-stripped: background exactly 0
        lab = np.asarray(nib.load(out / row["mask_path"]).dataobj)
        assert lab.dtype == np.uint8 and lab.shape == data.shape
        assert set(np.unique(lab)) <= {0, 1, 2, 3}
        wt, tc, et = lab > 0, np.isin(lab, (1, 3)), lab == 3
        assert tc.sum() > 0 and wt.sum() > tc.sum()
        assert not (et & ~tc).any() and not (tc & ~wt).any()
        assert (data[wt] > 0).all()  # the tumour lies inside the brain
        spec = sample_subject("phantom_tumor", int(row["subject"][-4:]) - 1, 1, load_template(VS), 3)
        assert spec.labels["idh"] == row["idh"]
        if spec.tumor.ring_et:
            assert et.sum() > 0  # enhancing phenotype (most wild-types): a ring of label 3
            n_ring += 1
        # oedema hugs the core: no oedema voxel is far from the tumour core
        if (lab == 2).any():
            assert ndi.distance_transform_edt(~tc, sampling=VS)[lab == 2].max() < 40.0
    assert n_ring > 0


def test_resume_only_rerenders_missing_subjects(tmp_path, cache):
    out = tmp_path / "ds"
    generate_dataset("phantom_stroke", out, 3, seed=2, voxel_size=VS, cache_dir=cache, progress=False)
    df = pd.read_parquet(out / "manifest.parquet")
    paths = [out / p for p in df["path"]] + [out / p for p in df["mask_path"]]
    before = {p: p.stat().st_mtime_ns for p in paths}
    data_before = np.asarray(nib.load(paths[1]).dataobj)
    paths[1].unlink()
    generate_dataset("phantom_stroke", out, 3, seed=2, voxel_size=VS, cache_dir=cache, progress=False)
    assert paths[1].exists()
    np.testing.assert_array_equal(np.asarray(nib.load(paths[1]).dataobj), data_before)
    untouched = [p for p in paths if df["subject"].iloc[1] not in p.name]
    assert untouched and all(p.stat().st_mtime_ns == before[p] for p in untouched)
    # other parameters: everything is rendered again (the new seed gives other images)
    generate_dataset("phantom_stroke", out, 3, seed=3, voxel_size=VS, cache_dir=cache, progress=False)
    assert all(p.stat().st_mtime_ns != before[p] for p in untouched)
    assert json.loads((out / "phantom.json").read_text())["seed"] == 3
    assert not list(out.rglob("*.tmp*"))


def test_parallel_equals_serial(tmp_path, cache):
    a = generate_dataset("phantom_brainage", tmp_path / "a", 2, seed=4, voxel_size=VS, cache_dir=cache,
                         n_jobs=1, progress=False)
    b = generate_dataset("phantom_brainage", tmp_path / "b", 2, seed=4, voxel_size=VS, cache_dir=cache,
                         n_jobs=2, progress=False)
    pd.testing.assert_frame_equal(a, b)
    for p in a["path"]:
        np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "a" / p).dataobj),
                                      np.asarray(nib.load(tmp_path / "b" / p).dataobj))


# ----------------------------------------------------------------------------- splits
def test_adni_split_is_left_to_the_task_and_visits_are_longitudinal(tmp_path, cache):
    df = generate_dataset("phantom_adni", tmp_path, 3, seed=0, voxel_size=VS, cache_dir=cache, progress=False,
                          visits=["sc", "m12"], visit_prob=1.0)
    assert (df["split"] == "").all()
    assert set(df["session"]) == {"ses-sc", "ses-m12"}
    for _, g in df.groupby("subject"):
        assert g["diagnosis"].nunique() == 1 and g["site"].nunique() == 1
        ages = g.set_index("session")["age"]
        assert ages["ses-m12"] == pytest.approx(ages["ses-sc"] + 1.0, abs=0.02)
    assert df["age"].between(55, 91).all()


def test_stratified_split_proportions(cache):
    from brainfm.data.phantom import assign_splits

    specs = sample_cohort("phantom_oasis", 40, seed=0, voxel_size=VS, cache_dir=cache)
    split = assign_splits(specs, 0, 0.25)
    test = [s for s in specs if split[s.subject] == "test"]
    assert len(test) == 10
    rate_all = np.mean([s.labels["demented"] for s in specs])
    rate_test = np.mean([s.labels["demented"] for s in test])
    assert abs(rate_test - rate_all) <= 0.1
    assert assign_splits(specs, 0, 0.25) == split and assign_splits(specs, 1, 0.25) != split
    pre = sample_cohort("phantom_pretrain", 4, seed=0, voxel_size=VS, cache_dir=cache)
    assert set(assign_splits(pre, 0, 0.25).values()) == {"train"}


# ----------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("kwargs,match", [
    ({"name": "phantom_nope"}, "unknown phantom dataset"),
    ({"n_subjects": 0}, "n_subjects"),
    ({"seed": -1}, "seed"),
    ({"test_fraction": 1.0}, "test_fraction"),
    ({"n_jobs": 0}, "n_jobs"),
    ({"colour": "blue"}, "unknown phantom option"),
    ({"modalities": ["T1", "DWI"]}, "modalities"),
    ({"name": "phantom_adni", "visits": ["m06"]}, "visits"),
    ({"name": "phantom_pretrain", "mix": [1, -1, 0, 0]}, "mix"),
    ({"name": "phantom_stroke", "dps_days": [365, 1]}, "dps_days"),
    ({"name": "phantom_stroke", "dps_days": [0, 30]}, "dps_days"),
    ({"name": "phantom_stroke", "dps_days": 30}, "dps_days"),
])
def test_bad_arguments_are_config_errors(tmp_path, kwargs, match):
    args = {"name": "phantom_tumor", "out_dir": tmp_path, "n_subjects": 2, "voxel_size": VS}
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        generate_dataset(**args)
    assert not (tmp_path / "manifest.parquet").exists()


def test_modalities_override(tmp_path, cache):
    df = generate_dataset("phantom_tumor", tmp_path, 2, seed=0, voxel_size=VS, cache_dir=cache, progress=False,
                          modalities=["FLAIR", "T1c"])
    assert set(df["modality"]) == {"T1c", "FLAIR"}
