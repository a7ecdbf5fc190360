"""Reference-point similarity maps on frozen patch tokens (paper Fig. 6a) and how well they separate tissue.

For one axial slice per case, a reference token is taken inside a tissue (tumour, CSF, white
matter) and its cosine similarity to every patch token of the slice is drawn, upsampled onto the
slice. The paper places the reference points by hand; here they are chosen from the data:

- **tumour**: the tumour core of the downstream mask store (BraTS labels other than oedema, 2;
  any label > 0 when a mask has no core, e.g. stroke lesions);
- **CSF / white matter**: a three-class intensity clustering (1-D k-means) of the brain outside
  the (dilated) tumour on the mapped image, ordered by the modality's contrast (T1/T1c: CSF
  darkest, white matter brightest; T2: the reverse). Phantom and real data are treated alike.
- **slice**: the stored axial slice with the largest tumour area (the middle slice without a mask);
- **reference point**: the tissue pixel deepest inside the tissue (largest distance to its
  boundary), the same pixel for every encoder as in the paper; each encoder's reference token is
  the token whose cell holds that pixel.

2D encoders see the slice itself; 3D encoders see the whole volume and the map comes from the
axial token plane nearest the slice (the first grid axis of a 3D encoder's patch tokens follows
the volume's axial axis, see :mod:`brainfm.models.base`).

Quantitative companion (not in the paper): the ROC AUC of the token similarity (each pixel
scored by the token of its cell, not the blended display map) against the tissue mask over the
brain voxels of the slice, per case, leaving out the reference token's own cell (similar by
construction); :func:`similarity_report` summarises it per
backbone and reference as the mean over cases with a percentile bootstrap CI over cases.

Steps: :func:`similarity_maps` (rule ``similarity_maps``, one backbone) and
:func:`similarity_report` (rule ``similarity_report``: figure, table, tidy AUCs).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainfm.errors import InputError

__all__ = ["REFERENCES", "tissue_masks", "pick_slice", "reference_pixel", "reference_cell", "token_similarity", "similarity_map", "token_map",
           "reference_footprint", "separation_auc",
           "slice_tokens", "similarity_maps", "summarize_auc", "similarity_report"]

REFERENCES = ("tumour", "csf", "white_matter")
# position of CSF and white matter in the ascending intensity order of three brain classes
_CONTRAST = {"T1": ("csf", "white_matter"), "T1c": ("csf", "white_matter"), "T2": ("white_matter", "csf")}


# ----------------------------------------------------------------------------- references from the data
def _brain(img: np.ndarray) -> np.ndarray:
    lo, hi = np.quantile(img, [0.01, 0.99])
    return img > lo + 0.05 * (hi - lo)


def _kmeans_1d(values: np.ndarray, k: int = 3, iters: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Labels (0 = darkest) and centres of a 1-D k-means started at evenly spaced quantiles."""
    centres = np.quantile(values, (np.arange(k) + 0.5) / k)
    for _ in range(iters):
        lab = np.abs(values[:, None] - centres[None]).argmin(1)
        new = np.array([values[lab == j].mean() if np.any(lab == j) else centres[j] for j in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    order = np.argsort(centres)
    rank = np.empty(k, int)
    rank[order] = np.arange(k)
    return rank[lab], centres[order]


def tissue_masks(img: np.ndarray, tumour: np.ndarray | None, modality: str) -> dict[str, np.ndarray]:
    """Boolean (H, W) masks of the references available on one slice, plus ``brain``.

    ``tumour`` is the slice's label map (None: no mask store). CSF and white matter need a
    modality with a known tissue contrast (T1, T1c, T2).
    """
    from scipy import ndimage as ndi

    img = np.asarray(img, dtype=np.float64)
    brain = _brain(img)
    out: dict[str, np.ndarray] = {"brain": brain}
    lab = None if tumour is None else np.asarray(tumour)
    tum = np.zeros_like(brain) if lab is None else lab > 0
    if lab is not None and tum.any():
        core = tum & (lab != 2)  # BraTS: 2 is oedema; the core is necrosis + enhancing tumour
        out["tumour"] = core if core.any() else tum
        brain = brain | tum
        out["brain"] = brain
    if modality in _CONTRAST:
        healthy = brain & ~ndi.binary_dilation(tum, iterations=2)
        if healthy.sum() >= 30:
            lab, _ = _kmeans_1d(img[healthy])
            classes = np.full(img.shape, -1)
            classes[healthy] = lab
            low, high = _CONTRAST[modality]
            out[low] = classes == 0
            out[high] = classes == 2
    return out


def pick_slice(mask_volume: np.ndarray | None, depth: int) -> int:
    """Axial slice with the largest tumour area; the middle one without a mask or tumour."""
    if mask_volume is None:
        return depth // 2
    area = (np.asarray(mask_volume) > 0).reshape(mask_volume.shape[0], -1).sum(1)
    return int(area.argmax()) if area.max() > 0 else depth // 2


def _cells_of(shape: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """(H, W) flat index of the token cell each pixel falls in (cells split the slice evenly)."""
    h, w = shape
    gh, gw = int(grid[0]), int(grid[1])
    ys = np.minimum((np.arange(h) * gh) // h, gh - 1)
    xs = np.minimum((np.arange(w) * gw) // w, gw - 1)
    return ys[:, None] * gw + xs[None, :]


def _cell_cover(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Share of each token cell of a (gh, gw) grid covered by ``mask``."""
    gh, gw = int(grid[0]), int(grid[1])
    cell = _cells_of(mask.shape, grid)
    n = np.bincount(cell.ravel(), minlength=gh * gw)
    hit = np.bincount(cell.ravel(), weights=mask.ravel().astype(float), minlength=gh * gw)
    return (hit / np.maximum(n, 1)).reshape(gh, gw)


def reference_pixel(mask: np.ndarray) -> tuple[int, int] | None:
    """The pixel deepest inside ``mask`` (largest distance to its boundary; ties: the first), None if empty."""
    from scipy import ndimage as ndi

    m = np.asarray(mask, bool)
    if not m.any():
        return None
    depth = ndi.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(depth.argmax()), m.shape)
    return int(y), int(x)


def reference_cell(pixel: tuple[int, int], grid: tuple[int, int], shape: tuple[int, int]) -> tuple[int, int]:
    """The token cell of a (gh, gw) grid over a slice of ``shape`` that holds ``pixel``."""
    flat = int(_cells_of(shape, grid)[pixel])
    return flat // int(grid[1]), flat % int(grid[1])


# ----------------------------------------------------------------------------- maps and their separation
def token_similarity(tokens: np.ndarray, ref: tuple[int, int]) -> np.ndarray:
    """(gh, gw) cosine similarity of the ``ref`` token to every token of a (gh, gw, C) grid."""
    t = np.asarray(tokens, dtype=np.float64)
    t = t / np.maximum(np.linalg.norm(t, axis=-1, keepdims=True), 1e-12)
    return t @ t[ref[0], ref[1]]


def similarity_map(tokens: np.ndarray, ref: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """The cosine similarity map of the ``ref`` token, bilinearly upsampled onto ``shape`` (for display)."""
    import torch
    import torch.nn.functional as F

    sim = torch.as_tensor(token_similarity(tokens, ref), dtype=torch.float32)[None, None]
    up = F.interpolate(sim, size=tuple(shape), mode="bilinear", align_corners=False)
    return up[0, 0].numpy()


def reference_footprint(ref: tuple[int, int], grid: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """The pixels of the reference token's own cell (similar to the reference by construction)."""
    return _cells_of(shape, grid) == ref[0] * grid[1] + ref[1]


def token_map(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A (gh, gw) token grid painted onto ``shape``: every pixel takes its cell's value (no blending)."""
    g = np.asarray(values)
    return g.ravel()[_cells_of(shape, g.shape)]


def separation_auc(sim: np.ndarray, tissue: np.ndarray, brain: np.ndarray,
                   exclude: np.ndarray | None = None) -> float:
    """ROC AUC of a similarity map for ``tissue`` vs the rest of the brain (NaN if one side is empty).

    Scored on :func:`token_map` (each pixel its token's similarity: no blending with the reference
    token), with ``exclude`` = :func:`reference_footprint`, the reference's own cell, left out;
    otherwise random tokens would score above 0.5 merely for containing the reference.
    """
    from brainfm.stats import auc

    region = np.asarray(brain, bool) | np.asarray(tissue, bool)
    if exclude is not None:
        region &= ~np.asarray(exclude, bool)
    y = np.asarray(tissue, bool)[region]
    if y.all() or not y.any():
        return float("nan")
    return float(auc(y.astype(int), np.asarray(sim)[region]))


def slice_tokens(encoder: Any, volume: np.ndarray, z: int, device: Any = "cpu") -> np.ndarray:
    """(gh, gw, C) patch tokens of axial slice ``z``: the slice itself for 2D encoders, the nearest
    axial token plane of the whole volume for 3D encoders."""
    import torch

    vol = torch.as_tensor(np.asarray(volume, dtype=np.float32), device=device)
    with torch.inference_mode():
        x = encoder.preprocess(vol)
        if encoder.input_kind == "slices2d":
            patch = encoder.forward_features(x[z:z + 1], return_patch=True)["patch"][0]
        else:
            grid = encoder.forward_features(x, return_patch=True)["patch"][0]  # (gd, gh, gw, C)
            gd = int(grid.shape[0])
            plane = min(gd - 1, int((z + 0.5) * gd / vol.shape[0]))
            patch = grid[plane]
    if patch.ndim != 3:
        raise ValueError(f"{type(encoder).__name__}: patch tokens of a slice must be (gh, gw, C), "
                         f"got {tuple(patch.shape)}")
    return patch.float().cpu().numpy()


# ----------------------------------------------------------------------------- the two steps
def _cases(store: Any, dataset_modality: str, n_cases: int) -> list[int]:
    idx = store.index
    rows = np.flatnonzero((idx["modality"].astype(str) == dataset_modality).to_numpy())
    if not len(rows):
        raise InputError(store.dir, f"no {dataset_modality} volumes in the store (modalities: "
                                    f"{sorted(idx['modality'].astype(str).unique())})")
    order = idx.iloc[rows].sort_values(["subject", "session"], kind="mergesort").index.to_numpy()
    return [int(i) for i in order[:n_cases]]


def similarity_maps(encoder: Any, backbone: str, store: str | Path, masks: str | Path | None, out: str | Path, *,
                    modality: str, n_cases: int, references: Sequence[str] = REFERENCES,
                    device: Any = "cpu") -> pd.DataFrame:
    """The ``similarity_maps`` step: per case and reference, the map of one backbone and its AUC.

    Writes ``out`` (parquet: one row per case x reference: subject, session, slice, reference
    cell, AUC) and ``out`` with suffix ``.npz`` (the slices, tissue masks and maps for the figure).
    """
    from brainfm.atomic import atomic_path, write_parquet
    from brainfm.preprocess.store import ShardedStore

    unknown = [r for r in references if r not in REFERENCES]
    if unknown:
        raise InputError(str(out), f"unknown reference(s) {unknown}; known: {list(REFERENCES)}")
    vols = ShardedStore(store)
    mstore = ShardedStore(masks) if masks and (Path(masks) / "meta.json").exists() else None
    encoder.freeze()
    encoder.to(device)
    rows, images, maps, tissues = [], [], [], []
    for i in _cases(vols, modality, n_cases):
        key = vols.index.iloc[i]
        vol = vols.read(i)
        mask_vol = None
        if mstore is not None:
            try:
                mask_vol = mstore.get(subject=key["subject"], session=key["session"], modality=key["modality"])
            except KeyError:
                mask_vol = None
        z = pick_slice(mask_vol, vol.shape[0])
        img = vol[z]
        masks_z = tissue_masks(img, None if mask_vol is None else mask_vol[z], modality)
        tokens = slice_tokens(encoder, vol, z, device)
        grid = tokens.shape[:2]
        case_maps, case_tissue = [], []
        for ref in references:
            tissue = masks_z.get(ref)
            pixel = None if tissue is None else reference_pixel(tissue)
            cell = None if pixel is None else reference_cell(pixel, grid, img.shape)
            if cell is None:
                sim = np.full(img.shape, np.nan, np.float32)
                value = float("nan")
                tissue = np.zeros(img.shape, bool) if tissue is None else tissue
            else:
                sim = similarity_map(tokens, cell, img.shape).astype(np.float32)
                value = separation_auc(token_map(token_similarity(tokens, cell), img.shape), tissue,
                                       masks_z["brain"], reference_footprint(cell, grid, img.shape))
            rows.append({"backbone": backbone, "subject": str(key["subject"]), "session": str(key["session"]),
                         "modality": modality, "slice": z, "reference": ref,
                         "ref_y": np.nan if pixel is None else pixel[0], "ref_x": np.nan if pixel is None else pixel[1],
                         "cell_row": np.nan if cell is None else cell[0], "cell_col": np.nan if cell is None else cell[1],
                         "grid": f"{grid[0]}x{grid[1]}", "tissue_voxels": int(tissue.sum()), "auc": value})
            case_maps.append(sim)
            case_tissue.append(tissue)
        images.append(img.astype(np.float32))
        maps.append(np.stack(case_maps))
        tissues.append(np.stack(case_tissue))
    frame = pd.DataFrame(rows)
    write_parquet(out, frame)
    with atomic_path(Path(out).with_suffix(".npz"), suffix=".npz") as tmp:
        np.savez_compressed(tmp, images=np.stack(images), maps=np.stack(maps), tissues=np.stack(tissues),
                            meta=np.array(json.dumps({"backbone": backbone, "references": list(references),
                                                      "modality": modality})))
    return frame


def summarize_auc(frame: pd.DataFrame, *, n_boot: int = 2000, seed: int = 42, alpha: float = 0.05) -> pd.DataFrame:
    """Mean separation AUC per backbone x reference with a percentile bootstrap CI over cases."""
    from brainfm.stats.bootstrap import Resampler, percentile_ci

    rows = []
    for (backbone, ref), g in frame.groupby(["backbone", "reference"], sort=False):
        v = g["auc"].to_numpy(float)
        v = v[np.isfinite(v)]
        row = {"backbone": backbone, "reference": ref, "n_cases": int(len(v)), "auc": np.nan, "ci_low": np.nan,
               "ci_high": np.nan, "sd": np.nan}
        if len(v):
            dist = np.concatenate([w @ v / w.sum(1) for w in Resampler(len(v), n_boot, seed).chunks()])
            lo, hi = percentile_ci(dist, alpha)
            row.update(auc=float(v.mean()), ci_low=lo, ci_high=hi,
                       sd=float(dist.std(ddof=1)) if len(dist) > 1 else 0.0)
        rows.append(row)
    return pd.DataFrame(rows)


def similarity_report(results: Sequence[str | Path], tidy_path: str | Path, table_path: str | Path,
                      figure_path: str | Path, *, reference: str, n_boot: int = 2000, seed: int = 42,
                      alpha: float = 0.05, labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The ``similarity_report`` step: Fig. 6a (rows = backbones, columns = references) and the AUC table.

    ``results`` are the ``similarity_maps`` parquet files (their ``.npz`` beside them). The figure
    shows the first case where every backbone has every reference; the table and ``tidy_path``
    hold the mean AUC [95% bootstrap CI over cases] per backbone and reference.
    """
    from brainfm.atomic import write_parquet
    from brainfm.report import figures, tables
    from brainfm.report.style import order_backbones

    frames, arrays = [], {}
    for path in results:
        try:
            f = pd.read_parquet(path)
            arrays[str(f["backbone"].iloc[0])] = dict(np.load(Path(path).with_suffix(".npz")))
        except Exception as exc:
            raise InputError(path, f"cannot read similarity maps ({exc})") from exc
        frames.append(f)
    frame = pd.concat(frames, ignore_index=True)
    summary = summarize_auc(frame, n_boot=n_boot, seed=seed, alpha=alpha)
    write_parquet(tidy_path, summary)
    refs = list(dict.fromkeys(frame["reference"]))
    backbones = order_backbones(frame["backbone"].unique(), reference)
    wide = []
    for b in backbones:
        row = {"Backbone": tables.display_name(b, labels)}
        for r in refs:
            s = summary[(summary.backbone == b) & (summary.reference == r)]
            x = s.iloc[0] if len(s) else None
            row[f"{r} AUC"] = tables.MISSING if x is None else tables.format_estimate("auc", x["auc"], low=x["ci_low"],
                                                                                       high=x["ci_high"])
            row[f"{r} n"] = 0 if x is None else int(x["n_cases"])
        wide.append(row)
    tables.write_table(pd.DataFrame(wide), table_path, label="tab:similarity",
                       caption="Reference-point similarity maps: AUC of the cosine similarity to the reference token "
                               "for the reference tissue vs the rest of the brain (mean over cases, 95% bootstrap CI "
                               "over cases)")
    # the figure's case: complete for every backbone, the first in subject order
    ok = frame.groupby(["subject", "session"])["auc"].apply(lambda a: bool(np.isfinite(a).all()))
    cases = frame[["subject", "session"]].drop_duplicates().reset_index(drop=True)
    good = [i for i, (s, ses) in cases.iterrows() if ok.get((s, ses), False)]
    case = good[0] if good else 0
    sel = frame[(frame.subject == cases.subject[case]) & (frame.session == cases.session[case])]
    panels = {b: {"image": arrays[b]["images"][case], "maps": arrays[b]["maps"][case],
                  "tissues": arrays[b]["tissues"][case],
                  "points": [tuple(sel[(sel.backbone == b) & (sel.reference == r)][["ref_y", "ref_x"]].iloc[0])
                             for r in refs]} for b in backbones}
    auc_of = {(b, r): float(v) for b, r, v in frame[(frame.subject == cases.subject[case]) &
                                                   (frame.session == cases.session[case])]
              [["backbone", "reference", "auc"]].itertuples(index=False)}
    figures.similarity_grid(panels, refs, auc_of, figure_path, labels=labels,
                            title=f"{cases.subject[case]} (slice {int(frame.slice[frame.subject == cases.subject[case]].iloc[0])})")
    return summary
