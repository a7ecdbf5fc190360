"""Supp. Table 5 from the registry's label maps; Fig. 2 from a prepared benchmark's cases and jobs' predictions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainfm.atomic import write_parquet
from brainfm.data.datasets.labelmap import label_map_for
from brainfm.errors import InputError
from brainfm.report.segmentation import _panel_data, choose_cases, segmentation_figure, segmentation_labels

REPO = Path(__file__).resolve().parents[2]


def test_label_table_comes_from_each_registry_entry(tmp_path):
    table = segmentation_labels({"BraTS2021": "brats2021", "BraTS2023-MET": "brats2023_mets"},
                                tmp_path / "labels.md")
    rows = {(r.Benchmark, r.Region): r for r in table.itertuples()}
    assert [r for (b, r) in rows if b == "BraTS2021"] == ["WT", "TC", "ET"]
    # the same regions from different raw codings: ET is 4 in BraTS 2021, 3 from BraTS 2023 on
    assert rows[("BraTS2021", "ET")]._3.startswith("4 (") and rows[("BraTS2023-MET", "ET")]._3.startswith("3 (")
    for bench, entry in (("BraTS2021", "brats2021"), ("BraTS2023-MET", "brats2023_mets")):
        for region in label_map_for(entry).regions:
            assert rows[(bench, region.name)]._3.count("(") == len(region.labels)
    assert all((tmp_path / f"labels.{s}").is_file() for s in ("md", "csv", "tex"))


def test_report_module_imports_without_torch():
    code = "import sys, brainfm.report.segmentation; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _benchmark(root: Path, n: int = 3) -> tuple[Path, pd.DataFrame]:
    """A prepared benchmark's raw folder (cases.parquet, dataset.json) with nested spherical tumours."""
    raw = root / "nnUNet_raw" / "Dataset001_toy"
    raw.mkdir(parents=True)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    zz, yy, xx = np.indices((20, 20, 16))
    rows = []
    for i in range(n):
        radius = 3 + i  # case i has the i-th smallest tumour
        r = np.sqrt((zz - 10) ** 2 + (yy - 10) ** 2 + (xx - 8) ** 2)
        mask = np.zeros(r.shape, np.uint8)
        mask[r < radius] = 2
        mask[r < radius - 1] = 1
        mask[r < radius - 2] = 4
        mpath, ipath = root / f"c{i}_seg.nii.gz", root / f"c{i}_flair.nii.gz"
        nib.save(nib.Nifti1Image(mask, affine), str(mpath))
        nib.save(nib.Nifti1Image((100 + 50 * (mask > 0)).astype(np.float32), affine), str(ipath))
        rows.append({"case_id": f"c{i}", "subject": f"c{i}", "session": "1", "split": "test", "mask": str(mpath),
                     "image_FLAIR": str(ipath)})
    cases = pd.DataFrame(rows)
    write_parquet(raw / "cases.parquet", cases)
    lm = label_map_for("brats2021")
    spec = {"labels": [{"value": x.value, "name": x.name} for x in lm.labels],
            "regions": [{"name": g.name, "labels": list(g.labels)} for g in lm.regions], "source": "toy"}
    (raw / "dataset.json").write_text(json.dumps({"brainfm": {"label_map": spec}}))
    (root / "prepared.json").write_text("{}")
    return root / "prepared.json", cases


def _job(root: Path, cases: pd.DataFrame, shrink: int) -> Path:
    """A job folder: nnU-Net-coded predictions (regions eroded by ``shrink`` voxels) and a Dice table."""
    lm = label_map_for("brats2021")
    rows = []
    for c in cases.itertuples():
        img = nib.load(c.mask)
        coded = lm.to_nnunet(np.asanyarray(img.dataobj))
        if shrink:
            coded = np.where(np.roll(coded, shrink, axis=0) > 0, coded, 0).astype(np.uint8)
        (root / "predictions").mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(coded, img.affine), str(root / "predictions" / f"{c.case_id}.nii.gz"))
        for region, m in lm.raw_regions(np.asanyarray(img.dataobj)).items():
            rows.append({"case_id": c.case_id, "region": region, "gt_voxels": int(m.sum()), "dice": 0.5})
    write_parquet(root / "dice.parquet", pd.DataFrame(rows))
    return root


def test_cases_are_the_largest_tumours_and_the_slice_shows_them(tmp_path):
    marker, cases = _benchmark(tmp_path / "bench")
    job = _job(tmp_path / "job_a", cases, shrink=0)
    dice = pd.read_parquet(job / "dice.parquet")
    assert choose_cases(dice, 2) == ["c2", "c1"]
    from brainfm.segmentation.raw_dataset import benchmark_cases

    table, lm = benchmark_cases(marker.parent)
    image, gt, preds = _panel_data(table, lm, "c2", {"a": job / "predictions" / "c2.nii.gz"})
    assert image.shape == gt["WT"].shape == (20, 20)
    # the chosen slice is the one of largest whole-tumour area, and an exact prediction matches it
    whole = np.asanyarray(nib.load(table.set_index("case_id").loc["c2", "mask"]).dataobj) > 0
    assert gt["WT"].sum() == whole.sum(axis=(0, 1)).max() > 0
    for region in ("WT", "TC", "ET"):
        np.testing.assert_array_equal(preds["a"][region], gt[region])
    assert gt["ET"].sum() < gt["TC"].sum() < gt["WT"].sum()


def test_figure_has_a_row_per_case_and_a_column_per_backbone(tmp_path):
    marker, cases = _benchmark(tmp_path / "bench")
    runs = {"toy": {"vit_random": _job(tmp_path / "job_b", cases, 1), "braindino": _job(tmp_path / "job_a", cases, 0)}}
    written = segmentation_figure({"toy": marker}, runs, tmp_path / "fig2.png", reference="braindino", n_cases=2)
    assert [p.suffix for p in written] == [".png", ".pdf"] and written[0].stat().st_size > 1000
    (tmp_path / "job_b" / "predictions" / "c2.nii.gz").unlink()
    with pytest.raises(InputError, match="no prediction of case c2 by vit_random"):
        segmentation_figure({"toy": marker}, runs, tmp_path / "again.png", reference="braindino")
