"""Point metrics written to ``metrics.json`` for one (task, backbone, ratio, seed).

Inference (confidence intervals, paired tests) lives in :mod:`brainfm.stats`; this module only
computes the headline numbers, delegating to scikit-learn and lifelines.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

__all__ = ["classification_metrics", "regression_metrics", "survival_metrics"]


def classification_metrics(y_true: np.ndarray, prob: np.ndarray, names: tuple[str, ...]) -> dict[str, float]:
    y_true = np.asarray(y_true).astype(int)
    pred = prob.argmax(1)
    out = {
        "accuracy": float(skm.accuracy_score(y_true, pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, pred)),
        "f1_macro": float(skm.f1_score(y_true, pred, average="macro", labels=range(prob.shape[1]), zero_division=0)),
    }
    present = np.unique(y_true)
    if len(present) < 2:
        out["auc"] = float("nan")
    elif prob.shape[1] == 2:
        out["auc"] = float(skm.roc_auc_score(y_true, prob[:, 1]))
    else:
        # macro one-vs-rest over the classes present in the test set
        aucs = [skm.roc_auc_score(y_true == k, prob[:, k]) for k in range(prob.shape[1]) if k in present]
        out["auc"] = float(np.mean(aucs))
    return out


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    err = np.asarray(y_pred, float) - np.asarray(y_true, float)
    return {
        "mae": float(np.abs(err).mean()),
        "mse": float((err**2).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "r2": float(skm.r2_score(y_true, y_pred)) if len(y_true) > 1 else float("nan"),
    }


def survival_metrics(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> dict[str, float]:
    from lifelines.utils import concordance_index

    # lifelines scores agreement between *predicted survival* and time: higher risk = shorter survival
    return {"cindex": float(concordance_index(time, -np.asarray(risk), event))}
