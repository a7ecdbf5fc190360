"""The configuration's JSON schema: types, allowed values and every default, in one file.

``schema.yaml`` beside this module is the only place a config value is typed or defaulted.
:func:`validate` checks a whole config (or one section against one of the schema's
``definitions``), fills the defaults in place, and turns the first violation into a
:class:`~brainfm.errors.ConfigError` that names the file and the key, e.g.
``config/config.yaml: tasks.brain_age.split.type: 'kfold' is not one of ['holdout', 'cv']``.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from importlib import resources
from typing import Any

from brainfm.errors import ConfigError

__all__ = ["load_schema", "load_yaml", "validate", "defaults_of", "key_path"]


def load_yaml(text: str) -> Any:
    """YAML with libyaml's C parser where available (the pure-Python one costs ~1 s per config)."""
    import yaml

    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@functools.cache
def load_schema() -> dict[str, Any]:
    return load_yaml(resources.files("brainfm.config").joinpath("schema.yaml").read_text())


@functools.cache
def _validator_class() -> Any:
    """Draft 2020-12 validator that also writes each ``default`` into the instance it checks."""
    from jsonschema import Draft202012Validator, validators

    check_properties = Draft202012Validator.VALIDATORS["properties"]

    def properties_with_defaults(validator: Any, properties: Mapping[str, Any], instance: Any,
                                 schema: Mapping[str, Any]) -> Any:
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from check_properties(validator, properties, instance, schema)

    return validators.extend(Draft202012Validator, {"properties": properties_with_defaults})


@functools.cache
def _validator(definition: str | None) -> Any:
    schema = load_schema()
    if definition is not None:
        if definition not in schema["definitions"]:
            raise KeyError(f"no schema definition {definition!r}")
        schema = {"$schema": schema["$schema"], "definitions": schema["definitions"],
                  "$ref": f"#/definitions/{definition}"}
    return _validator_class()(schema)


def key_path(parts: Any) -> str:
    """``("tasks", "brain_age", "split")`` -> ``tasks.brain_age.split`` (list items as ``[i]``)."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def validate(instance: dict[str, Any], *, definition: str | None = None, source: str = "config",
             where: str = "") -> dict[str, Any]:
    """Check ``instance`` (the whole config, or one ``definitions`` entry) and fill its defaults.

    ``where`` is the key of ``instance`` inside the config (e.g. ``tasks.brain_age``), so an
    error in a section names its full key. Returns ``instance`` (modified in place).
    """
    validator = _validator(definition)
    errors = sorted(validator.iter_errors(instance), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if errors:
        err = errors[0]
        key = key_path([*([where] if where else []), *err.absolute_path]) or "(top level)"
        raise ConfigError(f"{source}: {key}: {_describe(err)}")
    return instance


def _describe(err: Any) -> str:
    if err.validator in ("additionalProperties", "unevaluatedProperties"):
        return (err.message.replace("Additional properties are not allowed", "unknown key(s)")
                .replace("Unevaluated properties are not allowed", "unknown key(s)"))
    if "propertyNames" in err.schema_path:
        known = err.validator_value if err.validator == "enum" else None
        return f"unknown key {err.instance!r}" + (f" (known: {', '.join(map(str, known))})" if known else "")
    return err.message


def defaults_of(definition: str) -> dict[str, Any]:
    """The defaults of one schema definition (e.g. ``head``), as a fresh dict."""
    return validate({}, definition=definition)
