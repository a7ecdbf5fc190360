"""Label and split tables of a dataset: read as text, mapped onto the manifest's canonical label columns.

Releases ship their clinical data as csv, tsv, xlsx or xls, with their own column names and
codes. An entry's ``labels`` section maps them: ids are cut out and reformatted (e.g. zero-padded)
so they match the ids parsed from image paths, columns are renamed, scaled or computed (years
between two dates), and codes are mapped (e.g. OASIS CDR -> demented). Cells are read as text so
ids keep their leading zeros; what is numeric is converted afterwards, and a value that does not
parse is an error naming the file, the column and the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainfm.data.datasets.availability import MAX_SHOWN, missing_message
from brainfm.data.datasets.entry import DatasetEntry, label_source_columns
from brainfm.data.manifest import LABEL_COLUMNS
from brainfm.errors import BrainfmError, ConfigError, DataMissingError, InputError, ManifestError

__all__ = ["LabelTable", "normalize_cell", "read_table", "table_column", "parse_ids", "read_labels",
           "prepare_labels"]


def normalize_cell(value: Any) -> str | None:
    """Cell -> comparable text: strip, and '12.0' -> '12' so Excel's floats match integer codes."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    if text == "":
        return None
    if re.fullmatch(r"-?\d+\.0+", text):
        text = text.split(".")[0]
    return text


def read_table(spec: Mapping[str, Any], root: Path, entry: DatasetEntry, what: str) -> tuple[pd.DataFrame, Path]:
    """Read a csv/tsv/xlsx/xls table as text cells (ids keep their leading zeros)."""
    pattern = spec["file"]
    if any(ch in pattern for ch in "*?["):
        found = sorted(root.glob(pattern))
        if len(found) != 1:
            raise DataMissingError(missing_message(
                entry, root, f"{what} file '{pattern}' matched {len(found)} files "
                             f"({', '.join(p.name for p in found[:MAX_SHOWN])}); exactly one is needed"))
        path = found[0]
    else:
        path = root / pattern
    if not path.is_file():
        raise DataMissingError(missing_message(entry, root, f"the {what} file '{pattern}' is missing"))
    fmt = spec.get("format")
    if fmt is None:
        suffix = path.suffix.lower()
        fmt = {".csv": "csv", ".tsv": "tsv", ".txt": "tsv", ".xlsx": "xlsx", ".xls": "xls"}.get(suffix)
        if fmt is None:
            raise ConfigError(f"{entry.source}: cannot tell the format of {path.name}; set `format`")
    na = list(spec.get("na_values", []))
    try:
        if fmt in ("csv", "tsv"):
            df = pd.read_csv(path, sep="," if fmt == "csv" else "\t", dtype=str, na_values=na,
                             skipinitialspace=True, encoding_errors="replace")
        else:
            engine = "openpyxl" if fmt == "xlsx" else "xlrd"
            try:
                __import__(engine)
            except ImportError as exc:
                raise InputError(path, f"reading {fmt} files needs the '{engine}' package (pip install {engine}), "
                                       "or save the sheet as CSV and set `format: csv`") from exc
            df = pd.read_excel(path, sheet_name=spec.get("sheet", 0), dtype=str, na_values=na, engine=engine)
    except BrainfmError:
        raise
    except Exception as exc:  # pandas raises many parser error types
        raise InputError(path, f"cannot read {fmt} table ({type(exc).__name__}: {exc})") from exc
    df.columns = [str(c).strip() for c in df.columns]
    return df, path


def table_column(df: pd.DataFrame, name: str, path: Path) -> pd.Series:
    """The column ``name`` of a table read from ``path``; a missing one is named with the columns there are."""
    if name not in df.columns:
        shown = ", ".join(map(repr, list(df.columns)[:30]))
        raise ManifestError(f"{path}: no column {name!r}; the file has {shown}")
    return df[name]


def parse_ids(df: pd.DataFrame, spec: Any, path: Path, field_name: str) -> pd.Series:
    """Ids from a column, optionally cut out with a regex and reformatted (e.g. zero-padded)."""
    if isinstance(spec, str):
        spec = {"column": spec}
    values = table_column(df, spec["column"], path).map(normalize_cell)
    pattern = re.compile(spec["pattern"]) if "pattern" in spec else None
    fmt = spec.get("format")
    int_format = bool(fmt and re.search(r"\{[^}]*[dxXob]\}", fmt))
    out: list[str | None] = []
    bad: list[str] = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        if pattern is not None:
            m = pattern.search(v)
            if not m:
                bad.append(v)
                out.append(None)
                continue
            v = m.group(1) if m.groups() else m.group(0)
        if fmt:
            try:
                v = fmt.format(int(v)) if int_format else fmt.format(v)
            except (ValueError, IndexError, KeyError) as exc:
                bad.append(f"{v} ({exc})")
                out.append(None)
                continue
        out.append(v)
    if bad:
        raise ManifestError(f"{path}: {len(bad)} value(s) of column {spec['column']!r} do not fit {field_name} "
                            f"(pattern/format): {', '.join(bad[:MAX_SHOWN])}")
    return pd.Series(out, index=df.index, dtype=object)


def _label_series(df: pd.DataFrame, spec: Any, path: Path, session: str | None) -> pd.Series:
    """One canonical label column from its spec (plain column, scaled column, or years between dates)."""

    def col(name: str) -> str:
        return name.replace("{session}", session) if session is not None else name

    if isinstance(spec, str):
        return table_column(df, col(spec), path)
    if "years_between" in spec:
        start, end = (pd.to_datetime(table_column(df, col(c), path), errors="coerce") for c in spec["years_between"])
        return (end - start).dt.days / 365.25
    series = table_column(df, col(spec["column"]), path)
    if "missing" in spec:
        codes = {normalize_cell(v) for v in spec["missing"]}
        series = series.where(~series.map(normalize_cell).isin(codes))
    if "scale" not in spec:
        return series
    numeric = pd.to_numeric(series, errors="coerce")
    bad = series[numeric.isna() & series.notna()]
    if len(bad):
        raise ManifestError(f"{path}: column {spec['column']!r} must be numeric to be scaled; found "
                            f"{', '.join(sorted(set(map(str, bad)))[:MAX_SHOWN])}")
    return numeric * float(spec["scale"])


def _map_values(series: pd.Series, mapping: Mapping[Any, Any], path: Path, name: str) -> pd.Series:
    table = {normalize_cell(k): v for k, v in mapping.items() if k != "*"}
    default_set = "*" in mapping
    default = mapping.get("*")
    unmapped: set[str] = set()

    def convert(v: Any) -> Any:
        key = normalize_cell(v)
        if key is None:
            return np.nan
        if key in table:
            out = table[key]
        elif default_set:
            out = default
        else:
            unmapped.add(key)
            return np.nan
        return np.nan if out is None else out

    mapped = series.map(convert)
    if unmapped:
        raise ManifestError(f"{path}: column for label '{name}' has code(s) with no entry in labels/values/{name}: "
                            f"{', '.join(sorted(unmapped)[:MAX_SHOWN])} (map them, map them to null, or add a '*' "
                            "default)")
    return mapped


def _coerce_label(series: pd.Series, name: str, path: Path) -> pd.Series:
    """Numeric canonical labels become floats (an unparsable value is an error); others stay text."""
    if LABEL_COLUMNS.get(name) == "float":
        numeric = pd.to_numeric(series, errors="coerce")
        bad = series[numeric.isna() & series.notna()]
        if len(bad):
            shown = ", ".join(sorted({str(v) for v in bad})[:MAX_SHOWN])
            raise ManifestError(f"{path}: label '{name}' must be numeric; found {shown} "
                                "(add a value map or list the text under labels/na_values)")
        return numeric.astype(float)
    text = series.map(normalize_cell)
    if LABEL_COLUMNS.get(name) is None and name != "site":
        # an extra column (e.g. cdr, mmse, visit) becomes numeric when every value parses as a number
        numeric = pd.to_numeric(text, errors="coerce")
        if text.notna().any() and not (numeric.isna() & text.notna()).any():
            return numeric.astype(float)
    return text


@dataclass
class LabelTable:
    """Labels mapped onto canonical columns, keyed by ``subject`` (and ``session`` when per-session)."""

    table: pd.DataFrame
    keys: tuple[str, ...]
    path: Path
    n_rows: int
    dropped_unknown: list[str]
    conflicts: dict[str, int]
    n_without_id: int


def read_labels(entry: DatasetEntry, root: str | Path, images: pd.DataFrame | None = None) -> LabelTable:
    """Read the entry's label table and map it onto canonical label columns.

    ``images`` (from :func:`scan_dataset`) is needed when the table is wide by session, to know
    which sessions exist. Unknown ids and duplicates are *not* handled here (see prepare_labels).
    """
    spec = entry.labels
    if not spec:
        raise ConfigError(f"{entry.source}: dataset '{entry.name}' has no labels section")
    root = Path(root)
    df, path = read_table(spec, root, entry, "label")
    ids = {"subject": parse_ids(df, spec["ids"]["subject"], path, "labels/ids/subject")}
    if "session" in spec["ids"]:
        ids["session"] = parse_ids(df, spec["ids"]["session"], path, "labels/ids/session")
    columns: dict[str, Any] = spec["columns"]
    wide = any("{session}" in c for c in label_source_columns(columns.values()))
    values_maps = spec.get("values", {})

    def mapped_frame(session: str | None) -> pd.DataFrame:
        out = pd.DataFrame({k: v for k, v in ids.items()})
        if session is not None:
            out["session"] = session
        for name, cspec in columns.items():
            s = _label_series(df, cspec, path, session)
            if name in values_maps:
                s = _map_values(s, values_maps[name], path, name)
            out[name] = _coerce_label(s, name, path).to_numpy()
        return out

    if wide:
        if images is None:
            raise ConfigError(f"{entry.source}: a label table with one column per session needs the scanned images")
        present = set(zip(images["subject"], images["session_base"]))
        frames = []
        for session in sorted(images["session_base"].unique()):
            frame = mapped_frame(session)
            frames.append(frame[[(s, session) in present for s in frame["subject"]]])
        # subjects of the table with no image on disk stay in (one row each) so that the
        # unknown-id rule reports them; their session cannot be known, hence "(any)"
        on_disk = set(images["subject"])
        orphans = sorted({s for s in ids["subject"] if s is not None and s not in on_disk})
        frames.append(pd.DataFrame({"subject": orphans, "session": "(any)"}))
        table = pd.concat(frames, ignore_index=True)
        keys: tuple[str, ...] = ("subject", "session")
        no_id = table["subject"].isna()
        n_without_id = int(ids["subject"].isna().sum())
    else:
        table = mapped_frame(None)
        keys = ("subject", "session") if "session" in ids else ("subject",)
        no_id = table[list(keys)].isna().any(axis=1)
        n_without_id = int(no_id.sum())
    table = table[~no_id].reset_index(drop=True)
    return LabelTable(table, keys, path, len(df), [], {}, n_without_id)


def _merge_duplicates(table: pd.DataFrame, keys: Sequence[str]) -> tuple[pd.DataFrame, dict[str, int]]:
    """Combine rows sharing an id: per column the one non-missing value, NaN where they disagree."""
    value_cols = [c for c in table.columns if c not in keys]
    conflicts: dict[str, int] = {}
    rows = []
    for key, group in table.groupby(list(keys), sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(keys, key))
        for c in value_cols:
            vals = group[c].dropna().unique()
            if len(vals) == 1:
                row[c] = vals[0]
            else:
                row[c] = np.nan
                if len(vals) > 1:
                    conflicts[c] = conflicts.get(c, 0) + 1
        rows.append(row)
    return pd.DataFrame(rows, columns=list(table.columns)), conflicts


def prepare_labels(entry: DatasetEntry, root: Path, images: pd.DataFrame) -> LabelTable:
    """:func:`read_labels`, then the entry's rules for duplicate rows and ids that match no image."""
    labels = read_labels(entry, root, images)
    spec = entry.labels or {}
    keys = list(labels.keys)
    table = labels.table
    if spec.get("duplicates", "error") == "merge":
        table, labels.conflicts = _merge_duplicates(table, keys)
    if spec.get("unknown_ids", "error") == "ignore":
        known = images[["subject", "session_base"]].drop_duplicates()
        known = known.rename(columns={"session_base": "session"})[keys].astype(str).drop_duplicates()
        hit = table[keys].merge(known.assign(_hit=True), on=keys, how="left")["_hit"].notna().to_numpy()
        hit = hit.astype(bool)
        if len(table) and not hit.any():
            # ignoring unknown ids must not hide an id-format mistake that drops every label
            raise ManifestError(
                f"{labels.path}: none of the {len(table)} id(s) in the label file matches an image "
                f"(label id e.g. {' '.join(map(str, table[keys].iloc[0]))!r}, image id e.g. "
                f"{' '.join(map(str, known.iloc[0]))!r}); check labels/ids in {entry.source}")
        dropped = [" ".join(map(str, row)) for row in table.loc[~hit, keys].itertuples(index=False)]
        labels.dropped_unknown = dropped
        table = table[hit].reset_index(drop=True)
    labels.table = table
    return labels

