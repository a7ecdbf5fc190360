"""Error types that carry a user-facing message.

Everything a user can cause (a bad file, a bad config, a leaking split) raises a subclass of
:class:`BrainfmError`; the CLI prints these as one line and exits with status 2 instead of a
traceback. Programming errors stay ordinary exceptions.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


class BrainfmError(Exception):
    """Base class for errors whose message is meant for the user."""


class InputError(BrainfmError):
    """A file the user supplied is unusable; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class CheckpointError(InputError):
    """A checkpoint cannot be loaded into the requested architecture."""


class ConfigError(BrainfmError):
    """The configuration is invalid or inconsistent."""


class ManifestError(BrainfmError):
    """A dataset manifest or label file violates its schema."""


class LeakageError(BrainfmError):
    """A split shares subjects between partitions that must be disjoint."""

    def __init__(self, what: str, subjects: Iterable[str]):
        self.subjects = sorted({str(s) for s in subjects})
        shown = ", ".join(self.subjects[:10])
        more = f" (+{len(self.subjects) - 10} more)" if len(self.subjects) > 10 else ""
        super().__init__(f"{what}: {len(self.subjects)} shared subject(s): {shown}{more}")


class DataMissingError(BrainfmError):
    """A real dataset is not on disk; the message says what to download and where to put it."""
