"""What is on disk next to what the paper reports: the check report of a dataset.

:func:`check_dataset` counts images, subjects and sessions per modality, lists subjects missing a
modality, summarises masks, labels and the split, and compares the totals with the counts the
paper gives (``paper`` in the entry), so a download can be checked before anything is trained on
it. Label problems are reported, not raised: the report is what a user reads to fix them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from brainfm.data.datasets.availability import MAX_SHOWN
from brainfm.data.datasets.build import assemble_manifest, split_column
from brainfm.data.datasets.entry import DatasetEntry
from brainfm.data.datasets.scan import scan_dataset
from brainfm.data.datasets.tables import normalize_cell
from brainfm.errors import BrainfmError

__all__ = ["check_dataset"]


def _counts(series: pd.Series) -> dict[str, int]:
    return {normalize_cell(k) or "": int(v) for k, v in series.value_counts(dropna=True).sort_index().items()}


def check_dataset(entry: DatasetEntry, root: str | Path) -> dict[str, Any]:
    """Report what is on disk next to what the paper reports (the caller writes it as JSON).

    Counts images and subjects per modality, lists subjects missing a modality, summarises masks
    and labels, and compares with ``entry.paper``. Label problems are reported, not raised.
    """
    root = Path(root)
    scan = scan_dataset(entry, root)
    images = scan.images
    report: dict[str, Any] = {
        "dataset": entry.name, "title": entry.title, "root": str(root.resolve()), "access": entry.access,
        "n_files_walked": scan.n_files, "n_images": int(len(images)),
        "n_subjects": int(images["subject"].nunique()) if len(images) else 0,
        "n_sessions": int(images[["subject", "session_base"]].drop_duplicates().shape[0]) if len(images) else 0,
        "broken_links": {"count": len(scan.broken_links), "examples": scan.broken_links[:MAX_SHOWN]},
    }
    per_mod: dict[str, Any] = {}
    for modality in entry.modalities:
        sub = images[images["modality"] == modality]
        per_mod[modality] = {"images": int(len(sub)), "subjects": int(sub["subject"].nunique())}
    report["per_modality"] = per_mod
    have = images.groupby("subject")["modality"].agg(set) if len(images) else pd.Series(dtype=object)
    expected = set(entry.modalities)
    missing = {s: sorted(expected - mods) for s, mods in have.items() if expected - mods}
    report["missing_modalities"] = {"n_subjects_complete": int(len(have) - len(missing)),
                                    "n_subjects_incomplete": len(missing), "by_subject": missing}
    if entry.mask:
        keys = images[["subject", "session"]].drop_duplicates()
        found = scan.masks[["subject", "session"]].drop_duplicates() if len(scan.masks) else keys.iloc[0:0]
        with_mask = keys.merge(found, how="inner")
        report["masks"] = {"mask_files": int(len(scan.masks)), "sessions": int(len(keys)),
                           "sessions_with_mask": int(len(with_mask))}
    if entry.labels and len(images):
        try:
            built, labels = assemble_manifest(entry, root, scan)
        except BrainfmError as exc:
            report["labels"] = {"error": str(exc)}
        else:
            assert labels is not None
            label_cols = [c for c in labels.table.columns if c not in labels.keys]
            # a subject counts as labelled when any of its sessions has the label
            per_subject = built.groupby("subject", sort=True)[label_cols].first().reset_index()
            report["labels"] = {
                "file": str(labels.path), "rows": labels.n_rows, "rows_without_id": labels.n_without_id,
                "ids_without_images": {"count": len(labels.dropped_unknown),
                                       "examples": labels.dropped_unknown[:MAX_SHOWN]},
                "merged_conflicts": labels.conflicts,
                "subjects_with_label": {c: int(per_subject[c].notna().sum()) for c in label_cols},
                "value_counts": {c: _counts(per_subject[c]) for c in label_cols
                                 if c in ("sex", "diagnosis", "event", "idh", "demented", "asd", "pd")},
            }
            images = built
    if len(images) and "split" not in images:
        images = images.assign(split=_safe_split(entry, root, images))
    report["split"] = {"rule": entry.split,
                       "subjects_per_split": _counts(images.drop_duplicates("subject")["split"]) if "split" in images
                       else {}}
    report["paper"] = _compare_with_paper(entry, images)
    return report


def _safe_split(entry: DatasetEntry, root: Path, images: pd.DataFrame) -> pd.Series:
    try:
        return split_column(entry, root, images)
    except BrainfmError:
        return pd.Series("", index=images.index, dtype=object)


def _compare_with_paper(entry: DatasetEntry, images: pd.DataFrame) -> dict[str, Any]:
    paper = entry.paper
    out: dict[str, Any] = {"section": paper["section"], "text": paper["text"]}
    comparisons: dict[str, Any] = {}
    subjects = images.drop_duplicates("subject") if len(images) else images

    def compare(key: str, found: int | None) -> None:
        if key in paper:
            comparisons[key] = {"paper": paper[key], "found": found,
                                "match": None if found is None else bool(found == paper[key])}

    compare("n_subjects", int(len(subjects)))
    compare("n_images", int(len(images)))
    fixed = entry.split["type"] in ("file", "fixed") and "split" in images
    compare("n_train", int((subjects["split"] == "train").sum()) if fixed else None)
    compare("n_test", int((subjects["split"] == "test").sum()) if fixed else None)
    if "modality_counts" in paper:
        comparisons["modality_counts"] = {
            m: {"paper": n, "found": int((images["modality"] == m).sum()) if len(images) else 0}
            for m, n in paper["modality_counts"].items()}
    out["comparison"] = comparisons
    if not fixed and any(k in paper for k in ("n_train", "n_test")):
        out["note"] = ("the paper's train/test sizes come from its own split; this dataset's split is decided by "
                       "the task's rule, so only totals are compared here")
    return out
