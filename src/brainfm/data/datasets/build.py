"""Building a dataset's manifest: scan, labels, published splits and masks in one validated table.

:func:`build_manifest` turns a dataset root on disk into the ``manifest.parquet`` every later step
trusts. Labels are joined with :func:`brainfm.data.manifest.join_labels`, which rejects ids that
match no image and duplicate rows; published or fixed splits are applied here, while holdout and
cross-validation splits are left to the task's split rule (the column stays empty).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from brainfm.data.datasets.availability import MAX_SHOWN, missing_message
from brainfm.data.datasets.entry import DatasetEntry
from brainfm.data.datasets.scan import ScanResult, scan_dataset
from brainfm.data.datasets.tables import LabelTable, normalize_cell, parse_ids, prepare_labels, read_table, table_column
from brainfm.data.manifest import REQUIRED_COLUMNS, join_labels, write_manifest
from brainfm.errors import DataMissingError, ManifestError

__all__ = ["build_manifest", "assemble_manifest", "split_column"]


def build_manifest(entry: DatasetEntry, root: str | Path, out: str | Path) -> pd.DataFrame:
    """Scan ``root``, attach labels, splits and masks, and write ``out`` (a manifest.parquet).

    Paths in the manifest are relative to ``out``'s directory, as the manifest contract requires.
    Returns the DataFrame that was written.
    """
    root, out = Path(root), Path(out)
    scan = scan_dataset(entry, root)
    images, _ = assemble_manifest(entry, root, scan)
    base = out.parent.resolve()
    base.mkdir(parents=True, exist_ok=True)

    def rel(p: Path | None) -> str:
        # resolve the folders (".." in a relative path is resolved physically by the OS) but keep a
        # symlinked file's own name (DataLad/git-annex files are links to content-addressed blobs)
        if p is None or (isinstance(p, float) and np.isnan(p)):
            return ""
        p = Path(p)
        return os.path.relpath(Path(os.path.realpath(p.parent)) / p.name, base)

    images["path"] = images["abspath"].map(rel)
    if entry.mask:
        images["mask_path"] = _attach_masks(images, scan.masks, entry).map(rel)
    extra = [c for c in images.columns if c not in REQUIRED_COLUMNS and c not in
             ("session_base", "relpath", "abspath", "mask_path")]
    columns = list(REQUIRED_COLUMNS) + (["mask_path"] if entry.mask else []) + extra
    df = images[columns].reset_index(drop=True)
    write_manifest(out, df)
    return df


def split_column(entry: DatasetEntry, root: Path, images: pd.DataFrame) -> pd.Series:
    """Per image split value: applied for file/fixed splits, '' (task decides) otherwise."""
    split = entry.split
    kind = split["type"]
    if kind not in ("file", "fixed"):
        return pd.Series("", index=images.index, dtype=object)
    subjects = images["subject"]
    if kind == "fixed":
        test: set[str] = set(map(str, split.get("test_subjects", [])))
        if "test_path_regex" in split:
            rx = re.compile(split["test_path_regex"])
            test |= set(images.loc[images["relpath"].map(lambda p: bool(rx.search(p))), "subject"])
        return subjects.map(lambda s: "test" if s in test else "train")
    df, path = read_table(split, root, entry, "split")
    ids = parse_ids(df, split["ids"]["subject"], path, "split/ids/subject")
    raw = table_column(df, split["column"], path).map(normalize_cell)
    value_map = {normalize_cell(k): v for k, v in (split.get("values") or {}).items()}
    assigned: dict[str, str] = {}
    bad: set[str] = set()
    for sid, value in zip(ids, raw):
        if sid is None:
            continue
        v = value_map.get(value, value) if value is not None else ""
        if v not in ("train", "test", ""):
            bad.add(str(value))
            continue
        if sid in assigned and assigned[sid] != v:
            raise ManifestError(f"{path}: subject {sid} is listed as both {assigned[sid]!r} and {v!r}")
        assigned[sid] = v
    if bad:
        raise ManifestError(f"{path}: split column {split['column']!r} has value(s) {sorted(bad)[:MAX_SHOWN]} that "
                            "are not train/test; map them under split/values")
    missing = sorted(set(subjects) - set(assigned))
    if missing and split.get("missing", "error") == "error":
        more = len(missing) - MAX_SHOWN
        shown = ", ".join(missing[:MAX_SHOWN]) + (f" (+{more} more)" if more > 0 else "")
        raise ManifestError(f"{path}: {len(missing)} subject(s) on disk are not in the split file: {shown}")
    return subjects.map(lambda s: assigned.get(s, ""))


def assemble_manifest(entry: DatasetEntry, root: Path, scan: ScanResult) -> tuple[pd.DataFrame, LabelTable | None]:
    """The scanned images with dataset, split, labels and site attached (absolute paths, no masks yet).

    Also returns the label table that was joined (None when the entry has no labels), for reports.
    """
    images = scan.images.copy()
    if images.empty:
        found = f"{scan.n_files} file(s) under the root, none matching the patterns"
        if scan.broken_links:
            found += (f"; {len(scan.broken_links)} matching path(s) are broken links (git-annex/datalad content "
                      f"not retrieved? e.g. {scan.broken_links[0]})")
        raise DataMissingError(missing_message(entry, root, found))
    dup = images[images.duplicated(["subject", "session", "modality"], keep=False)]
    if len(dup):
        shown = ", ".join(dup["relpath"].head(MAX_SHOWN))
        raise ManifestError(f"{entry.source}: several files for one (subject, session, modality): {shown}. Add a "
                            "placeholder such as {run} for the part of the name that differs")
    images = images.sort_values(["subject", "session", "modality"], kind="stable").reset_index(drop=True)
    images["dataset"] = entry.name
    images["split"] = split_column(entry, root, images)
    label_table: LabelTable | None = None
    if entry.labels:
        label_table = prepare_labels(entry, root, images)
        keys = list(label_table.keys)
        work = images.copy()
        work["_row"] = np.arange(len(work))
        composite = work["session"].copy()
        work["session"] = work["session_base"]
        label_cols = [c for c in label_table.table.columns if c not in keys]
        work = join_labels(work, label_table.table, on=keys, label_columns=label_cols,
                           source=str(label_table.path))
        work = work.sort_values("_row").reset_index(drop=True)
        work["session"] = composite.to_numpy()
        images = work.drop(columns="_row")
    # a {site} placeholder or a mapped site label column gives the site; otherwise the entry's default
    images["site"] = images["site"].fillna(entry.site or entry.name).astype(str)
    return images, label_table


def _attach_masks(images: pd.DataFrame, masks: pd.DataFrame, entry: DatasetEntry) -> pd.Series:
    if masks.empty:
        return pd.Series("", index=images.index, dtype=object)
    best = masks.sort_values("priority", kind="stable").drop_duplicates(["subject", "session"], keep="first")
    clash = masks[masks.duplicated(["subject", "session", "priority"], keep=False)]
    if len(clash):
        raise ManifestError(f"{entry.source}: several mask files for one (subject, session): "
                            f"{', '.join(clash['relpath'].head(MAX_SHOWN))}")
    lookup = {(r.subject, r.session): r.abspath for r in best.itertuples()}
    base_lookup = {(r.subject, r.session_base): r.abspath for r in best.itertuples()}
    out = []
    for r in images.itertuples():
        path = lookup.get((r.subject, r.session)) or base_lookup.get((r.subject, r.session_base))
        out.append(path)
    return pd.Series(out, index=images.index, dtype=object)
