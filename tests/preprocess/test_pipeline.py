"""preprocess_dataset end to end on small synthetic NIfTIs: protocol numbers, quarantine, resume."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

import brainfm.preprocess.pipeline as pipe
from brainfm.errors import ConfigError, InputError
from brainfm.preprocess.pipeline import preprocess_dataset, projected_store_bytes, resolve_protocol
from brainfm.preprocess.store import ShardedStore

CUBE = 24  # = the conftest protocol's cube


def _reference_cube(path: Path, cube: int, clip=(0.5, 99.5)) -> np.ndarray:
    """Independent implementation of §4.1.2 with nibabel + scipy (float64)."""
    x = nib.as_closest_canonical(nib.load(str(path))).get_fdata()
    nz = np.argwhere(x != 0)
    lo, hi = nz.min(0), nz.max(0) + 1
    c = x[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    c = ndimage.zoom(c, [cube / s for s in c.shape], order=1, grid_mode=True, mode="nearest")
    fg = c != 0
    v = np.clip(c[fg], *np.percentile(c[fg], clip))
    out = np.zeros_like(c)
    out[fg] = (v - v.mean()) / v.std()
    return out


def test_protocol_matches_an_independent_reference(tmp_path, proto, make_dataset):
    man = make_dataset(tmp_path / "data", n=2)
    proto = {**proto, "pretrain_slices": {"n": CUBE, "mu": 12, "sigma": 5}}  # all slices: the whole cube
    rep = preprocess_dataset(man, tmp_path / "data", tmp_path / "out", protocol=proto)
    assert rep["n_processed"] == 2 and rep["n_quarantined"] == 0
    slices = ShardedStore(tmp_path / "out" / "pretrain")
    down = ShardedStore(tmp_path / "out" / "downstream")
    masks = ShardedStore(tmp_path / "out" / "downstream_masks")
    assert slices.item_shape == (CUBE, CUBE) and down.item_shape == (12, 20, 20) == masks.item_shape
    for i in range(2):
        sub = f"sub{i}"
        ref = _reference_cube(tmp_path / "data" / f"{sub}.nii.gz", CUBE)
        rows = np.flatnonzero(slices.index["subject"] == sub)
        assert list(slices.index["slice_index"].iloc[rows]) == list(range(CUBE))
        cube = np.moveaxis(slices.read_many(rows), 0, 2)  # stored (D, H, W) -> (x, y, z)
        np.testing.assert_allclose(cube, ref, atol=4e-3 * np.abs(ref).max())
        fg = cube != 0
        assert abs(cube[fg].mean()) < 2e-3 and abs(cube[fg].std() - 1) < 2e-3  # z-score on the foreground
        # downstream: (D, H, W) = (12, 20, 20), uniform axial positions of the normalised cube
        ref_down = np.moveaxis(ndimage.zoom(ref, [20 / CUBE, 20 / CUBE, 12 / CUBE], order=1, grid_mode=True,
                                            mode="nearest"), 2, 0)
        np.testing.assert_allclose(down.get(subject=sub), ref_down, atol=4e-3 * np.abs(ref).max())
        # the lesion label lands on the bright lesion of the image
        lab, img = masks.get(subject=sub), down.get(subject=sub)
        assert set(np.unique(lab)) == {0.0, 1.0}
        assert np.median(img[lab == 1]) > np.percentile(img[(lab == 0) & (img != 0)], 90)
    assert masks.index[["subject"]].equals(down.index[["subject"]])
    meta = json.loads((tmp_path / "out" / "downstream" / "meta.json").read_text())
    assert meta["protocol"]["cube"] == CUBE and meta["protocol"]["skull_strip"] == "none"


def test_pretrain_slices_blank_flags_and_report(tmp_path, proto, make_dataset):
    man = make_dataset(tmp_path / "data", n=3)
    rep = preprocess_dataset(man, tmp_path / "data", tmp_path / "out", protocol=proto, products=("pretrain",))
    st = ShardedStore(tmp_path / "out" / "pretrain")
    assert len(st) == 3 * 8 and not (tmp_path / "out" / "downstream").exists()
    for sub, g in st.index.groupby("subject"):
        assert len(g) == 8 and g["slice_index"].is_unique and g["slice_index"].is_monotonic_increasing
    for j in range(len(st)):
        frac = np.count_nonzero(st[j]) / st[j].size
        assert bool(st.index["blank"].iloc[j]) == (frac < 0.05)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report == json.loads(json.dumps(rep))
    assert report["n_images"] == 3 and report["stores"]["pretrain"]["n_items"] == 24
    assert report["n_slices_sampled"] == 24 and report["protocol"] == resolve_protocol(proto)
    assert report["seconds"] > 0 and report["seconds_per_volume"] > 0


def _bad_inputs(root: Path, man: pd.DataFrame) -> pd.DataFrame:
    rows = []

    def add(name, path, mask=""):
        rows.append({"dataset": "toy", "subject": name, "session": "0", "modality": "T1", "path": path,
                     "mask_path": mask, "site": "a", "split": ""})

    add("missing", "nope.nii.gz")
    raw = (root / "sub0.nii.gz").read_bytes()
    (root / "cut.nii.gz").write_bytes(raw[: len(raw) // 2])
    add("truncated", "cut.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((20, 20), np.float32), np.eye(4)), str(root / "flat.nii.gz"))
    add("flat", "flat.nii.gz")
    src = nib.load(str(root / "sub1.nii.gz"))
    nan = np.asarray(src.dataobj).copy()
    nan[5, 5, 5] = np.nan
    nib.save(nib.Nifti1Image(nan, src.affine), str(root / "nan.nii.gz"))
    add("nanvox", "nan.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 20), np.float32), np.eye(4)), str(root / "zero.nii.gz"))
    add("zero", "zero.nii.gz")
    add("maskgrid", "sub0.nii.gz", "sub1_seg.nii.gz")  # label map of another grid
    return pd.concat([man.iloc[:2], pd.DataFrame(rows), man.iloc[2:]], ignore_index=True)


def test_quarantine_keeps_going(tmp_path, proto, make_dataset):
    man = _bad_inputs(tmp_path / "data", make_dataset(tmp_path / "data", n=4))
    rep = preprocess_dataset(man, tmp_path / "data", tmp_path / "out", protocol=proto)
    q = pd.read_csv(tmp_path / "out" / "quarantine.csv", dtype=str, keep_default_na=False)
    assert list(q.columns) == ["path", "dataset", "subject", "session", "modality", "reason"]
    reasons = dict(zip(q["subject"], q["reason"]))
    assert set(reasons) == {"missing", "truncated", "flat", "nanvox", "zero", "maskgrid"}
    assert "does not exist" in reasons["missing"] and "truncated" in reasons["truncated"]
    assert "2D" in reasons["flat"] and "NaN" in reasons["nanvox"] and "all-zero" in reasons["zero"]
    assert "sub1_seg.nii.gz" in reasons["maskgrid"] and "grid" in reasons["maskgrid"]
    for _, r in q.iterrows():
        assert r["path"] in r["reason"] or r["subject"] == "maskgrid"
    assert rep["n_quarantined"] == 6 and rep["n_processed"] == 4
    down = ShardedStore(tmp_path / "out" / "downstream")
    assert list(down.index["subject"]) == ["sub0", "sub1", "sub2", "sub3"]
    assert len(ShardedStore(tmp_path / "out" / "pretrain")) == 4 * 8


def test_all_quarantined_is_an_error(tmp_path, proto, make_dataset):
    man = _bad_inputs(tmp_path / "data", make_dataset(tmp_path / "data", n=2)).iloc[2:7]  # the five unreadable images
    with pytest.raises(InputError, match="all 5 image"):
        preprocess_dataset(man, tmp_path / "data", tmp_path / "out", protocol=proto)
    assert (tmp_path / "out" / "quarantine.csv").exists() and not (tmp_path / "out" / "report.json").exists()


def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path, monkeypatch, proto, make_dataset,
                                                         assert_stores_equal):
    man = make_dataset(tmp_path / "data", n=5)
    preprocess_dataset(man, tmp_path / "data", tmp_path / "ref", protocol=proto)
    real = pipe._run_row
    calls = {"n": 0}

    def killed_at_fourth(task):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(pipe, "_run_row", killed_at_fourth)
    with pytest.raises(KeyboardInterrupt):
        preprocess_dataset(man, tmp_path / "data", tmp_path / "out", protocol=proto)
    monkeypatch.setattr(pipe, "_run_row", real)
    assert not (tmp_path / "out" / "report.json").exists()
    with pytest.raises(InputError, match="incomplete"):
        ShardedStore(tmp_path / "out" / "downstream")
    # 3 volumes were processed: downstream shards hold 2, the slice store 24 = 4 shards of 6 slices
    idx = pd.read_parquet(tmp_path / "out" / "pretrain" / "index.parquet")
    assert len(idx) == 24 and len(pd.read_parquet(tmp_path / "out" / "downstream" / "index.parquet")) == 2
    rep = preprocess_dataset(man, tmp_path / "data", tmp_path / "out", protocol=proto)
    assert rep["n_resumed"] == 2 and rep["n_processed"] == 3
    assert_stores_equal(tmp_path / "out", tmp_path / "ref")
    # one image fingerprint per volume, the same whether or not the run was interrupted
    fps = pd.read_parquet(tmp_path / "out" / "fingerprints.parquet")
    pd.testing.assert_frame_equal(fps, pd.read_parquet(tmp_path / "ref" / "fingerprints.parquet"))
    assert len(fps) == len(man) == rep["fingerprints"]["n_items"] and fps["fingerprint"].nunique() == len(man)


def test_partially_stored_volume_gets_only_its_missing_slices(tmp_path, monkeypatch, proto, make_dataset,
                                                              assert_stores_equal):
    man = make_dataset(tmp_path / "data", n=3)
    proto = {**proto, "shard_size_slices": 5}  # 8 slices per volume: shard boundaries split volumes
    preprocess_dataset(man, tmp_path / "data", tmp_path / "ref", protocol=proto, products=("pretrain",))
    real = pipe._run_row
    calls = {"n": 0}

    def killed_at_third(task):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(pipe, "_run_row", killed_at_third)
    with pytest.raises(KeyboardInterrupt):
        preprocess_dataset(man, tmp_path / "data", tmp_path / "out", protocol=proto, products=("pretrain",))
    monkeypatch.setattr(pipe, "_run_row", real)
    idx = pd.read_parquet(tmp_path / "out" / "pretrain" / "index.parquet")
    assert len(idx) == 15 and (idx["subject"] == "sub1").sum() == 7  # sub1 has 7 of its 8 slices
    rep = preprocess_dataset(man, tmp_path / "data", tmp_path / "out", protocol=proto, products=("pretrain",))
    assert rep["n_resumed"] == 1 and rep["n_processed"] == 2
    assert_stores_equal(tmp_path / "out", tmp_path / "ref", names=("pretrain",))


def test_rerun_after_success_changes_nothing_and_new_protocol_rebuilds(tmp_path, proto, make_dataset,
                                                                      assert_stores_equal):
    man = make_dataset(tmp_path / "data", n=3)
    preprocess_dataset(man, tmp_path / "data", tmp_path / "ref", protocol=proto)
    preprocess_dataset(man, tmp_path / "data", tmp_path / "out", protocol=proto)
    rep = preprocess_dataset(man, tmp_path / "data", tmp_path / "out", protocol=proto)
    assert rep["n_resumed"] == 3 and rep["n_processed"] == 0 and rep["seconds_per_volume"] is None
    assert_stores_equal(tmp_path / "out", tmp_path / "ref")
    rep = preprocess_dataset(man, tmp_path / "data", tmp_path / "out", protocol={**proto, "cube": 16,
                             "pretrain_slices": {"n": 4, "mu": 8, "sigma": 3}})
    assert rep["n_processed"] == 3 and ShardedStore(tmp_path / "out" / "pretrain").item_shape == (16, 16)


def test_perturbation_is_applied_before_preprocessing(tmp_path, proto, make_dataset, assert_stores_equal):
    man = make_dataset(tmp_path / "data", n=2)
    kw = {"protocol": proto, "products": ("downstream",)}
    preprocess_dataset(man, tmp_path / "data", tmp_path / "clean", **kw)
    preprocess_dataset(man, tmp_path / "data", tmp_path / "gamma1", perturbation={"kind": "gamma", "severity": 1.0},
                       **kw)
    assert_stores_equal(tmp_path / "clean", tmp_path / "gamma1", names=("downstream", "downstream_masks"))
    rep = preprocess_dataset(man, tmp_path / "data", tmp_path / "gibbs", perturbation=("gibbs", 0.4), **kw)
    assert rep["perturbation"]["kind"] == "gibbs" and rep["perturbation"]["severity"] == 0.4
    clean, gibbs = ShardedStore(tmp_path / "clean" / "downstream"), ShardedStore(tmp_path / "gibbs" / "downstream")
    assert gibbs.protocol["perturbation"]["kind"] == "gibbs"
    for i in range(2):
        a, b = clean[i], gibbs[i]
        assert np.abs(a - b).mean() > 0.02
        assert np.count_nonzero(b) == pytest.approx(np.count_nonzero(a), rel=0.05)  # background stays 0
    with pytest.raises(ConfigError):
        preprocess_dataset(man, tmp_path / "data", tmp_path / "x", perturbation={"kind": "motion", "severity": 1},
                           **kw)


def test_configuration_errors(tmp_path, proto, make_dataset):
    man = make_dataset(tmp_path / "data", n=1)
    with pytest.raises(ConfigError, match="unknown key"):
        resolve_protocol({"cubes": 3})
    with pytest.raises(ConfigError, match="pretrain_slices.n=128"):
        resolve_protocol({"cube": 64})
    with pytest.raises(ConfigError, match="clip_percentiles"):
        resolve_protocol({"clip_percentiles": [99, 1]})
    assert resolve_protocol(None)["pretrain_slices"] == {"n": 128, "mu": 128.0, "sigma": 50.0}
    with pytest.raises(ConfigError, match="products"):
        preprocess_dataset(man, tmp_path / "data", tmp_path / "o", protocol=proto, products=("features",))
    with pytest.raises(ConfigError, match="skull_strip"):
        preprocess_dataset(man, tmp_path / "data", tmp_path / "o", protocol=proto, skull_strip="bet2")


def test_projected_store_size_at_paper_scale():
    b = projected_store_bytes(51_000)
    assert b["downstream"] == 51_000 * 128 * 256 * 256 * 2 and b["pretrain"] == 51_000 * 128 * 256 * 256 * 2


def test_images_dropped_from_the_manifest_are_not_kept(tmp_path, proto, make_dataset, assert_stores_equal):
    man = make_dataset(tmp_path / "data", n=3)
    preprocess_dataset(man, tmp_path / "data", tmp_path / "out", protocol=proto)
    fewer = man.iloc[1:].reset_index(drop=True)
    rep = preprocess_dataset(fewer, tmp_path / "data", tmp_path / "out", protocol=proto)
    preprocess_dataset(fewer, tmp_path / "data", tmp_path / "ref", protocol=proto)
    assert rep["n_processed"] == 2 and list(ShardedStore(tmp_path / "out" / "downstream").index["subject"]) == [
        "sub1", "sub2"]
    assert_stores_equal(tmp_path / "out", tmp_path / "ref")


def test_regenerated_images_with_the_same_keys_are_preprocessed_again(tmp_path, proto, make_dataset,
                                                                     assert_stores_equal):
    # a phantom dataset regenerated with other options keeps its subjects and file names
    man = make_dataset(tmp_path / "data", n=2, seed=0)
    preprocess_dataset(man, tmp_path / "data", tmp_path / "out", protocol=proto)
    man = make_dataset(tmp_path / "data", n=2, seed=1)
    rep = preprocess_dataset(man, tmp_path / "data", tmp_path / "out", protocol=proto)
    assert rep["n_resumed"] == 0 and rep["n_processed"] == 2
    preprocess_dataset(man, tmp_path / "data", tmp_path / "ref", protocol=proto)
    assert_stores_equal(tmp_path / "out", tmp_path / "ref")
