"""Image fingerprints survive re-saving, dtype and orientation changes and tell subjects apart."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import gaussian_filter

from brainfm.data.nifti import load_volume
from brainfm.errors import LeakageError
from brainfm.preprocess.fingerprint import check_scan_leakage, decode_fingerprint, image_fingerprint, match_fingerprints


def _brain(seed: int, shape=(48, 56, 44)) -> np.ndarray:
    """A head-like volume: an ellipsoid of smooth subject-specific texture on a zero background."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    radii = np.array([0.8, 0.85, 0.75]) * (1 + 0.05 * rng.standard_normal(3))
    inside = ((grid / radii[:, None, None, None]) ** 2).sum(0) < 1
    texture = gaussian_filter(rng.standard_normal(shape), 3.0)
    return np.where(inside, 400 + 2000 * texture / texture.std() * 0.1 + 300 * (grid[2] > 0), 0).clip(0)


def _save(path, data, affine, dtype, slope=1.0):
    img = nib.Nifti1Image((data / slope).round().astype(dtype) if dtype == np.int16 else data.astype(dtype), affine)
    if dtype == np.int16:
        img.header.set_slope_inter(slope, 0.0)
    nib.save(img, path)
    return load_volume(path)


def test_fingerprint_survives_resave_dtype_and_orientation(tmp_path):
    data = _brain(0)
    affine = np.diag([1.0, 1.0, 1.2, 1.0])
    ref = image_fingerprint(_save(tmp_path / "f32.nii.gz", data, affine, np.float32).data)
    as_int16 = image_fingerprint(_save(tmp_path / "i16.nii.gz", data, affine, np.int16, slope=0.25).data)
    flip = affine.copy()
    flip[0, 0], flip[0, 3] = -1.0, data.shape[0] - 1.0  # x stored right-to-left: the same world image
    flipped = image_fingerprint(_save(tmp_path / "flip.nii.gz", data[::-1], flip, np.float32).data)
    padded = image_fingerprint(np.pad(data, 6))  # extra background (another crop of the same scan)
    copies = pd.DataFrame({"path": ["int16", "flipped", "padded"], "fingerprint": [as_int16, flipped, padded]})
    # a quantised cell may tip over a level boundary, so "equal" is: within one level everywhere
    for fp in copies["fingerprint"]:
        assert np.abs(decode_fingerprint(fp).astype(int) - decode_fingerprint(ref)).max() <= 1
    matches = match_fingerprints(pd.DataFrame({"path": ["float32"], "fingerprint": [ref]}), copies)
    assert sorted(matches["path_b"]) == ["flipped", "int16", "padded"]


def test_fingerprints_differ_across_subjects():
    fps = [image_fingerprint(_brain(s)) for s in range(6)]
    frame = pd.DataFrame({"path": [f"s{i}" for i in range(6)], "fingerprint": fps})
    assert len(set(fps)) == 6
    matches = match_fingerprints(frame, frame)
    assert sorted(zip(matches["path_a"], matches["path_b"])) == [(f"s{i}", f"s{i}") for i in range(6)]


def test_a_test_scan_in_the_pretraining_corpus_stops_the_run_naming_both_files(tmp_path):
    data = _brain(3)
    affine = np.eye(4)
    copy_a = _save(tmp_path / "UPENN-GBM-00042_T1.nii.gz", data, affine, np.float32)
    copy_b = _save(tmp_path / "BraTS-GLI-00042-000-t1n.nii.gz", data, affine, np.int16, slope=0.5)
    test = pd.DataFrame({"path": [copy_a.path], "fingerprint": [image_fingerprint(copy_a.data)]})
    pre = pd.DataFrame({"path": [copy_b.path, "other.nii.gz"],
                        "fingerprint": [image_fingerprint(copy_b.data), image_fingerprint(_brain(4))]})
    with pytest.raises(LeakageError, match="UPENN-GBM-00042_T1.nii.gz == .*BraTS-GLI-00042-000-t1n.nii.gz"):
        check_scan_leakage(test, pre, "task survival_1y")
    check_scan_leakage(test, pre.iloc[1:], "task survival_1y")  # no shared scan: no error


def test_scan_leakage_step_stops_a_run_whose_test_scan_is_in_another_collection(tmp_path, proto, make_dataset):
    """Two collections hold the same scans under other names, dtype and axis order: the step names both files."""
    import json

    from brainfm.config import TaskSpec
    from brainfm.preprocess.pipeline import preprocess_dataset
    from brainfm.tasks.runs import scan_leakage

    man = make_dataset(tmp_path / "task", n=6)
    man["dx"] = [0, 1] * 3
    man.drop(columns="mask_path").to_parquet(tmp_path / "task" / "manifest.parquet")
    preprocess_dataset(man, tmp_path / "task", tmp_path / "pp_task", protocol=proto, products=("downstream",))
    fresh = make_dataset(tmp_path / "other", n=3, seed=9)
    fresh["dataset"] = "other"
    preprocess_dataset(fresh, tmp_path / "other", tmp_path / "pp_other", protocol=proto, products=("pretrain",))
    copies = tmp_path / "copies"
    copies.mkdir()
    rows = []
    for r in man.itertuples():  # every task scan re-saved elsewhere: int16 with a slope, x axis reversed
        img = nib.load(tmp_path / "task" / r.path)
        data, aff = np.asarray(img.dataobj, dtype=np.float64), img.affine.copy()
        flipped = aff @ np.array([[-1, 0, 0, data.shape[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
        _save(copies / f"GLI-{r.subject}.nii.gz", data[::-1], flipped, np.int16, slope=0.5)
        rows.append({**r._asdict(), "dataset": "gli", "subject": f"GLI-{r.subject}", "path": f"GLI-{r.subject}.nii.gz"})
    gli = pd.DataFrame(rows).drop(columns=["Index", "mask_path", "dx"])
    preprocess_dataset(gli, copies, tmp_path / "pp_gli", protocol=proto, products=("pretrain",))

    task = TaskSpec.from_config("dx", {"dataset": "task", "kind": "classification", "target": "dx", "classes": [0, 1],
                                       "split": {"test_fraction": 0.34}})
    out = tmp_path / "scan_leakage.json"
    manifest = tmp_path / "task" / "manifest.parquet"
    report = tmp_path / "pp_task" / "report.json"
    record = scan_leakage(task, manifest, report, [tmp_path / "pp_other" / "report.json"], out)
    assert json.loads(out.read_text()) == record and record["n_test_scans"] == 2 and record["matches"] == 0
    out.unlink()
    with pytest.raises(LeakageError, match=r"task dx: test scans identical to pretraining scans.*sub\d\.nii\.gz == "
                                           r".*copies/GLI-sub\d\.nii\.gz"):
        scan_leakage(task, manifest, report, [tmp_path / "pp_other" / "report.json",
                                              tmp_path / "pp_gli" / "report.json"], out)
    assert not out.exists()


def test_a_damaged_fingerprint_file_is_named(tmp_path):
    from brainfm.atomic import write_parquet
    from brainfm.errors import InputError
    from brainfm.preprocess.fingerprint import read_fingerprints

    good, short = tmp_path / "a" / "fingerprints.parquet", tmp_path / "b" / "fingerprints.parquet"
    write_parquet(good, pd.DataFrame({"path": ["x.nii.gz"], "fingerprint": ["00ff"]}))
    write_parquet(short, pd.DataFrame({"path": ["y.nii.gz"]}))
    assert read_fingerprints([good])["fingerprint"].tolist() == ["00ff"]
    with pytest.raises(InputError, match=r"b/fingerprints.parquet: image fingerprints lacks column\(s\) \['fingerprint'\]"):
        read_fingerprints([good, short])
    short.write_bytes(good.read_bytes()[:-30])
    with pytest.raises(InputError, match="b/fingerprints.parquet: cannot read image fingerprints"):
        read_fingerprints([good, short])
