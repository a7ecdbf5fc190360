"""The JSON schema check shared by the benchmark tests: every key present, every value of its type."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

NUMBER = (int, float)
OPTIONAL_LIST = (list, type(None))


def check_schema(value: Any, schema: Any, where: str = "report") -> None:
    """``schema`` is a type (or tuple of types), a dict of key -> schema, or a one-item list (every element)."""
    if isinstance(schema, dict):
        assert isinstance(value, dict), f"{where} is {type(value).__name__}, not an object"
        missing = sorted(set(schema) - set(value))
        assert not missing, f"{where} lacks keys {missing}"
        for key, sub in schema.items():
            check_schema(value[key], sub, f"{where}.{key}")
    elif isinstance(schema, list):
        assert isinstance(value, list) and value, f"{where} is not a non-empty list"
        for i, item in enumerate(value):
            check_schema(item, schema[0], f"{where}[{i}]")
    else:
        ok = isinstance(value, schema) and not (isinstance(value, bool) and bool not in _as_tuple(schema))
        assert ok, f"{where} = {value!r} is not {schema}"


def _as_tuple(schema: Any) -> tuple:
    return schema if isinstance(schema, tuple) else (schema,)


def read_report(path: Path) -> dict[str, Any]:
    """The report as written on disk (what a reader of results/bench gets)."""
    return json.loads(Path(path).read_text())


MACHINE = {"python": str, "numpy": str, "torch": str, "platform": str, "processor": str, "cpu_count": int,
           "torch_threads": int, "cuda": bool, "load_average": OPTIONAL_LIST}
