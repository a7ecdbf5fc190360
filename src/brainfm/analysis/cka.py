"""Linear centred kernel alignment between two representations of the same subjects (paper §4.6).

CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) with column-centred Xc, Yc, which is
the HSIC form with Gram matrices K = XX^T, L = YY^T centred by H = I - 11^T/n. The feature-space
form is used because it costs O(n d^2) instead of O(n^2) memory; both are equal (tested).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["linear_cka", "cka_table"]


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
