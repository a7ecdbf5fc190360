"""What every config section shares: a frozen dataclass that round-trips through JSON.

A workflow rule passes a section to its ``brainfm`` command as ``spec.to_json()``; the command
rebuilds the same object with ``from_json``, which runs the same checks as reading the config
file (schema first, then the section's own rules). Snakemake sees the JSON as a parameter, so a
changed value reruns exactly the jobs that use it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from brainfm.config.schema import load_yaml, validate
from brainfm.errors import ConfigError

__all__ = ["Spec", "as_json", "read_json_arg"]

S = TypeVar("S", bound="Spec")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return value.to_dict() if isinstance(value, Spec) else dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def as_json(obj: Any) -> str:
    """Compact, key-sorted JSON: the same value always gives the same string (a stable rule param)."""
    return json.dumps(_plain(obj), sort_keys=True, separators=(",", ":"))


def read_json_arg(text: str) -> Any:
    """Inline JSON, or the path of a JSON/YAML file holding it (for running a step by hand)."""
    stripped = text.lstrip()
    if not stripped.startswith(("{", "[")) and Path(text).is_file():
        return load_yaml(Path(text).read_text())
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON ({exc}): {text[:80]!r}") from exc


class Spec:
    """Base of the typed sections. Subclasses are frozen dataclasses and set ``definition``.

    ``to_dict`` gives the section as the config would spell it, fully defaulted; ``from_dict``
    validates such a dict against the schema definition and builds the object (``_build``).
    Specs that carry a name (datasets, backbones, tasks, pretraining runs) keep it in ``name``
    and put it in the JSON too.
    """

    definition: ClassVar[str] = ""
    named: ClassVar[bool] = False

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)  # type: ignore[arg-type]
                if f.metadata.get("json", True)}

    def to_json(self) -> str:
        return as_json(self.to_dict())

    @classmethod
    def from_dict(cls: type[S], d: Mapping[str, Any], *, source: str = "spec", where: str = "") -> S:
        d = _plain(dict(d))  # tuples -> lists: JSON schema arrays are lists
        name = d.pop("name", None) if cls.named else None
        if cls.named and not name:
            raise ConfigError(f"{source}: {where or cls.definition}: a 'name' is required")
        where = where or (f"{cls.definition}:{name}" if name else cls.definition)
        validate(d, definition=cls.definition, source=source, where=where)
        return cls._build(d, name=name, source=source, where=where)

    @classmethod
    def from_json(cls: type[S], text: str | Mapping[str, Any]) -> S:
        return cls.from_dict(read_json_arg(text) if isinstance(text, str) else text)

    @classmethod
    def _build(cls: type[S], d: dict[str, Any], *, name: str | None, source: str, where: str) -> S:
        fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        kwargs = {k: _freeze(v) for k, v in d.items() if k in fields}
        if cls.named:
            kwargs["name"] = name
        return cls(**kwargs)


def _freeze(value: Any) -> Any:
    """Lists become tuples so a frozen spec is hashable-ish and cannot be mutated by accident."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value
