"""What a config needs from the user, and whether it is there: real datasets and weights files.

Paths are the config's, relative to the working directory (as Snakemake reads them). A dataset
counts as found when its root is a directory (:func:`brainfm.data.datasets.ensure_available`,
the check the workflow makes first); its files and labels are checked by its ``real_dataset``
job. A missing one carries the registry entry's access type and steps to obtain it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from brainfm.config import Config
from brainfm.errors import DataMissingError

__all__ = ["dataset_inventory", "weights_inventory"]


def dataset_inventory(cfg: Config) -> list[dict[str, Any]]:
    """One row per real dataset source of ``cfg`` (``local`` or ``download``): found or what to do."""
    from brainfm.data.datasets import ensure_available, load_dataset_entry
    from brainfm.data.datasets.availability import ACCESS_TEXT

    rows = []
    for name in sorted(n for n, d in cfg.datasets.items() if d.is_real):
        spec = cfg.datasets[name]
        entry = load_dataset_entry(spec.registry)
        row: dict[str, Any] = {
            "dataset": name, "registry": str(entry.source), "source": spec.source, "path": spec.path,
            "title": entry.title, "access": entry.access, "access_text": ACCESS_TEXT.get(entry.access, entry.access),
            "homepage": entry.homepage, "found": True, "steps": entry.how_to_get.strip(), "message": "",
        }
        try:
            ensure_available(entry, spec.path)
        except DataMissingError as exc:
            row.update(found=False, message=str(exc))
        if spec.download and not row["found"]:
            row["message"] += ("\n  This dataset is `source: download`: its real_dataset job fetches it into "
                               f"{spec.path} (the submit host or compute node needs internet access).")
        rows.append(row)
    return rows


def weights_inventory(cfg: Config) -> list[dict[str, Any]]:
    """One row per user-supplied weights file (:meth:`Config.user_weights`): found or missing, with its key."""
    return [{"path": w.path, "key": w.key, "encoder": w.encoder, "found": Path(w.path).is_file()}
            for w in sorted(cfg.user_weights().values(), key=lambda w: w.key)]
