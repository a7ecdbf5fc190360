"""Assembling a task's samples: cached features joined with manifest labels.

A sample is one (subject, session): the features of the task's modalities are averaged (late
fusion, as in the paper), labels come from the manifest, and the paper's exclusions are applied
as an explicit, logged filter. Nothing is dropped silently: every exclusion is counted in
:attr:`TaskData.excluded` and ends up in ``metrics.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from brainfm.errors import ConfigError, ManifestError
from brainfm.config import TaskSpec

__all__ = ["TaskData", "build_task_data", "session_labels", "complete_sessions", "note_missing_modality"]


@dataclass
class TaskData:
    spec: TaskSpec
    table: pd.DataFrame  # one row per sample, aligned with x and y
    x: np.ndarray  # (N, D) float32
    y: np.ndarray  # (N,) class index / regression target, or (N, 2) time and event
    excluded: dict[str, int] = field(default_factory=dict)
    manifest: pd.DataFrame | None = None  # the labels it was assembled from (a split_from task re-plans on it)

    @property
    def subject_labels(self) -> pd.Series | None:
        """Stratification label per subject (most frequent across sessions)."""
        if not self.spec.stratify:
            return None
        col = "y" if self.spec.stratify in (self.spec.target, "y") else self.spec.stratify
        return self.table.groupby("subject")[col].agg(lambda s: s.mode().iloc[0])


def session_labels(manifest: pd.DataFrame) -> pd.DataFrame:
    """One label row per (subject, session): labels are shared by all modalities of a session."""
    drop = [c for c in ("path", "mask_path", "modality") if c in manifest.columns]
    table = manifest.drop(columns=drop).drop_duplicates(["subject", "session"]).reset_index(drop=True)
    return table


def build_task_data(spec: TaskSpec, features, manifest: pd.DataFrame) -> TaskData:
    """Join fused features (a :class:`brainfm.features.FeatureStore`) with labels; apply the task's selection."""
    from brainfm.features import fuse_modalities

    if spec.features == "patch_central":
        matrix = features.patch_central
        if matrix is None:
            raise ConfigError(f"task {spec.name}: features 'patch_central' were not extracted for "
                              f"{features.path}; enable central_range for this dataset")
    else:
        matrix = features.cls
    if spec.unit == "image":
        # one sample per image (e.g. MRI sequence classification): no fusion, the modality is the label
        index = features.index.reset_index(drop=True)
        chosen = index["modality"].isin(spec.modalities).to_numpy()
        keys = index.loc[chosen, ["subject", "session", "modality"]].reset_index(drop=True)
        x = np.asarray(matrix)[chosen]
    else:
        # the paper keeps only cases with every modality a task fuses (e.g. UPENN-GBM Cox: all four):
        # a session lacking one is dropped and counted, not an error
        keys, x = fuse_modalities(features.index, matrix, spec.modalities, on_missing="drop")
    data = assemble(spec, keys, x, manifest, source=f"features {features.path}")
    return note_missing_modality(data, int(keys.attrs.get("n_dropped", 0)))


def complete_sessions(manifest: pd.DataFrame, modalities: tuple[str, ...]) -> tuple[pd.DataFrame, int]:
    """The (subject, session) keys of ``manifest`` holding every one of ``modalities``, and how many lack one."""
    sessions = manifest[["subject", "session"]].astype(str).drop_duplicates().reset_index(drop=True)
    rows = manifest[manifest["modality"].astype(str).isin(set(modalities))]
    have = rows.assign(subject=rows["subject"].astype(str), session=rows["session"].astype(str)).groupby(
        ["subject", "session"])["modality"].nunique()
    full = set(have[have == len(set(modalities))].index)
    keep = [(s, e) in full for s, e in zip(sessions["subject"], sessions["session"])]
    return sessions[keep].reset_index(drop=True), int(len(sessions) - sum(keep))


def note_missing_modality(data: TaskData, n: int) -> TaskData:
    """Record ``n`` sessions dropped for lacking a modality in ``data.excluded`` (written to metrics.json)."""
    if n:
        data.excluded = {"missing_modality": n, **data.excluded}
    return data


def assemble(spec: TaskSpec, keys: pd.DataFrame, x: np.ndarray, manifest: pd.DataFrame,
             source: str = "features") -> TaskData:
    """Join per-(subject, session) feature rows with labels and apply the task's selection rules."""
    labels = session_labels(manifest)
    image_unit = spec.unit == "image"
    cols = ["subject", "session", "modality"] if image_unit else ["subject", "session"]
    keys = keys[cols].astype(str).reset_index(drop=True)
    table = keys.merge(labels, on=["subject", "session"], how="left", indicator=True)
    stale = table[table["_merge"] == "left_only"]
    if len(stale):
        raise ManifestError(f"{source} contain {len(stale)} (subject, session) not in the "
                            f"manifest of {spec.dataset} (stale features?): "
                            + ", ".join(f"{r.subject}/{r.session}" for r in stale.head(5).itertuples()))
    table = table.drop(columns="_merge")
    if spec.target not in table.columns:
        raise ConfigError(f"task {spec.name}: target column '{spec.target}' not in the manifest of {spec.dataset}")
    if image_unit:
        # keep (subject, session) a unique sample key for paired statistics across backbones
        table["session"] = table["session"] + ":" + table["modality"]
    excluded: dict[str, int] = {}
    keep = np.ones(len(table), dtype=bool)

    if spec.query:
        try:
            selected = table.eval(spec.query)
        except Exception as exc:
            raise ConfigError(f"task {spec.name}: cannot evaluate query {spec.query!r}: {exc}") from exc
        excluded["query"] = int((~selected & keep).sum())
        keep &= selected.to_numpy(dtype=bool)

    target = table[spec.target]
    missing = target.isna().to_numpy()
    excluded["missing_label"] = int((missing & keep).sum())
    keep &= ~missing

    if spec.kind in ("classification", "knn"):
        values = target
        if spec.binarize:
            thr = float(spec.binarize["threshold"])
            num = pd.to_numeric(target, errors="coerce")
            values = pd.Series(np.where(num > thr, spec.binarize.get("above", 0),
                                        spec.binarize.get("at_or_below", 1)), index=table.index)
        lookup = {_norm(c): i for i, c in enumerate(spec.classes)}
        idx = np.array([lookup.get(_norm(v), -1) for v in values])
        excluded["other_class"] = int(((idx < 0) & keep).sum())
        keep &= idx >= 0
        y = idx.astype(np.float32)
    elif spec.kind == "regression":
        y = pd.to_numeric(target, errors="coerce").to_numpy(dtype=np.float32)
    else:  # survival
        if "event" not in table.columns:
            raise ConfigError(f"task {spec.name}: survival needs an 'event' column")
        time = pd.to_numeric(target, errors="coerce").to_numpy(dtype=np.float32)
        event = pd.to_numeric(table["event"], errors="coerce").to_numpy(dtype=np.float32)
        bad = np.isnan(event) & keep
        excluded["missing_event"] = int(bad.sum())
        keep &= ~np.isnan(event)
        if (time[keep] < 0).any():
            raise ManifestError(f"task {spec.name}: negative survival times in {spec.dataset}")
        y = np.stack([time, event], axis=1)

    table = table[keep].reset_index(drop=True)
    x = np.asarray(x, dtype=np.float32)[keep]
    y = y[keep]
    if len(table) == 0:
        raise ConfigError(f"task {spec.name}: no samples left after selection ({excluded})")
    table["y"] = y if y.ndim == 1 else y[:, 0]
    return TaskData(spec, table, x, y, {k: v for k, v in excluded.items() if v}, manifest)


def _norm(v: object) -> str:
    """Compare labels as strings so 1, 1.0 and '1' name the same class."""
    try:
        f = float(v)  # type: ignore[arg-type]
        return str(int(f)) if f.is_integer() else str(f)
    except (TypeError, ValueError):
        return str(v)
