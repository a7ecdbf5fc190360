"""The ``real_dataset`` step: a dataset of the config on disk (downloaded when open) -> manifest + check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from brainfm.atomic import write_json
from brainfm.data.datasets.build import build_manifest
from brainfm.data.datasets.catalog import load_dataset_entry
from brainfm.data.datasets.check import check_dataset

__all__ = ["real_dataset"]


def real_dataset(dataset: Any, manifest: str | Path, check: str | Path) -> pd.DataFrame:
    """Find ``dataset``'s registry entry, fetch it if its source is ``download``, build its manifest.

    ``dataset`` is a :class:`brainfm.config.DatasetSpec` (``registry`` names the entry, ``path`` the
    root); ``check`` receives what was found next to the paper's counts. A missing dataset raises
    :class:`~brainfm.errors.DataMissingError` with the entry's instructions.
    """
    from brainfm.data.fetch import fetch_dataset

    entry = load_dataset_entry(dataset.registry)
    root = Path(dataset.path)
    if dataset.download:
        fetch_dataset(entry, root)
    frame = build_manifest(entry, root, Path(manifest))
    write_json(check, check_dataset(entry, root))
    return frame
