"""Dataset manifests: one validated table per dataset that every later step trusts.

A manifest has one row per image (subject × session × modality) with its path, site, split and
labels. It is the only way the workflow learns about images, so it is checked hard when it is
written *and* when it is read: missing files, duplicate rows, unknown subject ids in label files
and subjects on both sides of a train/test split are errors that name the offending rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from brainfm.atomic import write_parquet
from brainfm.errors import LeakageError, ManifestError

__all__ = [
    "union_dataset",
    "REQUIRED_COLUMNS",
    "LABEL_COLUMNS",
    "KEY",
    "validate_manifest",
    "read_manifest",
    "write_manifest",
    "join_labels",
    "check_disjoint",
    "union_manifests",
    "subset_manifest",
]

REQUIRED_COLUMNS: tuple[str, ...] = ("dataset", "subject", "session", "modality", "path", "site", "split")
KEY: tuple[str, ...] = ("subject", "session", "modality")
SPLITS = frozenset({"train", "test", ""})
# Known label columns and their kind; datasets may add others (kept as they are).
LABEL_COLUMNS: dict[str, str] = {
    "age": "float",
    "sex": "str",
    "diagnosis": "str",
    "survival_days": "float",
    "event": "float",
    "idh": "float",
    "dps": "float",
    "demented": "float",
    "asd": "float",
    "pd": "float",
}
_SHOW = 10


def _fmt_rows(df: pd.DataFrame, cols: Sequence[str] = KEY) -> str:
    rows = [" ".join(f"{c}={r[c]}" for c in cols) for _, r in df.head(_SHOW).iterrows()]
    more = f" (+{len(df) - _SHOW} more)" if len(df) > _SHOW else ""
    return "; ".join(rows) + more


def validate_manifest(df: pd.DataFrame, root: str | Path | None = None, *, check_files: bool = True,
                      source: str = "manifest") -> None:
    """Raise :class:`ManifestError` (or :class:`LeakageError`) if ``df`` breaks the manifest schema.

    ``root`` is the directory that relative ``path`` values are resolved against; with
    ``check_files`` every referenced image (and ``mask_path``, when present) must exist.
    """
    missing_cols = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing_cols:
        raise ManifestError(f"{source}: missing required column(s) {missing_cols}")
    if df.empty:
        raise ManifestError(f"{source}: no rows")
    for col in ("dataset", "subject", "session", "modality", "path"):
        bad = df[df[col].isna() | (df[col].astype(str).str.strip() == "")]
        if len(bad):
            raise ManifestError(f"{source}: empty '{col}' in {len(bad)} row(s): {_fmt_rows(bad)}")
    bad_split = df[~df["split"].fillna("").astype(str).isin(SPLITS)]
    if len(bad_split):
        values = sorted(bad_split["split"].astype(str).unique())
        raise ManifestError(f"{source}: split must be 'train', 'test' or '' (task decides); found {values}")
    dup = df[df.duplicated(list(KEY), keep=False)]
    if len(dup):
        raise ManifestError(f"{source}: duplicate rows for (subject, session, modality): {_fmt_rows(dup)}")
    # a subject's images must all sit on one side of a fixed split
    fixed = df[df["split"].isin(["train", "test"])]
    sides = fixed.groupby("subject")["split"].nunique()
    leaking = sides[sides > 1].index
    if len(leaking):
        raise LeakageError(f"{source}: subjects in both train and test", leaking)
    for col, kind in LABEL_COLUMNS.items():
        if col in df.columns and kind == "float":
            values = pd.to_numeric(df[col], errors="coerce")
            if (values.isna() & df[col].notna()).any():
                raise ManifestError(f"{source}: label column '{col}' must be numeric")
            if np.isinf(values.to_numpy(dtype=float, na_value=np.nan)).any():
                raise ManifestError(f"{source}: label column '{col}' contains infinite values")
    if "survival_days" in df.columns:
        neg = df[pd.to_numeric(df["survival_days"], errors="coerce") < 0]
        if len(neg):
            raise ManifestError(f"{source}: negative survival_days in {len(neg)} row(s): {_fmt_rows(neg)}")
    if check_files:
        base = Path(root) if root is not None else Path(".")
        for col in ("path", "mask_path"):
            if col not in df.columns:
                continue
            paths = df[col].dropna().astype(str)
            paths = paths[paths != ""]
            exists = np.array([(base / p).exists() for p in paths])
            if len(paths) and not exists.all():
                absent = paths[~exists]
                shown = ", ".join(absent.head(_SHOW))
                more = f" (+{len(absent) - _SHOW} more)" if len(absent) > _SHOW else ""
                raise ManifestError(f"{source}: {len(absent)} file(s) in '{col}' not found under {base}: {shown}{more}")


def read_manifest(path: str | Path, *, check_files: bool = True) -> pd.DataFrame:
    """Read and validate a manifest; relative paths resolve against the manifest's directory.

    The directory is kept in ``df.attrs["root"]`` so later steps can open images.
    """
    path = Path(path)
    if not path.exists():
        raise ManifestError(f"{path}: manifest not found")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise ManifestError(f"{path}: cannot read parquet ({exc.__class__.__name__}: {exc})") from exc
    for col in ("dataset", "subject", "session", "modality", "path", "site", "split"):
        if col in df.columns:
            df[col] = df[col].fillna("").astype(str)
    validate_manifest(df, path.parent, check_files=check_files, source=str(path))
    df.attrs["root"] = str(path.parent.resolve())
    return df


def write_manifest(path: str | Path, df: pd.DataFrame, *, check_files: bool = True) -> None:
    """Validate ``df`` against files under the manifest's directory, then write it atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)  # relative paths like ../other/x resolve through it
    df = df.copy()
    for col in REQUIRED_COLUMNS:
        if col in df.columns:
            df[col] = df[col].fillna("").astype(str)
    validate_manifest(df, path.parent, check_files=check_files, source=str(path))
    ordered = list(REQUIRED_COLUMNS) + [c for c in df.columns if c not in REQUIRED_COLUMNS]
    write_parquet(path, df[ordered].reset_index(drop=True))


def join_labels(images: pd.DataFrame, labels: pd.DataFrame, *, on: Sequence[str] = ("subject",),
                label_columns: Iterable[str] | None = None, source: str = "labels") -> pd.DataFrame:
    """Attach per-subject (or per-session) labels to image rows.

    Unknown subject ids in the label file and duplicate label rows are errors: a typo in an id
    would otherwise silently drop a subject from every task.
    """
    on = list(on)
    missing = [c for c in on if c not in labels.columns]
    if missing:
        raise ManifestError(f"{source}: label file lacks key column(s) {missing}")
    labels = labels.copy()
    for c in on:
        labels[c] = labels[c].astype(str)
    dup = labels[labels.duplicated(on, keep=False)]
    if len(dup):
        raise ManifestError(f"{source}: duplicate label rows for {on}: {_fmt_rows(dup, on)}")
    known = images[on].astype(str).drop_duplicates()
    merged = labels[on].merge(known, on=on, how="left", indicator=True)
    unknown = merged[merged["_merge"] == "left_only"]
    if len(unknown):
        raise ManifestError(f"{source}: {len(unknown)} id(s) not found among the images: {_fmt_rows(unknown, on)}")
    cols = list(label_columns) if label_columns is not None else [c for c in labels.columns if c not in on]
    overlap = [c for c in cols if c in images.columns]
    base = images.drop(columns=overlap)
    return base.merge(labels[on + cols], on=on, how="left")


def union_manifests(manifests: Sequence[pd.DataFrame], out_dir: str | Path, name: str) -> pd.DataFrame:
    """Pool manifests (each with ``attrs["root"]``) into one whose paths are relative to ``out_dir``.

    Subject ids are prefixed with their source dataset so two cohorts' ``sub-001`` stay distinct;
    the source dataset is kept in ``source_dataset`` (e.g. for site effects).
    """
    out_dir = Path(out_dir).resolve()
    frames = []
    for df in manifests:
        part = _rebase(df, out_dir)
        part["source_dataset"] = part["dataset"]
        part["subject"] = part["dataset"] + ":" + part["subject"].astype(str)
        part["site"] = part["dataset"] + ":" + part["site"].astype(str)
        part["dataset"] = name
        frames.append(part)
    return pd.concat(frames, ignore_index=True)


def subset_manifest(df: pd.DataFrame, subjects: Iterable[str], out_dir: str | Path, name: str,
                    source_dataset: str | None = None) -> pd.DataFrame:
    """The rows of ``subjects`` (optionally only those pooled from ``source_dataset``), rebased to ``out_dir``.

    Subject ids are kept unchanged so leakage checks against the parent dataset still match.
    """
    keep = df["subject"].astype(str).isin(set(map(str, subjects)))
    if source_dataset is not None:
        if "source_dataset" not in df.columns:
            raise ManifestError(f"{name}: 'source_dataset' filter needs a pooled (union) manifest")
        keep &= df["source_dataset"].astype(str) == source_dataset
    part = _rebase(df[keep], Path(out_dir).resolve())
    if part.empty:
        raise ManifestError(f"{name}: the subset is empty (no training subject left)")
    part["dataset"] = name
    return part.reset_index(drop=True)


def _rebase(df: pd.DataFrame, out_dir: Path) -> pd.DataFrame:
    """A copy of ``df`` whose image paths are relative to ``out_dir`` instead of ``attrs["root"]``."""
    root = Path(df.attrs.get("root", "."))
    part = df.copy()
    for col in ("path", "mask_path"):
        if col in part.columns:
            part[col] = [os.path.relpath(root / p, out_dir) if p else p for p in part[col].fillna("")]
    return part


def check_disjoint(a: Iterable[str], b: Iterable[str], what: str) -> None:
    """Raise :class:`LeakageError` naming the subjects that appear in both collections."""
    shared = set(map(str, a)) & set(map(str, b))
    if shared:
        raise LeakageError(what, shared)


def union_dataset(name: str, inputs: Sequence[str | Path], out: str | Path) -> pd.DataFrame:
    """The ``union_dataset`` step: several datasets' manifests pooled into one, written to ``out``."""
    out = Path(out)
    df = union_manifests([read_manifest(p) for p in inputs], out.parent, name)
    write_manifest(out, df)
    return df
