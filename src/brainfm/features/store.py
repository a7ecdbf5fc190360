"""The feature store: frozen-encoder features of one (backbone, dataset), read by every head.

Directory layout (written atomically by :func:`brainfm.features.extract.extract_features`)::

    index.parquet      one row per volume (dataset, subject, session, modality, ...), array order
    cls.npy            (N, embed_dim) float32 -- the volume representation
    layer_<name>.npy   (N, dim) float32 per requested block/stage (CKA)
    patch_central.npy  optional (N, dim) float32 -- mean patch token over central axial slices
    meta.json          encoder, weights + sha256, protocol, counts, timing

Features are extracted once and cached because every downstream head (6 label ratios x seeds x
tasks) reads the same frozen features; the heads never touch pixels.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainfm.atomic import save_npy, write_json, write_parquet
from brainfm.errors import ConfigError, InputError, ManifestError

__all__ = ["FeatureStore", "fuse_modalities", "write_feature_dir", "FEATURE_FORMAT"]

log = logging.getLogger("brainfm.features")

FEATURE_FORMAT = 1


def write_feature_dir(directory: str | Path, index: pd.DataFrame, cls: np.ndarray,
                      layers: Mapping[str, np.ndarray] | None = None, patch_central: np.ndarray | None = None,
                      meta: Mapping[str, Any] | None = None) -> None:
    """Write the arrays of a feature store into ``directory`` (the caller makes it atomic)."""
    directory = Path(directory)
    n = len(index)
    arrays = {"cls": cls, **{f"layer_{k}": v for k, v in (layers or {}).items()}}
    if patch_central is not None:
        arrays["patch_central"] = patch_central
    for name, arr in arrays.items():
        if arr.ndim != 2 or arr.shape[0] != n:
            raise ValueError(f"{name}: expected ({n}, dim) rows aligned with the index, got {arr.shape}")
        save_npy(directory / f"{name}.npy", np.ascontiguousarray(arr, dtype=np.float32))
    write_parquet(directory / "index.parquet", index.reset_index(drop=True))
    write_json(directory / "meta.json", {"format": FEATURE_FORMAT, **dict(meta or {}),
                                         "layers": list((layers or {}).keys()),
                                         "has_patch_central": patch_central is not None, "n_volumes": n})


class FeatureStore:
    """Read a feature directory: ``.index``, ``.cls``, ``.layer(name)``, ``.patch_central``, ``.meta``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        for name in ("meta.json", "index.parquet", "cls.npy"):
            if not (self.path / name).is_file():
                raise InputError(self.path, f"not a feature store ({name} missing); run feature extraction")
        try:
            self.meta: dict[str, Any] = json.loads((self.path / "meta.json").read_text())
            self.index: pd.DataFrame = pd.read_parquet(self.path / "index.parquet").reset_index(drop=True)
        except Exception as exc:
            raise InputError(self.path, f"unreadable feature store metadata/index: {exc}") from exc
        self._cache: dict[str, np.ndarray] = {}
        n = len(self.index)
        if int(self.meta.get("n_volumes", n)) != n:
            raise InputError(self.path, f"index has {n} rows but meta.json says {self.meta.get('n_volumes')}")
        self._load("cls")  # checks the row count against the index

    def _load(self, name: str) -> np.ndarray:
        if name not in self._cache:
            file = self.path / f"{name}.npy"
            try:
                arr = np.load(file, allow_pickle=False)
            except Exception as exc:
                raise InputError(file, f"unreadable feature array: {exc}") from exc
            if arr.ndim != 2 or arr.shape[0] != len(self.index):
                raise InputError(file, f"expected ({len(self.index)}, dim), got {arr.shape}")
            self._cache[name] = arr
        return self._cache[name]

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r}, encoder={self.meta.get('encoder')!r}, n={len(self)})"

    @property
    def cls(self) -> np.ndarray:
        """(N, embed_dim) float32 volume features (2D encoders: mean of slice CLS tokens)."""
        return self._load("cls")

    @property
    def layers(self) -> list[str]:
        """Names of the stored per-layer features, in the order they were requested."""
        return list(self.meta.get("layers", []))

    def layer(self, name: str | int) -> np.ndarray:
        """Features of one block/stage by name (``"block2"``) or by requested block index (``2``)."""
        if isinstance(name, (int, np.integer)):
            indices = list(self.meta.get("layer_indices", []))
            if int(name) not in indices:
                raise ConfigError(f"{self.path}: layer index {name} was not extracted (have {indices})")
            name = self.layers[indices.index(int(name))]
        if name not in self.layers:
            raise ConfigError(f"{self.path}: layer {name!r} was not extracted (have {self.layers})")
        return self._load(f"layer_{name}")

    @property
    def patch_central(self) -> np.ndarray | None:
        """(N, dim) mean central patch token, or None when not extracted."""
        if not (self.path / "patch_central.npy").is_file():
            return None
        return self._load("patch_central")

    @property
    def embed_dim(self) -> int:
        return int(self.cls.shape[1])


def fuse_modalities(index: pd.DataFrame, X: np.ndarray, modalities: Sequence[str],
                    by: Sequence[str] = ("subject", "session"), on_missing: str = "error"
                    ) -> tuple[pd.DataFrame, np.ndarray]:
    """Average the features of ``modalities`` per ``by`` group (late fusion, as in the paper).

    Returns ``(keys, X_fused)``: ``keys`` has the ``by`` columns, one row per group in order of
    first appearance, aligned with ``X_fused`` (float32). Rows of other modalities are ignored.
    A group lacking one of ``modalities`` raises ManifestError naming the subject and modality,
    or with ``on_missing="drop"`` is dropped (count logged and kept in ``keys.attrs["n_dropped"]``).
    Two rows with the same group and modality are ambiguous and raise ManifestError.
    """
    if on_missing not in ("error", "drop"):
        raise ConfigError(f"on_missing must be 'error' or 'drop', got {on_missing!r}")
    modalities = [str(m) for m in ([modalities] if isinstance(modalities, str) else modalities)]
    by = list(by)
    if not modalities:
        raise ConfigError("fuse_modalities: no modalities given")
    if len(set(modalities)) != len(modalities):
        raise ConfigError(f"fuse_modalities: duplicate modalities {modalities}")
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] != len(index):
        raise ValueError(f"features {X.shape} not aligned with an index of {len(index)} rows")
    missing_cols = [c for c in [*by, "modality"] if c not in index.columns]
    if missing_cols:
        raise ConfigError(f"fuse_modalities: index lacks column(s) {missing_cols}")
    idx = index.reset_index(drop=True)
    keys_all = idx[by].astype(str)
    group = pd.MultiIndex.from_frame(keys_all)
    codes, uniques = pd.factorize(group, sort=False)
    sel = idx["modality"].astype(str).isin(modalities).to_numpy()
    mod_code = pd.Categorical(idx["modality"].astype(str), categories=modalities).codes  # -1 for others

    n_groups, n_mod = len(uniques), len(modalities)
    where = np.full((n_groups, n_mod), -1, dtype=np.int64)
    rows = np.flatnonzero(sel)
    pair = codes[rows] * n_mod + mod_code[rows]
    uniq_pair, first, counts = np.unique(pair, return_index=True, return_counts=True)
    if (counts > 1).any():
        g, m = divmod(int(uniq_pair[np.argmax(counts > 1)]), n_mod)
        raise ManifestError(f"fuse_modalities: {dict(zip(by, uniques[g]))} has {int(counts.max())} rows of "
                            f"modality {modalities[m]} (ambiguous; add a key column to 'by')")
    where.reshape(-1)[uniq_pair] = rows[first]
    # groups that have none of the modalities are not samples of this task at all
    relevant = (where >= 0).any(axis=1)
    complete = (where >= 0).all(axis=1)
    incomplete = np.flatnonzero(relevant & ~complete)
    if len(incomplete) and on_missing == "error":
        g = int(incomplete[0])
        lacking = [modalities[j] for j in range(n_mod) if where[g, j] < 0]
        who = ", ".join(f"{c}={v}" for c, v in zip(by, uniques[g]))
        raise ManifestError(f"fuse_modalities: {who} lacks modality {', '.join(lacking)} "
                            f"({len(incomplete)} group(s) incomplete; use on_missing='drop' to skip them)")
    keep = np.flatnonzero(complete)
    fused = np.zeros((len(keep), X.shape[1]), dtype=np.float64)
    for j in range(n_mod):
        fused += X[where[keep, j]].astype(np.float64)
    fused /= n_mod
    keys = pd.DataFrame([uniques[g] for g in keep], columns=by) if len(keep) else pd.DataFrame(columns=by)
    keys.attrs["n_dropped"] = int(len(incomplete))
    if len(incomplete):
        log.warning("fuse_modalities: dropped %d group(s) lacking one of %s", len(incomplete), modalities)
    return keys, fused.astype(np.float32)
