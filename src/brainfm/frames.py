"""Reading the tables one step hands to the next, with errors that name the file.

Steps pass results on as parquet tables (written by :mod:`brainfm.atomic`, so never half-written
by us, but a user can copy, truncate or hand-edit one). Read raw, a damaged table surfaces as a
pyarrow traceback that names neither the file nor what it was meant to hold; these readers turn
that into an :class:`~brainfm.errors.InputError` saying which file, what it should have been, and
which columns it lacks, before the step writes anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from brainfm.errors import BrainfmError, InputError

__all__ = ["read_frame", "read_frames"]


def read_frame(path: str | Path, what: str, columns: Sequence[str] = ()) -> pd.DataFrame:
    """The parquet table at ``path`` (``what`` it holds, for the message), with ``columns`` present."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"{what} does not exist")
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file (ArrowInvalid, OSError, ...)
        raise InputError(path, f"cannot read {what} ({exc.__class__.__name__}: {exc})") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(path, f"{what} lacks column(s) {missing}")
    return frame


def read_frames(paths: Iterable[str | Path], what: str, columns: Sequence[str] = ()) -> pd.DataFrame:
    """The tables at ``paths`` concatenated (each checked by :func:`read_frame`); at least one path."""
    frames = [read_frame(p, what, columns) for p in paths]
    if not frames:
        raise BrainfmError(f"no {what} given")
    return pd.concat(frames, ignore_index=True)
