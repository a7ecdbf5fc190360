"""One walk of a dataset root: every image and mask path an entry's patterns describe, parsed.

The walk follows symlinked directories (datasets are often assembled from links, DataLad and
git-annex trees are links to content-addressed blobs) but visits each real directory once, and
it records matching links whose target is missing, so that "content not fetched" can be told
apart from "no such files".
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from brainfm.data.datasets.availability import ensure_available
from brainfm.data.datasets.entry import DatasetEntry
from brainfm.data.datasets.patterns import CompiledPattern, compile_pattern
from brainfm.errors import ConfigError

__all__ = ["ScanResult", "scan_dataset"]


@dataclass
class ScanResult:
    """What one walk of a dataset root found."""

    images: pd.DataFrame  # modality, subject, session, session_base, site (or None), relpath, abspath
    masks: pd.DataFrame  # subject, session, session_base, priority, relpath, abspath
    broken_links: list[str]  # matched paths whose target is missing (e.g. git-annex content not fetched)
    n_files: int


def scan_dataset(entry: DatasetEntry, root: str | Path) -> ScanResult:
    """Walk ``root`` once and parse every image and mask path the entry's patterns describe."""
    root = Path(root)
    ensure_available(entry, root)
    image_patterns = [(m, compile_pattern(p, entry.placeholders)) for m, ps in entry.modalities.items() for p in ps]
    mask_patterns = [compile_pattern(p, entry.placeholders) for p in entry.mask]
    images: dict[str, dict[str, Any]] = {}
    masks: list[dict[str, Any]] = []
    broken: list[str] = []
    n_files = 0
    for rel in _walk(root):
        n_files += 1
        for modality, cp in image_patterns:
            m = cp.regex.fullmatch(rel)
            if not m:
                continue
            if rel in images and images[rel]["modality"] != modality:
                raise ConfigError(f"{entry.source}: {rel} matches the patterns of both {images[rel]['modality']} "
                                  f"and {modality}; make the patterns more specific")
            if rel in images:
                continue
            absolute = root / rel
            if not absolute.exists():
                broken.append(rel)
                break
            groups = m.groupdict()
            session, base = _session_of(groups, cp)
            images[rel] = {"modality": modality, "subject": groups["subject"], "session": session,
                           "session_base": base, "site": groups.get("site"), "relpath": rel,
                           "abspath": absolute}
        for priority, cp in enumerate(mask_patterns):
            m = cp.regex.fullmatch(rel)
            if m and rel not in images:
                if not (root / rel).exists():
                    broken.append(rel)
                    break
                groups = m.groupdict()
                session, base = _session_of(groups, cp)
                masks.append({"subject": groups["subject"], "session": session, "session_base": base,
                              "priority": priority, "relpath": rel, "abspath": root / rel})
                break
    image_cols = ["modality", "subject", "session", "session_base", "site", "relpath", "abspath"]
    mask_cols = ["subject", "session", "session_base", "priority", "relpath", "abspath"]
    return ScanResult(pd.DataFrame(list(images.values()), columns=image_cols),
                      pd.DataFrame(masks, columns=mask_cols), broken, n_files)


def _walk(root: Path) -> Iterable[str]:
    """Relative POSIX paths of every file under ``root``, skipping hidden directories.

    Symlinked directories are followed (datasets are often assembled from links), each real
    directory once, so a link cycle cannot make the walk endless.
    """
    root_str = str(root)
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root_str, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = os.path.relpath(dirpath, root_str)
        prefix = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        for f in sorted(filenames):
            if not f.startswith("."):
                yield prefix + f


def _session_of(groups: Mapping[str, str], compiled: CompiledPattern) -> tuple[str, str]:
    """(composite session id, base session) for a match: qualifiers are appended as name-value."""
    base = groups.get("session")
    parts = ([base] if base else []) + [f"{q}-{groups[q]}" for q in compiled.qualifiers]
    return ("_".join(parts) or "0"), (base or "0")
