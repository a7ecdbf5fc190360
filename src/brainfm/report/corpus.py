"""Fig. 1a (pretraining corpus composition) and Supplementary Table 2 (the datasets), from the run's data.

Both are counted from what the run actually holds, not copied from the paper:

- :func:`corpus_figure` (rule ``corpus_figure``): volumes and subjects per pretraining dataset and
  modality from the manifests, slices from the index of each dataset's pretraining slice store
  (blank slices counted apart), drawn as Fig. 1a (slices per dataset on a log axis, slices per
  modality) with the counts as a table;
- :func:`dataset_table` (rule ``dataset_table``): one row per dataset of the config: title and
  access from its registry entry, its role (pretraining, tasks), modalities, subjects and images
  from its manifest, train/test subjects and the split rule, and the paper's n where the entry
  records it (Supp. Table 2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainfm.errors import InputError
from brainfm.frames import read_frame

__all__ = ["corpus_counts", "corpus_figure", "dataset_rows", "dataset_table"]

CORPUS_COLUMNS = ["dataset", "modality", "subjects", "volumes", "slices", "blank_slices"]


def _read_manifest(path: str | Path) -> pd.DataFrame:
    return read_frame(path, "manifest")


def _store_index(store: str | Path) -> pd.DataFrame:
    path = Path(store) / "index.parquet"
    return read_frame(path, "pretraining slice store index")


def corpus_counts(manifests: Mapping[str, str | Path], stores: Mapping[str, str | Path]) -> pd.DataFrame:
    """Subjects, volumes and slices per pretraining dataset x modality (columns CORPUS_COLUMNS).

    ``manifests`` maps a dataset to its manifest, ``stores`` to its pretraining slice store (a
    dataset without one, e.g. a volume-only recipe's, has NaN slices).
    """
    rows = []
    for name, path in manifests.items():
        m = _read_manifest(path)
        idx = _store_index(stores[name]) if name in stores else None
        for mod, g in m.groupby(m["modality"].astype(str), sort=True):
            slices = blank = np.nan
            if idx is not None:
                s = idx[idx["modality"].astype(str) == mod]
                slices = float(len(s))
                blank = float(s["blank"].astype(bool).sum()) if "blank" in s.columns else 0.0
            rows.append({"dataset": name, "modality": mod, "subjects": int(g["subject"].nunique()),
                         "volumes": int(len(g.drop_duplicates(["subject", "session", "modality"]))),
                         "slices": slices, "blank_slices": blank})
    return pd.DataFrame(rows, columns=CORPUS_COLUMNS)


def corpus_figure(manifests: Mapping[str, str | Path], stores: Mapping[str, str | Path], table_path: str | Path,
                  figure_path: str | Path) -> pd.DataFrame:
    """The ``corpus_figure`` step: Fig. 1a and its counts table (per dataset x modality, with totals)."""
    from brainfm.atomic import write_parquet
    from brainfm.report import tables
    from brainfm.report.style import new_figure, save_figure, style

    counts = corpus_counts(manifests, stores)
    if counts.empty:
        raise InputError(str(figure_path), "no pretraining dataset to count")
    write_parquet(Path(table_path).with_suffix(".parquet"), counts)
    per_ds = counts.groupby("dataset", sort=False)[["subjects", "volumes", "slices"]].sum(min_count=1)
    per_ds["subjects"] = [int(_read_manifest(manifests[d])["subject"].nunique()) for d in per_ds.index]
    per_mod = counts.groupby("modality", sort=True)[["volumes", "slices"]].sum(min_count=1)
    table = counts.copy()
    total = {"dataset": "total", "modality": "all", "subjects": int(per_ds["subjects"].sum()),
             "volumes": int(counts["volumes"].sum()), "slices": counts["slices"].sum(min_count=1),
             "blank_slices": counts["blank_slices"].sum(min_count=1)}
    table = pd.concat([table, pd.DataFrame([total])], ignore_index=True)
    for c in ("slices", "blank_slices"):
        table[c] = [tables.MISSING if not np.isfinite(v) else f"{int(v)}" for v in table[c].astype(float)]
    tables.write_table(table, table_path, label="tab:corpus",
                       caption="Pretraining corpus (Fig. 1a): subjects, volumes and sampled slices per dataset and "
                               "modality, counted from the manifests and the slice stores")
    order = per_ds.sort_values(["slices", "volumes"], ascending=True).index.tolist()
    with style():
        fig, axes = new_figure(1, 2, panel=(4.2, max(2.6, 0.22 * len(order) + 1.0)))
        ax = axes[0]
        vals = per_ds.loc[order, "slices"].to_numpy(float)
        use_slices = np.isfinite(vals).any()
        if not use_slices:
            vals = per_ds.loc[order, "volumes"].to_numpy(float)
        ax.barh(range(len(order)), vals, color="#4c72b0")
        ax.set_yticks(range(len(order)), order)
        ax.set_xscale("log")
        ax.set_xlabel("slices (log)" if use_slices else "volumes (log)")
        for i, (v, n) in enumerate(zip(vals, per_ds.loc[order, "volumes"])):
            if np.isfinite(v):
                ax.text(v, i, f" {int(n)} vol", va="center", fontsize=5)
        ax.set_title(f"{len(order)} datasets, {int(per_ds['volumes'].sum())} volumes"
                     + (f", {int(np.nansum(vals))} slices" if use_slices else ""), fontsize=7)
        ax = axes[1]
        mv = per_mod["slices" if use_slices else "volumes"].to_numpy(float)
        ax.bar(range(len(per_mod)), mv, color="#dd8452")
        ax.set_xticks(range(len(per_mod)), per_mod.index.tolist())
        ax.set_ylabel("slices" if use_slices else "volumes")
        ax.set_title("by modality", fontsize=7)
        fig.suptitle("Pretraining corpus composition")
        save_figure(fig, figure_path)
    return counts


# ----------------------------------------------------------------------------- Supp. Table 2
def _entry(registry: str) -> Any:
    from brainfm.data.datasets.catalog import load_dataset_entry

    return load_dataset_entry(registry)


def _split_rule(split: Mapping[str, Any] | None) -> str:
    if not split:
        return ""
    kind = split.get("type", "")
    if kind == "holdout":
        return f"holdout, test fraction {split.get('test_fraction')}"
    if kind == "cv":
        return f"{split.get('n_splits')}-fold CV"
    return str(kind)


def dataset_rows(datasets: Sequence[Mapping[str, Any]], manifests: Mapping[str, str | Path],
                 roles: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """One row per dataset (``datasets``: config dataset entries with their ``name``)."""
    rows = []
    for d in datasets:
        name, source = d["name"], d["source"]
        m = _read_manifest(manifests[name])
        split = m["split"].astype(str) if "split" in m.columns else pd.Series("", index=m.index)
        title, access, rule, paper_n = name, "", "", ""
        if source in ("local", "download"):
            e = _entry(d.get("registry") or name)
            title, access, rule = e.title, e.access, _split_rule(e.split)
            p = e.paper or {}
            if p.get("n_train") is not None or p.get("n_test") is not None:
                paper_n = f"{p.get('n_train', '–')} / {p.get('n_test', '–')}"
            elif p.get("n_subjects") is not None:
                paper_n = str(p["n_subjects"])
        elif source == "phantom":
            title, access = f"phantom ({d.get('registry') or name})", "embedded (generated)"
        elif source == "union":
            title, access = "pool of " + ", ".join(d.get("parts") or ()), "as its parts"
        elif source == "subset":
            title, access = f"training subjects of {d.get('of')} (task {d.get('train_of')})", "as its parent"
        rows.append({
            "dataset": name, "title": title, "access": access, "role": ", ".join(roles.get(name, ())),
            "modalities": ", ".join(sorted(m["modality"].astype(str).unique())),
            "subjects": int(m["subject"].nunique()), "images": int(len(m)),
            "train subjects": int(m.loc[split == "train", "subject"].nunique()),
            "test subjects": int(m.loc[split == "test", "subject"].nunique()),
            "split rule": rule, "paper n (train / test)": paper_n,
        })
    return pd.DataFrame(rows)


def dataset_table(datasets: Sequence[Mapping[str, Any]], manifests: Mapping[str, str | Path],
                  roles: Mapping[str, Sequence[str]], table_path: str | Path) -> pd.DataFrame:
    """The ``dataset_table`` step: Supplementary Table 2 of this run's datasets."""
    from brainfm.report import tables

    frame = dataset_rows(datasets, manifests, roles)
    tables.write_table(frame, table_path, label="tab:datasets",
                       caption="Datasets of this run (Supp. Table 2): access and split rule from the registry "
                               "entries, counts from the manifests, and the paper's n where the entry records it")
    return frame
