"""Reference-point similarity maps (Fig. 6a): references from the data, maps, separation AUC, the steps."""

import numpy as np
import pandas as pd
import pytest

from brainfm.analysis.similarity import (pick_slice, reference_cell, reference_footprint, reference_pixel,
                                         separation_auc,
                                         similarity_map, token_map, token_similarity,
                                         similarity_maps, similarity_report, summarize_auc, tissue_masks)

GRID, H = (8, 8), 48


def _tissue():
    m = np.zeros((H, H), bool)
    m[12:30, 6:24] = True  # covers whole cells of the 8 x 8 grid (6 px per cell) and some partial ones
    brain = np.zeros((H, H), bool)
    brain[3:45, 3:45] = True
    return m, brain


def _cells(mask):
    from brainfm.analysis.similarity import _cell_cover

    return _cell_cover(mask, GRID)


def test_constant_distinct_tissue_tokens_separate_perfectly():
    rng = np.random.default_rng(0)
    tissue, brain = _tissue()
    tokens = rng.standard_normal((*GRID, 32))
    inside = _cells(tissue) >= 0.5
    tokens[inside] = rng.standard_normal(32) * 5  # one constant, distinct token for the tissue
    cell = reference_cell(reference_pixel(tissue), GRID, (H, H))
    assert inside[cell]
    sim = similarity_map(tokens, cell, (H, H))
    assert sim.shape == (H, H) and np.nanmax(sim) <= 1 + 1e-6
    scored = token_map(token_similarity(tokens, cell), (H, H))
    assert separation_auc(scored, tissue, brain, reference_footprint(cell, GRID, (H, H))) > 0.95


def test_noise_tokens_give_chance_separation():
    tissue, brain = _tissue()
    cell = reference_cell(reference_pixel(tissue), GRID, (H, H))
    foot = reference_footprint(cell, GRID, (H, H))
    assert foot.sum() == 6 * 6  # the reference token's own cell
    aucs = [separation_auc(token_map(token_similarity(np.random.default_rng(s).standard_normal((*GRID, 64)), cell),
                                     (H, H)), tissue, brain, foot) for s in range(40)]
    assert abs(np.mean(aucs) - 0.5) < 0.06


def test_reference_point_is_the_deepest_tissue_pixel_and_its_cell_follows_the_grid():
    m = np.zeros((H, H), bool)
    m[10:21, 30:41] = True  # an 11 x 11 square: its centre is deepest
    assert reference_pixel(m) == (15, 35)
    assert reference_pixel(np.zeros((H, H), bool)) is None
    assert reference_cell((15, 35), GRID, (H, H)) == (2, 5)  # 6-px cells
    assert reference_cell((15, 35), (3, 3), (H, H)) == (0, 2)  # the same pixel on a coarser grid


def test_tissue_classes_follow_the_contrast_and_the_tumour_mask():
    img = np.zeros((H, H))
    img[4:44, 4:44] = 1.0  # "grey matter"
    img[14:34, 14:34] = 1.6  # white matter (bright on T1)
    img[20:28, 20:28] = 0.4  # ventricle (dark on T1)
    tum = np.zeros((H, H), int)
    tum[5:11, 5:11] = 2  # oedema around
    tum[6:10, 6:10] = 1  # a core
    m = tissue_masks(img, tum, "T1")
    assert m["tumour"].sum() == 16 and m["brain"][5, 5]
    assert m["csf"][24, 24] and not m["csf"][16, 16] and m["white_matter"][16, 16]
    m2 = tissue_masks(img, None, "T2")  # reversed contrast: the brightest class is CSF
    assert m2["csf"][16, 16] and "tumour" not in m2
    assert set(tissue_masks(img, None, "FLAIR")) == {"brain"}
    assert pick_slice(np.stack([tum * 0, tum, tum * 0]), 3) == 1 and pick_slice(None, 12) == 6


def test_summary_ci_is_a_bootstrap_over_cases():
    f = pd.DataFrame({"backbone": "b", "reference": "csf", "auc": [0.6, 0.7, 0.8, np.nan, 0.9]})
    s = summarize_auc(f, n_boot=400, seed=1).iloc[0]
    assert s.n_cases == 4 and s.auc == pytest.approx(0.75)
    assert 0.6 <= s.ci_low < 0.75 < s.ci_high <= 0.9


def _store(tmp_path):
    from brainfm.preprocess.store import ShardWriter

    rng = np.random.default_rng(0)
    zz, yy, xx = np.mgrid[:6, :32, :32]
    vols, masks = tmp_path / "vol", tmp_path / "mask"
    with ShardWriter(vols, (6, 32, 32), "volume", {"t": 1}) as wv, ShardWriter(masks, (6, 32, 32), "volume",
                                                                                {"t": 1}) as wm:
        for s in range(3):
            brain = ((yy - 16) ** 2 + (xx - 16) ** 2) < 15 ** 2
            vol = np.where(brain, 1.0, 0.0) + 0.6 * ((yy >= 16) & (yy < 24) & (xx >= 3) & (xx < 16))  # WM
            vol = vol - 0.6 * ((yy >= 8) & (yy < 16) & (xx >= 16) & (xx < 24))  # CSF
            tum = (((yy - 20) ** 2 + (xx - 20) ** 2) < 30) & (zz == 2 + s % 2)
            vol = (vol + 0.8 * tum + 0.02 * rng.standard_normal(vol.shape)).astype(np.float32)
            key = {"dataset": "d", "subject": f"s{s}", "session": "0", "modality": "T1"}
            wv.add(key, vol)
            wm.add(key, tum.astype(np.uint8))
    return vols, masks


def test_similarity_steps_end_to_end(tmp_path):
    from brainfm.models import create_encoder

    vols, masks = _store(tmp_path)
    enc = create_encoder("vit_random", arch="vit_small_patch16_dinov3", embed_dim=32, depth=1, num_heads=2,
                         img_size=32, patch_size=8)
    out = tmp_path / "sim" / "vit.parquet"
    frame = similarity_maps(enc, "vit_random", vols, masks, out, modality="T1", n_cases=2)
    assert len(frame) == 6 and set(frame.reference) == {"tumour", "csf", "white_matter"}
    assert list(frame[frame.reference == "tumour"].slice) == [2, 3]
    assert frame.auc.between(0, 1).all()
    enc3d = create_encoder("medicalnet_scratch", arch="resnet10", img_size=32)
    frame3d = similarity_maps(enc3d, "medicalnet_scratch", vols, masks, tmp_path / "sim" / "r3d.parquet",
                              modality="T1", n_cases=1)
    assert frame3d.auc.notna().any()
    tidy, table, fig = tmp_path / "auc.parquet", tmp_path / "similarity.md", tmp_path / "similarity.png"
    summary = similarity_report([out, tmp_path / "sim" / "r3d.parquet"], tidy, table, fig, reference="vit_random",
                                n_boot=50)
    assert set(summary.backbone) == {"vit_random", "medicalnet_scratch"} and len(summary) == 6
    assert "tumour AUC" in table.read_text() and fig.with_suffix(".pdf").is_file()
