"""What a user is told when a dataset is not (fully) on disk.

A missing root, a root with no matching file or a missing label file raises
:class:`DataMissingError` whose message says which dataset, where it looked, the access type and
the steps to get it: that is the whole message a user of ``snakemake --configfile
config/paper.yaml`` sees, so it must be enough to act on.
"""

from __future__ import annotations

from pathlib import Path

from brainfm.data.datasets.catalog import USER_ENTRIES, is_builtin
from brainfm.data.datasets.entry import DatasetEntry
from brainfm.errors import DataMissingError

__all__ = ["ACCESS_TEXT", "MAX_SHOWN", "missing_message", "ensure_available"]

ACCESS_TEXT = {
    "open": "open: free download, no account needed (the license terms below still apply)",
    "registration": "registration: create a free account or fill in a short form first",
    "dua": "data use agreement: apply and sign a DUA; access is granted after review (days to weeks)",
}
MAX_SHOWN = 10  # examples listed in an error message or a check report


def missing_message(entry: DatasetEntry, root: str | Path, reason: str) -> str:
    """The user-facing explanation of a dataset that is not (fully) on disk."""
    patterns = "; ".join(f"{m}: {p}" for m, ps in entry.modalities.items() for p in ps)
    steps = "\n".join("    " + line if line.strip() else "" for line in entry.how_to_get.strip().splitlines())
    lines = [
        f"dataset '{entry.name}' ({entry.title}) is not available: {reason}.",
        f"  looked in: {Path(root).resolve()}",
        f"  for files like: {patterns}",
        f"  access: {ACCESS_TEXT.get(entry.access, entry.access)}",
        f"  homepage: {entry.homepage}",
        f"  license/terms: {entry.license.strip()}",
        "  how to get it:",
        steps,
        f"  Then point `datasets.<key>.path` in your config at that folder (registry entry: {entry.source}).",
    ]
    if is_builtin(entry):
        lines.append(f"  If your copy is laid out differently, save an edited copy of that entry as "
                     f"{USER_ENTRIES / entry.name}.yaml; it overrides the built-in one.")
    return "\n".join(lines)


def ensure_available(entry: DatasetEntry, root: str | Path) -> None:
    """Raise :class:`DataMissingError` early (e.g. when the workflow is planned) if ``root`` is absent."""
    root = Path(root)
    if not root.is_dir():
        raise DataMissingError(missing_message(entry, root, "the dataset root does not exist"))
