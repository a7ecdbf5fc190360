"""Segmentation products that are not statistics: the label-map table and the qualitative figure.

- :func:`segmentation_labels` -- Supplementary Table 5: per benchmark, which raw mask values make
  up WT, TC and ET, read from each dataset's registry entry (the map training used);
- :func:`segmentation_figure` -- Fig. 2: per benchmark and chosen test case, the input slice
  (FLAIR), the ground truth and each backbone's prediction as contours per region.

Torch-free: the figure reads the prepared benchmark's case table and the jobs' exported
predictions (NIfTI) with nibabel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from brainfm.data.datasets.labelmap import LabelMap, label_map_for
from brainfm.errors import InputError
from brainfm.frames import read_frame
from brainfm.report import tables
from brainfm.report.style import display_name, new_figure, order_backbones, save_figure, style
from brainfm.segmentation.raw_dataset import benchmark_cases

__all__ = ["labels_table", "segmentation_labels", "choose_cases", "draw_segmentation_examples",
           "segmentation_figure", "REGION_COLORS"]

#: contour colour per region, in the paper's order (outermost first)
REGION_COLORS = ("#ffd700", "#1f77b4", "#d62728", "#2ca02c", "#9467bd")


def labels_table(maps: Mapping[str, LabelMap]) -> pd.DataFrame:
    """Supplementary Table 5 rows: benchmark, region, raw label values with their names, description."""
    rows = []
    for benchmark, lm in maps.items():
        for row in lm.table():
            rows.append({"Benchmark": benchmark, "Region": row["region"],
                         "Raw labels": ", ".join(f"{v} ({n})" for v, n in zip(row["labels"], row["label_names"])),
                         "Description": row["description"]})
    return pd.DataFrame(rows, columns=["Benchmark", "Region", "Raw labels", "Description"])


def segmentation_labels(benchmarks: Mapping[str, str], table_path: str | Path) -> pd.DataFrame:
    """Write Supplementary Table 5 for ``benchmarks`` (name -> registry entry or phantom generator)."""
    table = labels_table({name: label_map_for(registry) for name, registry in benchmarks.items()})
    tables.write_table(table, table_path, label="tab:segmentation-labels",
                       caption="Segmentation label maps: raw mask values of each benchmark's regions "
                               "(from the dataset registry)")
    return table


def choose_cases(dice: pd.DataFrame, n: int) -> list[str]:
    """The ``n`` test cases with the largest tumours (outermost region), ties by case id: a fixed,
    reproducible choice that shows every region, independent of any backbone's result."""
    outer = dice[dice["region"] == dice["region"].iloc[0]].drop_duplicates("case_id")
    outer = outer.sort_values(["gt_voxels", "case_id"], ascending=[False, True])
    return outer["case_id"].head(int(n)).tolist()


def _canonical(path: str | Path) -> np.ndarray:
    import nibabel as nib

    return np.asanyarray(nib.as_closest_canonical(nib.load(str(path))).dataobj)


def _panel_data(cases: pd.DataFrame, label_map: LabelMap, case_id: str,
                predictions: Mapping[str, Path]) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, dict]]:
    """Axial slice (RAS) with the largest outer-region area: image, ground-truth and predicted regions."""
    row = cases.set_index("case_id").loc[case_id]
    truth = label_map.raw_regions(_canonical(row["mask"]))
    outer = truth[label_map.region_names[0]]
    z = int(np.argmax(outer.sum(axis=(0, 1)))) if outer.any() else outer.shape[2] // 2
    image_col = "image_FLAIR" if "image_FLAIR" in row.index else [c for c in row.index if c.startswith("image_")][-1]
    image = _canonical(row[image_col])[:, :, z].astype(float)
    gt = {r: m[:, :, z] for r, m in truth.items()}
    preds = {}
    for backbone, path in predictions.items():
        regions = label_map.nnunet_regions(_canonical(path))
        preds[backbone] = {r: m[:, :, z] for r, m in regions.items()}
    return image, gt, preds


def _show(ax, image: np.ndarray, regions: Mapping[str, np.ndarray] | None, colors: Mapping[str, str]) -> None:
    lo, hi = np.percentile(image, [1, 99]) if image.size else (0, 1)
    ax.imshow(image.T, cmap="gray", origin="lower", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
    for region, mask in (regions or {}).items():
        if mask.any():
            ax.contour(mask.T.astype(float), levels=[0.5], colors=[colors[region]], linewidths=0.9, origin="lower")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def draw_segmentation_examples(panels: Sequence[dict], backbones: Sequence[str], region_names: Sequence[str],
                               labels: Mapping[str, str] | None = None) -> Figure:
    """One row per (benchmark, case): input, ground truth, then each backbone's contours per region.

    ``panels`` items: ``{"title", "image", "gt", "preds": {backbone: {region: mask}}}`` (2D arrays).
    """
    colors = dict(zip(region_names, REGION_COLORS))
    ncols = 2 + len(backbones)
    with style():
        fig, axes = new_figure(len(panels), ncols, panel=(1.9, 1.9), extra_height=0.4)
        for i, p in enumerate(panels):
            row = axes[i * ncols:(i + 1) * ncols]
            _show(row[0], p["image"], None, colors)
            _show(row[1], p["image"], p["gt"], colors)
            for ax, b in zip(row[2:], backbones):
                _show(ax, p["image"], p["preds"].get(b, {}), colors)
            row[0].set_ylabel(p["title"], fontsize=8)
            if i == 0:
                for ax, title in zip(row, ["Input (FLAIR)", "Ground truth", *(display_name(b, labels)
                                                                            for b in backbones)]):
                    ax.set_title(title, fontsize=8)
        handles = [Line2D([], [], color=colors[r], lw=1.5, label=r) for r in region_names]
        fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), frameon=False)
        return fig


def segmentation_figure(benchmarks: Mapping[str, str | Path], runs: Mapping[str, Mapping[str, str | Path]],
                        figure_path: str | Path, *, reference: str, n_cases: int = 1,
                        labels: Mapping[str, str] | None = None) -> list[Path]:
    """Fig. 2: ``benchmarks`` maps a benchmark to its prepared root (or ``prepared.json``);
    ``runs`` maps benchmark -> backbone -> the job folder whose predictions are shown (full data)."""
    panels = []
    backbones: list[str] = []
    region_names: tuple[str, ...] = ()
    for benchmark, root in benchmarks.items():
        root = Path(root)
        cases, label_map = benchmark_cases(root.parent if root.suffix == ".json" else root)
        region_names = region_names or label_map.region_names
        jobs = {b: Path(d) for b, d in runs[benchmark].items()}
        backbones = order_backbones([*backbones, *jobs], reference)
        first = next(iter(jobs.values()))
        dice = read_frame(first / "dice.parquet", "segmentation Dice table")
        for case_id in choose_cases(dice, n_cases):
            preds = {b: d / "predictions" / f"{case_id}.nii.gz" for b, d in jobs.items()}
            for b, p in preds.items():
                if not p.is_file():
                    raise InputError(str(p), f"no prediction of case {case_id} by {b}")
            image, gt, pred = _panel_data(cases, label_map, case_id, preds)
            panels.append({"title": f"{benchmark}\n{case_id}", "image": image, "gt": gt, "preds": pred})
    fig = draw_segmentation_examples(panels, backbones, region_names, labels)
    with style():
        return save_figure(fig, figure_path)
