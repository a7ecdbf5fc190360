"""A dataset entry: one YAML file per real dataset, validated into a :class:`DatasetEntry`.

An entry records where a dataset comes from and on what terms, how its files are laid out and
how its labels are coded (schema: ``brainfm/schemas/dataset.schema.yaml``). The schema checks the
shape; :func:`read_dataset_entry` then checks what a schema cannot say (patterns compile,
placeholders and label keys agree), so a broken entry fails when it is read, naming the file and
the field, not halfway through a scan. Where entries are looked up by name is
:mod:`brainfm.data.datasets.catalog`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from brainfm.data.datasets.patterns import CompiledPattern, compile_pattern
from brainfm.data.manifest import REQUIRED_COLUMNS
from brainfm.errors import ConfigError

__all__ = ["DatasetEntry", "dataset_schema", "read_dataset_entry", "label_source_columns"]

_RESERVED_COLUMNS = frozenset(REQUIRED_COLUMNS) | {"mask_path"}


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


def label_source_columns(specs: Iterable[Any]) -> list[str]:
    """The label-table columns that ``labels/columns`` specs read (a plain name, a scaled column, two dates)."""
    cols: list[str] = []
    for spec in specs:
        if isinstance(spec, str):
            cols.append(spec)
        elif "years_between" in spec:
            cols.extend(spec["years_between"])
        else:
            cols.append(spec["column"])
    return cols


def read_dataset_entry(path: str | Path) -> DatasetEntry:
    """Read and validate the entry in the YAML file ``path``.

    Raises :class:`ConfigError` naming the file and the failing field.
    """
    path = Path(path)
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


def _check_entry(entry: DatasetEntry) -> None:
    """What the schema cannot say: patterns compile, placeholders and label keys are consistent."""
    where = str(entry.source)
    for name, regex in entry.placeholders.items():
        _check_regex(regex, where, f"placeholders/{name}")
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
        wide = any("{session}" in c for c in label_source_columns(labels["columns"].values()))
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
        _check_regex(split["test_path_regex"], where, "split/test_path_regex")
    if "segmentation" in entry.raw:  # values declared once, regions nested (what the schema cannot say)
        from brainfm.data.datasets.labelmap import LabelMap

        LabelMap.from_mapping(entry.raw["segmentation"], f"{where}: field 'segmentation'")
    for i, item in enumerate(entry.download):
        if item.get("archive", "none") != "none" and item.get("dest") in (".", "./"):
            raise ConfigError(f"{where}: field 'download/{i}/dest': an archive must unpack into a "
                              "sub-directory of the root, not the root itself")


def _check_regex(regex: str, where: str, field_name: str) -> None:
    try:
        re.compile(regex)
    except re.error as exc:
        raise ConfigError(f"{where}: field '{field_name}': bad regular expression ({exc})") from exc


def _check_idspec(spec: Any, where: str, field_name: str) -> None:
    if isinstance(spec, dict) and "pattern" in spec:
        _check_regex(spec["pattern"], where, f"{field_name}/pattern")


def _compile_or_fail(pattern: str, entry: DatasetEntry, field_name: str) -> CompiledPattern:
    try:
        return compile_pattern(pattern, entry.placeholders)
    except ConfigError as exc:
        raise ConfigError(f"{entry.source}: field '{field_name}': {exc}") from exc
