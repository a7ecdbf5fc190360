"""Dataset registry: one YAML per real dataset, and the manifest builder that reads it.

``config/datasets/<name>.yaml`` records where a dataset comes from and on what terms, how its
files are laid out and how its labels are coded (schema: ``brainfm/schemas/dataset.schema.yaml``).
:func:`build_manifest` turns a dataset root on disk into the validated ``manifest.parquet`` that
every later step trusts:

- one walk of the root; every modality pattern (glob syntax plus ``{subject}``, ``{session}``,
  ``{site}`` and free qualifier placeholders such as ``{run}``) is compiled to an anchored regular
  expression, so the placeholders are parsed from the path, not guessed from file names later;
- the label table (csv, tsv, xlsx, xls) is mapped onto the canonical label columns with value
  maps (e.g. OASIS CDR -> demented) and joined with :func:`brainfm.data.manifest.join_labels`,
  which rejects ids that match no image and duplicate rows;
- published or fixed splits are applied; holdout and CV are left to the task's split rule.

A missing root, or a root with no matching file, raises :class:`DataMissingError` whose message
says which dataset, where it looked, the access type and the steps to get it: that is the whole
message a user of ``snakemake --configfile config/paper.yaml`` sees.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from brainfm.data.fetch import fetch_dataset
from brainfm.data.manifest import LABEL_COLUMNS, REQUIRED_COLUMNS, join_labels, write_manifest
from brainfm.errors import BrainfmError, ConfigError, DataMissingError, InputError, ManifestError

__all__ = [
    "DatasetEntry",
    "DEFAULT_SEARCH_DIRS",
    "load_dataset_entry",
    "list_datasets",
    "dataset_schema",
    "compile_pattern",
    "scan_dataset",
    "read_labels",
    "build_manifest",
    "check_dataset",
    "ensure_available",
    "missing_message",
    "fetch_dataset",
]

DEFAULT_SEARCH_DIRS: tuple[str, ...] = ("config/datasets",)
MODALITIES: tuple[str, ...] = ("T1", "T1c", "T2", "FLAIR")
_RESERVED_PLACEHOLDERS = ("subject", "session", "site")
_RESERVED_COLUMNS = frozenset(REQUIRED_COLUMNS) | {"mask_path"}
_DEFAULT_PLACEHOLDER = "[^/]+"
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SHOW = 10
ACCESS_TEXT = {
    "open": "open: free download, no account needed (the license terms below still apply)",
    "registration": "registration: create a free account or fill in a short form first",
    "dua": "data use agreement: apply and sign a DUA; access is granted after review (days to weeks)",
}


# ----------------------------------------------------------------------------- entries
@dataclass(frozen=True, eq=False)
class DatasetEntry:
    """A validated registry entry. ``raw`` keeps the YAML mapping for fields not modelled here."""

    name: str
    title: str
    access: str
    homepage: str
    how_to_get: str
    license: str
    citation: str
    modalities: dict[str, tuple[str, ...]]
    roles: dict[str, Any]
    split: dict[str, Any]
    paper: dict[str, Any]
    source: Path
    labels: dict[str, Any] | None = None
    mask: tuple[str, ...] = ()
    placeholders: dict[str, str] = field(default_factory=dict)
    site: str | None = None
    download: tuple[dict[str, Any], ...] = ()
    notes: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


@functools.lru_cache(maxsize=1)
def dataset_schema() -> dict[str, Any]:
    """The JSON schema (shipped as YAML inside the package) every registry entry must satisfy."""
    text = resources.files("brainfm").joinpath("schemas/dataset.schema.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _as_tuple(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(dataset_schema())


def _schema_errors(data: Any) -> list[str]:
    import jsonschema

    errors = list(_validator().iter_errors(data))
    if not errors:
        return []
    best = jsonschema.exceptions.best_match(errors)
    rest = sorted((e for e in errors if e is not best), key=lambda e: [str(p) for p in e.absolute_path])
    ordered = [best, *rest]
    out = []
    for err in ordered[:5]:
        parts = [str(p) for p in err.absolute_path]
        missing = re.match(r"^'(.+)' is a required property$", err.message) if err.validator == "required" else None
        if missing:  # name the absent field itself, not its parent
            parts.append(missing.group(1))
        where = "/".join(parts) or "(top level)"
        out.append(f"field '{where}': {err.message}")
    return out


def _resolve_entry_path(name_or_path: str | Path, search_dirs: Sequence[str | Path]) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file() or os.sep in str(name_or_path):
        if not candidate.is_file():
            raise ConfigError(f"{candidate}: dataset registry file not found")
        return candidate
    for directory in search_dirs:
        for suffix in (".yaml", ".yml"):
            path = Path(directory) / f"{name_or_path}{suffix}"
            if path.is_file():
                return path
    known = list_datasets(search_dirs)
    raise ConfigError(f"no dataset registry entry named '{name_or_path}' in {[str(d) for d in search_dirs]}; "
                      f"known: {', '.join(known) if known else '(none)'}")


def load_dataset_entry(name_or_path: str | Path,
                       search_dirs: Sequence[str | Path] = DEFAULT_SEARCH_DIRS) -> DatasetEntry:
    """Load and validate a registry entry by name (looked up in ``search_dirs``) or by path.

    Raises :class:`ConfigError` naming the file and the failing field.
    """
    path = _resolve_entry_path(name_or_path, search_dirs)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read YAML ({exc})") from exc
    problems = _schema_errors(data)
    if problems:
        raise ConfigError(f"{path}: invalid dataset entry: " + "; ".join(problems))
    if data["name"] != path.stem:
        raise ConfigError(f"{path}: field 'name': '{data['name']}' must equal the file name '{path.stem}'")
    entry = DatasetEntry(
        name=data["name"], title=data["title"], access=data["access"], homepage=data["homepage"],
        how_to_get=data["how_to_get"], license=data["license"], citation=data["citation"],
        modalities={m: _as_tuple(p) for m, p in data["modalities"].items()},
        roles=data["roles"], split=data["split"], paper=data["paper"], source=path,
        labels=data.get("labels"), mask=_as_tuple(data.get("mask")),
        placeholders=dict(data.get("placeholders") or {}), site=data.get("site"),
        download=tuple(data.get("download") or ()), notes=data.get("notes", ""), raw=data,
    )
    _check_entry(entry)
    return entry


def list_datasets(search_dirs: Sequence[str | Path] = DEFAULT_SEARCH_DIRS) -> list[str]:
    """Names of the registry entries found in ``search_dirs`` (sorted, first directory wins)."""
    names: set[str] = set()
    for directory in search_dirs:
        d = Path(directory)
        if d.is_dir():
            names.update(p.stem for p in d.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    return sorted(names)


def _check_entry(entry: DatasetEntry) -> None:
    """What the schema cannot say: patterns compile, placeholders and label keys are consistent."""
    where = str(entry.source)
    for name, regex in entry.placeholders.items():
        try:
            re.compile(regex)
        except re.error as exc:
            raise ConfigError(f"{where}: field 'placeholders/{name}': bad regular expression ({exc})") from exc
    has_session = False
    for modality, patterns in entry.modalities.items():
        for p in patterns:
            compiled = _compile_or_fail(p, entry, f"modalities/{modality}")
            has_session |= "session" in compiled.names
    for p in entry.mask:
        _compile_or_fail(p, entry, "mask")
    labels = entry.labels
    if labels:
        reserved = sorted(set(labels["columns"]) & _RESERVED_COLUMNS)
        if reserved:
            raise ConfigError(f"{where}: field 'labels/columns': {reserved} are manifest columns, not labels")
        unknown_maps = sorted(set(labels.get("values", {})) - set(labels["columns"]))
        if unknown_maps:
            raise ConfigError(f"{where}: field 'labels/values': {unknown_maps} are not in labels/columns")
        wide = any("{session}" in c for c in _colspec_columns(labels["columns"].values()))
        if "session" in labels["ids"] and not has_session:
            raise ConfigError(f"{where}: field 'labels/ids/session': no modality pattern has a {{session}} "
                              "placeholder to join it with")
        if wide and ("session" in labels["ids"] or not has_session):
            raise ConfigError(f"{where}: field 'labels/columns': column names with {{session}} need a "
                              "{session} placeholder in the patterns and no labels/ids/session")
        for key, spec in labels["ids"].items():
            _check_idspec(spec, where, f"labels/ids/{key}")
    split = entry.split
    if split["type"] == "file":
        for key, spec in split["ids"].items():
            _check_idspec(spec, where, f"split/ids/{key}")
    if split["type"] == "fixed" and "test_path_regex" in split:
        try:
            re.compile(split["test_path_regex"])
        except re.error as exc:
            raise ConfigError(f"{where}: field 'split/test_path_regex': bad regular expression ({exc})") from exc
    if "segmentation" in entry.raw:  # values declared once, regions nested (what the schema cannot say)
        from brainfm.segmentation.labels import LabelMap

        LabelMap.from_mapping(entry.raw["segmentation"], f"{where}: field 'segmentation'")
    for i, item in enumerate(entry.download):
        if item.get("archive", "none") != "none" and item.get("dest") in (".", "./"):
            raise ConfigError(f"{where}: field 'download/{i}/dest': an archive must unpack into a "
                              "sub-directory of the root, not the root itself")


def _check_idspec(spec: Any, where: str, field_name: str) -> None:
    if isinstance(spec, dict) and "pattern" in spec:
        try:
            re.compile(spec["pattern"])
        except re.error as exc:
            raise ConfigError(f"{where}: field '{field_name}/pattern': bad regular expression ({exc})") from exc


def _colspec_columns(specs: Iterable[Any]) -> list[str]:
    cols: list[str] = []
    for spec in specs:
        if isinstance(spec, str):
            cols.append(spec)
        elif "years_between" in spec:
            cols.extend(spec["years_between"])
        else:
            cols.append(spec["column"])
    return cols


# ----------------------------------------------------------------------------- patterns
@dataclass(frozen=True)
class CompiledPattern:
    """A file pattern as an anchored regex; ``names`` are its placeholders in order of appearance."""

    text: str
    regex: re.Pattern[str]
    names: tuple[str, ...]

    @property
    def qualifiers(self) -> tuple[str, ...]:
        return tuple(n for n in self.names if n not in _RESERVED_PLACEHOLDERS)


def compile_pattern(pattern: str, placeholders: Mapping[str, str] | None = None) -> CompiledPattern:
    """Translate a glob-with-placeholders pattern into an anchored regular expression.

    ``*`` and ``?`` stay inside one path component, ``**/`` spans directories, ``[...]`` is a
    character class, ``{name}`` captures ``placeholders.get(name, '[^/]+')``; a name used twice
    must match the same text (a back-reference), so ``{subject}/{subject}_t1.nii.gz`` only
    accepts files inside their own subject's folder.
    """
    overrides = placeholders or {}
    out: list[str] = []
    names: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "{":
            m = _PLACEHOLDER.match(pattern, i)
            if not m:
                raise ConfigError(f"pattern {pattern!r}: '{{' at position {i} does not start a placeholder "
                                  "like {subject}")
            name = m.group(1)
            if name in names:
                out.append(f"(?P={name})")
            else:
                names.append(name)
                out.append(f"(?P<{name}>{overrides.get(name, _DEFAULT_PLACEHOLDER)})")
            i = m.end()
        elif pattern.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = pattern.find("]", i + 2)
            if j < 0:
                raise ConfigError(f"pattern {pattern!r}: unclosed '['")
            body = pattern[i + 1:j]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = j + 1
        elif c == "}":
            raise ConfigError(f"pattern {pattern!r}: unmatched '}}' at position {i}")
        else:
            out.append(re.escape(c))
            i += 1
    if "subject" not in names:
        raise ConfigError(f"pattern {pattern!r}: needs a {{subject}} placeholder")
    try:
        regex = re.compile("".join(out))
    except re.error as exc:
        raise ConfigError(f"pattern {pattern!r}: cannot compile ({exc})") from exc
    return CompiledPattern(pattern, regex, tuple(names))


def _compile_or_fail(pattern: str, entry: DatasetEntry, field_name: str) -> CompiledPattern:
    try:
        return compile_pattern(pattern, entry.placeholders)
    except ConfigError as exc:
        raise ConfigError(f"{entry.source}: field '{field_name}': {exc}") from exc


def _session_of(groups: Mapping[str, str], compiled: CompiledPattern) -> tuple[str, str]:
    """(composite session id, base session) for a match: qualifiers are appended as name-value."""
    base = groups.get("session")
    parts = ([base] if base else []) + [f"{q}-{groups[q]}" for q in compiled.qualifiers]
    return ("_".join(parts) or "0"), (base or "0")


# ----------------------------------------------------------------------------- scanning
@dataclass
class ScanResult:
    """What one walk of a dataset root found."""

    images: pd.DataFrame  # modality, subject, session, session_base, site (or None), relpath, abspath
    masks: pd.DataFrame  # subject, session, session_base, priority, relpath, abspath
    broken_links: list[str]  # matched paths whose target is missing (e.g. git-annex content not fetched)
    n_files: int


def _walk(root: Path) -> Iterable[str]:
    """Relative POSIX paths of every file under ``root``, skipping hidden directories.

    Symlinked directories are followed (datasets are often assembled from links), each real
    directory once, so a link cycle cannot make the walk endless.
    """
    root_str = str(root)
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root_str, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = os.path.relpath(dirpath, root_str)
        prefix = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        for f in sorted(filenames):
            if not f.startswith("."):
                yield prefix + f


def scan_dataset(entry: DatasetEntry, root: str | Path) -> ScanResult:
    """Walk ``root`` once and parse every image and mask path the entry's patterns describe."""
    root = Path(root)
    if not root.is_dir():
        raise DataMissingError(missing_message(entry, root, "the dataset root does not exist"))
    image_patterns = [(m, compile_pattern(p, entry.placeholders)) for m, ps in entry.modalities.items() for p in ps]
    mask_patterns = [compile_pattern(p, entry.placeholders) for p in entry.mask]
    images: dict[str, dict[str, Any]] = {}
    masks: list[dict[str, Any]] = []
    broken: list[str] = []
    n_files = 0
    for rel in _walk(root):
        n_files += 1
        for modality, cp in image_patterns:
            m = cp.regex.fullmatch(rel)
            if not m:
                continue
            if rel in images and images[rel]["modality"] != modality:
                raise ConfigError(f"{entry.source}: {rel} matches the patterns of both {images[rel]['modality']} "
                                  f"and {modality}; make the patterns more specific")
            if rel in images:
                continue
            absolute = root / rel
            if not absolute.exists():
                broken.append(rel)
                break
            groups = m.groupdict()
            session, base = _session_of(groups, cp)
            images[rel] = {"modality": modality, "subject": groups["subject"], "session": session,
                           "session_base": base, "site": groups.get("site"), "relpath": rel,
                           "abspath": absolute}
        for priority, cp in enumerate(mask_patterns):
            m = cp.regex.fullmatch(rel)
            if m and rel not in images:
                if not (root / rel).exists():
                    broken.append(rel)
                    break
                groups = m.groupdict()
                session, base = _session_of(groups, cp)
                masks.append({"subject": groups["subject"], "session": session, "session_base": base,
                              "priority": priority, "relpath": rel, "abspath": root / rel})
                break
    image_cols = ["modality", "subject", "session", "session_base", "site", "relpath", "abspath"]
    mask_cols = ["subject", "session", "session_base", "priority", "relpath", "abspath"]
    return ScanResult(pd.DataFrame(list(images.values()), columns=image_cols),
                      pd.DataFrame(masks, columns=mask_cols), broken, n_files)


# ----------------------------------------------------------------------------- messages
def missing_message(entry: DatasetEntry, root: str | Path, reason: str) -> str:
    """The user-facing explanation of a dataset that is not (fully) on disk."""
    patterns = "; ".join(f"{m}: {p}" for m, ps in entry.modalities.items() for p in ps)
    steps = "\n".join("    " + line if line.strip() else "" for line in entry.how_to_get.strip().splitlines())
    lines = [
        f"dataset '{entry.name}' ({entry.title}) is not available: {reason}.",
        f"  looked in: {Path(root).resolve()}",
        f"  for files like: {patterns}",
        f"  access: {ACCESS_TEXT.get(entry.access, entry.access)}",
        f"  homepage: {entry.homepage}",
        f"  license/terms: {entry.license.strip()}",
        "  how to get it:",
        steps,
        f"  Then point `datasets.<key>.path` in your config at that folder (registry entry: {entry.source}).",
    ]
    return "\n".join(lines)


def ensure_available(entry: DatasetEntry, root: str | Path) -> None:
    """Raise :class:`DataMissingError` early (e.g. when the workflow is planned) if ``root`` is absent."""
    root = Path(root)
    if not root.is_dir():
        raise DataMissingError(missing_message(entry, root, "the dataset root does not exist"))


# ----------------------------------------------------------------------------- tables
def _norm(value: Any) -> str | None:
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


def _read_table(spec: Mapping[str, Any], root: Path, entry: DatasetEntry, what: str) -> tuple[pd.DataFrame, Path]:
    """Read a csv/tsv/xlsx/xls table as text cells (ids keep their leading zeros)."""
    pattern = spec["file"]
    if any(ch in pattern for ch in "*?["):
        found = sorted(root.glob(pattern))
        if len(found) != 1:
            raise DataMissingError(missing_message(
                entry, root, f"{what} file '{pattern}' matched {len(found)} files "
                             f"({', '.join(p.name for p in found[:_SHOW])}); exactly one is needed"))
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


def _column(df: pd.DataFrame, name: str, path: Path) -> pd.Series:
    if name not in df.columns:
        shown = ", ".join(map(repr, list(df.columns)[:30]))
        raise ManifestError(f"{path}: no column {name!r}; the file has {shown}")
    return df[name]


def _apply_idspec(df: pd.DataFrame, spec: Any, path: Path, field_name: str) -> pd.Series:
    """Ids from a column, optionally cut out with a regex and reformatted (e.g. zero-padded)."""
    if isinstance(spec, str):
        spec = {"column": spec}
    values = _column(df, spec["column"], path).map(_norm)
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
                            f"(pattern/format): {', '.join(bad[:_SHOW])}")
    return pd.Series(out, index=df.index, dtype=object)


def _label_series(df: pd.DataFrame, spec: Any, path: Path, session: str | None) -> pd.Series:
    """One canonical label column from its spec (plain column, scaled column, or years between dates)."""

    def col(name: str) -> str:
        return name.replace("{session}", session) if session is not None else name

    if isinstance(spec, str):
        return _column(df, col(spec), path)
    if "years_between" in spec:
        start, end = (pd.to_datetime(_column(df, col(c), path), errors="coerce") for c in spec["years_between"])
        return (end - start).dt.days / 365.25
    series = _column(df, col(spec["column"]), path)
    if "missing" in spec:
        codes = {_norm(v) for v in spec["missing"]}
        series = series.where(~series.map(_norm).isin(codes))
    if "scale" not in spec:
        return series
    numeric = pd.to_numeric(series, errors="coerce")
    bad = series[numeric.isna() & series.notna()]
    if len(bad):
        raise ManifestError(f"{path}: column {spec['column']!r} must be numeric to be scaled; found "
                            f"{', '.join(sorted(set(map(str, bad)))[:_SHOW])}")
    return numeric * float(spec["scale"])


def _map_values(series: pd.Series, mapping: Mapping[Any, Any], path: Path, name: str) -> pd.Series:
    table = {_norm(k): v for k, v in mapping.items() if k != "*"}
    default_set = "*" in mapping
    default = mapping.get("*")
    unmapped: set[str] = set()

    def convert(v: Any) -> Any:
        key = _norm(v)
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
                            f"{', '.join(sorted(unmapped)[:_SHOW])} (map them, map them to null, or add a '*' default)")
    return mapped


def _coerce_label(series: pd.Series, name: str, path: Path) -> pd.Series:
    """Numeric canonical labels become floats (an unparsable value is an error); others stay text."""
    if LABEL_COLUMNS.get(name) == "float":
        numeric = pd.to_numeric(series, errors="coerce")
        bad = series[numeric.isna() & series.notna()]
        if len(bad):
            shown = ", ".join(sorted({str(v) for v in bad})[:_SHOW])
            raise ManifestError(f"{path}: label '{name}' must be numeric; found {shown} "
                                "(add a value map or list the text under labels/na_values)")
        return numeric.astype(float)
    text = series.map(_norm)
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
    which sessions exist. Unknown ids and duplicates are *not* handled here (see build_manifest).
    """
    spec = entry.labels
    if not spec:
        raise ConfigError(f"{entry.source}: dataset '{entry.name}' has no labels section")
    root = Path(root)
    df, path = _read_table(spec, root, entry, "label")
    ids = {"subject": _apply_idspec(df, spec["ids"]["subject"], path, "labels/ids/subject")}
    if "session" in spec["ids"]:
        ids["session"] = _apply_idspec(df, spec["ids"]["session"], path, "labels/ids/session")
    columns: dict[str, Any] = spec["columns"]
    wide = any("{session}" in c for c in _colspec_columns(columns.values()))
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


def _prepare_labels(entry: DatasetEntry, root: Path, images: pd.DataFrame) -> LabelTable:
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


# ----------------------------------------------------------------------------- splits
def _split_column(entry: DatasetEntry, root: Path, images: pd.DataFrame) -> pd.Series:
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
    df, path = _read_table(split, root, entry, "split")
    ids = _apply_idspec(df, split["ids"]["subject"], path, "split/ids/subject")
    raw = _column(df, split["column"], path).map(_norm)
    value_map = {_norm(k): v for k, v in (split.get("values") or {}).items()}
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
        raise ManifestError(f"{path}: split column {split['column']!r} has value(s) {sorted(bad)[:_SHOW]} that are not "
                            "train/test; map them under split/values")
    missing = sorted(set(subjects) - set(assigned))
    if missing and split.get("missing", "error") == "error":
        shown = ", ".join(missing[:_SHOW]) + (f" (+{len(missing) - _SHOW} more)" if len(missing) > _SHOW else "")
        raise ManifestError(f"{path}: {len(missing)} subject(s) on disk are not in the split file: {shown}")
    return subjects.map(lambda s: assigned.get(s, ""))


# ----------------------------------------------------------------------------- manifest
def _assemble(entry: DatasetEntry, root: Path, scan: ScanResult) -> tuple[pd.DataFrame, LabelTable | None]:
    images = scan.images.copy()
    if images.empty:
        found = f"{scan.n_files} file(s) under the root, none matching the patterns"
        if scan.broken_links:
            found += (f"; {len(scan.broken_links)} matching path(s) are broken links (git-annex/datalad content "
                      f"not retrieved? e.g. {scan.broken_links[0]})")
        raise DataMissingError(missing_message(entry, root, found))
    dup = images[images.duplicated(["subject", "session", "modality"], keep=False)]
    if len(dup):
        shown = ", ".join(dup["relpath"].head(_SHOW))
        raise ManifestError(f"{entry.source}: several files for one (subject, session, modality): {shown}. Add a "
                            "placeholder such as {run} for the part of the name that differs")
    images = images.sort_values(["subject", "session", "modality"], kind="stable").reset_index(drop=True)
    images["dataset"] = entry.name
    images["split"] = _split_column(entry, root, images)
    label_table: LabelTable | None = None
    if entry.labels:
        label_table = _prepare_labels(entry, root, images)
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
                            f"{', '.join(clash['relpath'].head(_SHOW))}")
    lookup = {(r.subject, r.session): r.abspath for r in best.itertuples()}
    base_lookup = {(r.subject, r.session_base): r.abspath for r in best.itertuples()}
    out = []
    for r in images.itertuples():
        path = lookup.get((r.subject, r.session)) or base_lookup.get((r.subject, r.session_base))
        out.append(path)
    return pd.Series(out, index=images.index, dtype=object)


def build_manifest(entry: DatasetEntry, root: str | Path, out: str | Path) -> pd.DataFrame:
    """Scan ``root``, attach labels, splits and masks, and write ``out`` (a manifest.parquet).

    Paths in the manifest are relative to ``out``'s directory, as the manifest contract requires.
    Returns the DataFrame that was written.
    """
    root, out = Path(root), Path(out)
    scan = scan_dataset(entry, root)
    images, _ = _assemble(entry, root, scan)
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


def _counts(series: pd.Series) -> dict[str, int]:
    return {_norm(k) or "": int(v) for k, v in series.value_counts(dropna=True).sort_index().items()}


def check_dataset(entry: DatasetEntry, root: str | Path) -> dict[str, Any]:
    """Report what is on disk next to what the paper reports (the caller writes it as JSON).

    Counts images and subjects per modality, lists subjects missing a modality, summarises masks
    and labels, and compares with ``entry.paper``. Label problems are reported, not raised.
    """
    root = Path(root)
    scan = scan_dataset(entry, root)
    images = scan.images
    report: dict[str, Any] = {
        "dataset": entry.name, "title": entry.title, "root": str(root.resolve()), "access": entry.access,
        "n_files_walked": scan.n_files, "n_images": int(len(images)),
        "n_subjects": int(images["subject"].nunique()) if len(images) else 0,
        "n_sessions": int(images[["subject", "session_base"]].drop_duplicates().shape[0]) if len(images) else 0,
        "broken_links": {"count": len(scan.broken_links), "examples": scan.broken_links[:_SHOW]},
    }
    per_mod: dict[str, Any] = {}
    for modality in entry.modalities:
        sub = images[images["modality"] == modality]
        per_mod[modality] = {"images": int(len(sub)), "subjects": int(sub["subject"].nunique())}
    report["per_modality"] = per_mod
    have = images.groupby("subject")["modality"].agg(set) if len(images) else pd.Series(dtype=object)
    expected = set(entry.modalities)
    missing = {s: sorted(expected - mods) for s, mods in have.items() if expected - mods}
    report["missing_modalities"] = {"n_subjects_complete": int(len(have) - len(missing)),
                                    "n_subjects_incomplete": len(missing), "by_subject": missing}
    if entry.mask:
        keys = images[["subject", "session"]].drop_duplicates()
        found = scan.masks[["subject", "session"]].drop_duplicates() if len(scan.masks) else keys.iloc[0:0]
        with_mask = keys.merge(found, how="inner")
        report["masks"] = {"mask_files": int(len(scan.masks)), "sessions": int(len(keys)),
                           "sessions_with_mask": int(len(with_mask))}
    if entry.labels and len(images):
        try:
            built, labels = _assemble(entry, root, scan)
        except BrainfmError as exc:
            report["labels"] = {"error": str(exc)}
        else:
            assert labels is not None
            label_cols = [c for c in labels.table.columns if c not in labels.keys]
            # a subject counts as labelled when any of its sessions has the label
            per_subject = built.groupby("subject", sort=True)[label_cols].first().reset_index()
            report["labels"] = {
                "file": str(labels.path), "rows": labels.n_rows, "rows_without_id": labels.n_without_id,
                "ids_without_images": {"count": len(labels.dropped_unknown),
                                       "examples": labels.dropped_unknown[:_SHOW]},
                "merged_conflicts": labels.conflicts,
                "subjects_with_label": {c: int(per_subject[c].notna().sum()) for c in label_cols},
                "value_counts": {c: _counts(per_subject[c]) for c in label_cols
                                 if c in ("sex", "diagnosis", "event", "idh", "demented", "asd", "pd")},
            }
            images = built
    if len(images) and "split" not in images:
        images = images.assign(split=_safe_split(entry, root, images))
    report["split"] = {"rule": entry.split,
                       "subjects_per_split": _counts(images.drop_duplicates("subject")["split"]) if "split" in images
                       else {}}
    report["paper"] = _compare_with_paper(entry, images)
    return report


def _safe_split(entry: DatasetEntry, root: Path, images: pd.DataFrame) -> pd.Series:
    try:
        return _split_column(entry, root, images)
    except BrainfmError:
        return pd.Series("", index=images.index, dtype=object)


def _compare_with_paper(entry: DatasetEntry, images: pd.DataFrame) -> dict[str, Any]:
    paper = entry.paper
    out: dict[str, Any] = {"section": paper["section"], "text": paper["text"]}
    comparisons: dict[str, Any] = {}
    subjects = images.drop_duplicates("subject") if len(images) else images

    def compare(key: str, found: int | None) -> None:
        if key in paper:
            comparisons[key] = {"paper": paper[key], "found": found,
                                "match": None if found is None else bool(found == paper[key])}

    compare("n_subjects", int(len(subjects)))
    compare("n_images", int(len(images)))
    fixed = entry.split["type"] in ("file", "fixed") and "split" in images
    compare("n_train", int((subjects["split"] == "train").sum()) if fixed else None)
    compare("n_test", int((subjects["split"] == "test").sum()) if fixed else None)
    if "modality_counts" in paper:
        comparisons["modality_counts"] = {
            m: {"paper": n, "found": int((images["modality"] == m).sum()) if len(images) else 0}
            for m, n in paper["modality_counts"].items()}
    out["comparison"] = comparisons
    if not fixed and any(k in paper for k in ("n_train", "n_test")):
        out["note"] = ("the paper's train/test sizes come from its own split; this dataset's split is decided by "
                       "the task's rule, so only totals are compared here")
    return out
