"""Real datasets: their registry entries and the manifest each root on disk becomes.

* :mod:`~brainfm.data.datasets.entry`        ``DatasetEntry``: one validated YAML entry per dataset
* :mod:`~brainfm.data.datasets.catalog`      where entries are found: user directories, then the built-in ones
* :mod:`~brainfm.data.datasets.patterns`     file patterns with ``{subject}``/``{session}`` placeholders -> regexes
* :mod:`~brainfm.data.datasets.scan`         one walk of a dataset root, every image and mask path parsed
* :mod:`~brainfm.data.datasets.tables`       label and split tables mapped onto the canonical label columns
* :mod:`~brainfm.data.datasets.build`        ``build_manifest``: scan + labels + splits + masks -> manifest.parquet
* :mod:`~brainfm.data.datasets.check`        ``check_dataset``: what is on disk next to the paper's counts
* :mod:`~brainfm.data.datasets.availability` the message that tells a user how to get a missing dataset
* :mod:`~brainfm.data.datasets.labelmap`     segmentation label maps (raw mask values -> WT/TC/ET regions)
* :mod:`~brainfm.data.datasets.real`         ``real_dataset``: the workflow step (fetch, manifest, check)

Downloading the open datasets is :mod:`brainfm.data.fetch`.
"""

from brainfm.data.datasets.availability import ensure_available, missing_message
from brainfm.data.datasets.build import build_manifest
from brainfm.data.datasets.catalog import BUILTIN_ENTRIES, list_datasets, load_dataset_entry, search_path
from brainfm.data.datasets.check import check_dataset
from brainfm.data.datasets.entry import DatasetEntry, dataset_schema, read_dataset_entry
from brainfm.data.datasets.patterns import compile_pattern
from brainfm.data.datasets.real import real_dataset
from brainfm.data.datasets.scan import scan_dataset
from brainfm.data.datasets.tables import read_labels

__all__ = [
    "BUILTIN_ENTRIES",
    "DatasetEntry",
    "build_manifest",
    "check_dataset",
    "compile_pattern",
    "dataset_schema",
    "ensure_available",
    "list_datasets",
    "load_dataset_entry",
    "missing_message",
    "read_dataset_entry",
    "read_labels",
    "real_dataset",
    "scan_dataset",
    "search_path",
]
