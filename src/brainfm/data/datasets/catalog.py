"""Where dataset entries are found: the user's directories first, then the entries shipped with brainfm.

The entries for every dataset the paper uses ship inside the package (``entries/``), so the CLI and
a workflow imported as a Snakemake module from another repository find them from any working
directory. A user adapts or adds a dataset without touching the package: an entry of the same name
in a user directory overrides the built-in one. Directories are searched in this order, the first
match wins:

1. directories passed explicitly (``search_path(user_dirs)``);
2. the directories in ``$BRAINFM_DATASETS`` (separated like ``PATH``);
3. ``config/datasets/`` in the working directory, when it exists;
4. the built-in entries.

An entry can also be named by its YAML path, which bypasses the search.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from brainfm.data.datasets.entry import DatasetEntry, read_dataset_entry
from brainfm.errors import ConfigError

__all__ = ["BUILTIN_ENTRIES", "USER_ENTRIES", "ENV_VAR", "search_path", "load_dataset_entry", "list_datasets",
           "is_builtin"]

BUILTIN_ENTRIES: Path = Path(__file__).resolve().parent / "entries"
USER_ENTRIES = Path("config/datasets")  # relative to the working directory
ENV_VAR = "BRAINFM_DATASETS"
_SUFFIXES = (".yaml", ".yml")


def search_path(user_dirs: Sequence[str | Path] = ()) -> tuple[Path, ...]:
    """The directories searched for entries, first match first (see the module docstring).

    A directory named explicitly (``user_dirs`` or ``$BRAINFM_DATASETS``) must exist: a typo
    would otherwise silently fall back to the built-in entry.
    """
    env = [d for d in os.environ.get(ENV_VAR, "").split(os.pathsep) if d]
    named = [(Path(d), "search directory") for d in user_dirs] + [(Path(d), f"${ENV_VAR} entry") for d in env]
    for directory, what in named:
        if not directory.is_dir():
            raise ConfigError(f"{directory}: dataset entry {what} is not a directory")
    dirs = [d for d, _ in named]
    if USER_ENTRIES.is_dir():
        dirs.append(USER_ENTRIES)
    dirs.append(BUILTIN_ENTRIES)
    return tuple(dict.fromkeys(dirs))


def is_builtin(entry: DatasetEntry) -> bool:
    """Whether ``entry`` is one shipped with brainfm (not a user's file)."""
    return entry.source.resolve().parent == BUILTIN_ENTRIES


def load_dataset_entry(name_or_path: str | Path, search_dirs: Sequence[str | Path] | None = None) -> DatasetEntry:
    """Load and validate an entry by name (the first match in ``search_dirs``) or by YAML path.

    ``search_dirs`` defaults to :func:`search_path`. Raises :class:`ConfigError` naming the file
    and the failing field, or the directories searched when no entry has that name.
    """
    dirs = search_path() if search_dirs is None else search_dirs
    return read_dataset_entry(_resolve(name_or_path, dirs))


def list_datasets(search_dirs: Sequence[str | Path] | None = None) -> list[str]:
    """Names of the entries found in ``search_dirs`` (default :func:`search_path`), sorted."""
    names: set[str] = set()
    for directory in search_path() if search_dirs is None else search_dirs:
        d = Path(directory)
        if d.is_dir():
            names.update(p.stem for p in d.iterdir() if p.suffix in _SUFFIXES and p.is_file())
    return sorted(names)


def _resolve(name_or_path: str | Path, search_dirs: Sequence[str | Path]) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in _SUFFIXES or candidate.is_file() or os.sep in str(name_or_path):
        if not candidate.is_file():
            raise ConfigError(f"{candidate}: dataset registry file not found")
        return candidate
    for directory in search_dirs:
        for suffix in _SUFFIXES:
            path = Path(directory) / f"{name_or_path}{suffix}"
            if path.is_file():
                return path
    known = list_datasets(search_dirs)
    raise ConfigError(f"no dataset registry entry named '{name_or_path}' in {[str(d) for d in search_dirs]}; "
                      f"known: {', '.join(known) if known else '(none)'}")
