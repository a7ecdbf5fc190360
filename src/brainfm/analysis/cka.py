"""Linear centred kernel alignment between two representations of the same subjects (paper §4.6).

CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) with column-centred Xc, Yc, which is
the HSIC form with Gram matrices K = XX^T, L = YY^T centred by H = I - 11^T/n. The feature-space
form is used because it costs O(n d^2) instead of O(n^2) memory; both are equal (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["linear_cka", "cka_table", "cka_from_feature_stores", "cka"]


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA in [0, 1]; invariant to orthogonal transforms and isotropic scaling."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"need two matrices with the same number of rows, got {x.shape} and {y.shape}")
    if len(x) < 2:
        raise ValueError("CKA needs at least two subjects")
    xc = x - x.mean(0)
    yc = y - y.mean(0)
    cross = np.linalg.norm(yc.T @ xc, "fro") ** 2
    denom = np.linalg.norm(xc.T @ xc, "fro") * np.linalg.norm(yc.T @ yc, "fro")
    if denom == 0:
        raise ValueError("a representation is constant across subjects; CKA is undefined")
    return float(cross / denom)


def cka_table(reference: str, ref_layers: dict[str, np.ndarray], others: dict[str, dict[str, np.ndarray]],
              depth_labels: list[str] | None = None) -> pd.DataFrame:
    """CKA of the reference backbone against each other backbone at matched depths.

    ``ref_layers`` and each ``others[name]`` map layer names (in depth order) to (n, d) matrices
    of the same subjects in the same order; the i-th reference layer is paired with the i-th
    layer of the other model (early / mid / late in the paper).
    """
    rows = []
    ref_names = list(ref_layers)
    for name, layers in others.items():
        other_names = list(layers)
        for i, (rn, on) in enumerate(zip(ref_names, other_names)):
            rows.append({"reference": reference, "backbone": name,
                         "depth": depth_labels[i] if depth_labels else f"{i}",
                         "reference_layer": rn, "backbone_layer": on,
                         "cka": linear_cka(ref_layers[rn], layers[on])})
    return pd.DataFrame(rows)


def cka_from_feature_stores(stores: dict[str, "str | object"], reference: str, *,
                            modalities: list[str] | None = None,
                            depth_labels: list[str] | None = None) -> pd.DataFrame:
    """CKA of ``reference`` against every other backbone from their cached layer features.

    Rows are matched on (subject, session, modality) so every model sees the same scans in the
    same order; each store's layers (as configured per backbone, in depth order) are paired by
    position: early with early, mid with mid, late with late.
    """
    from brainfm.errors import ConfigError
    from brainfm.features import FeatureStore

    fs = {name: (s if isinstance(s, FeatureStore) else FeatureStore(s)) for name, s in stores.items()}
    # reference rows (prior, image statistics, oracle) have no depth to compare: not part of CKA
    fs = {name: s for name, s in fs.items()
          if name == reference or not ((s.meta.get("encoder_config") or {}).get("reference"))}
    if reference not in fs:
        raise ConfigError(f"CKA reference backbone '{reference}' has no features")
    key = ["subject", "session", "modality"]
    common = None
    for store in fs.values():
        idx = store.index[key].astype(str)
        if modalities:
            idx = idx[idx["modality"].isin(modalities)]
        keys = set(map(tuple, idx.to_numpy()))
        common = keys if common is None else common & keys
    if not common or len(common) < 3:
        raise ConfigError("CKA needs at least 3 scans shared by all backbones' feature stores")
    order = sorted(common)

    def layers_of(store) -> dict[str, np.ndarray]:
        idx = store.index[key].astype(str)
        pos = {tuple(r): i for i, r in enumerate(idx.to_numpy())}
        rows = np.array([pos[k] for k in order])
        names = store.layers
        if not names:
            raise ConfigError(f"{store.path}: no layer features were extracted (set 'layers' for this backbone)")
        return {n: store.layer(n)[rows] for n in names}

    ref_layers = layers_of(fs[reference])
    others = {name: layers_of(s) for name, s in fs.items() if name != reference}
    table = cka_table(reference, ref_layers, others, depth_labels)
    table["n"] = len(order)
    return table


def cka(features: dict[str, str], reference: str, out: str | Path, *, modalities: Sequence[str] | None = None,
        depth_labels: Sequence[str] | None = None) -> pd.DataFrame:
    """The ``cka`` step: layer-wise CKA of ``reference`` against every backbone -> ``out`` (parquet)."""
    from brainfm.atomic import write_parquet

    table = cka_from_feature_stores(dict(features), reference, modalities=list(modalities) if modalities else None,
                                    depth_labels=list(depth_labels) if depth_labels else None)
    write_parquet(out, table)
    return table
