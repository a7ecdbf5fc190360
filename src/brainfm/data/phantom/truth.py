"""The generator's ground truth of each phantom visit: the numbers an upper reference may use.

A rendered visit knows what no encoder can see directly: its true tissue-class fractions per voxel,
its ventricular CSF, its lesion label map, and the mean intensity of each tissue class in each
written image. :func:`session_truth` condenses them into a fixed-length vector per modality
(global tissue fractions and brain size, grey matter in the regions the disease programmes
target, lesion compartment volumes and the lesion's CSF share, per-image tissue and lesion
contrasts); the generator writes it as a JSON sidecar per visit and :func:`collect_truth`
gathers the sidecars into ``truth.parquet`` next to the manifest. The ``phantom_oracle``
reference encoder (:mod:`brainfm.models.reference`) reads that table: on phantom data it shows
what a perfect volumetry pipeline would score, an upper reference for the encoders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainfm.data.phantom.contrast import CLASSES

__all__ = ["session_truth", "collect_truth", "TRUTH_PREFIX"]

TRUTH_PREFIX = "t_"
_LESION_LABELS = (1, 2, 3)
_CONTRAST_CLASSES = ("csf", "gm", "wm")
_REGION_CACHE: dict[int, tuple[Any, dict[str, np.ndarray]]] = {}


def _regions(tpl: Any) -> dict[str, np.ndarray]:
    from brainfm.data.phantom.probe import _region_masks

    hit = _REGION_CACHE.get(id(tpl))
    if hit is None or hit[0] is not tpl:
        hit = (tpl, _region_masks(tpl))
        _REGION_CACHE.clear()
        _REGION_CACHE[id(tpl)] = hit
    return hit[1]


def session_truth(rendered: Any, tpl: Any) -> dict[str, Any]:
    """Ground-truth features of one rendered visit: ``{"names": [...], "modalities": {m: [...]}}``."""
    from brainfm.data.phantom.probe import tissue_features

    regions = _regions(tpl)
    fr = rendered.fractions
    tissue = [float(v) for v in tissue_features(rendered, regions)]
    names = ([f"frac_{c}" for c in CLASSES] + ["frac_ventricles", "log_brain"]
             + [f"gm_{r}" for r in regions])
    lesion = None
    if rendered.mask is not None:
        lesion = rendered.mask > 0
        counts = [float((rendered.mask == k).sum()) for k in _LESION_LABELS]
        # what the lesion is made of: a stroke's stage shows as its share of CSF (cavitation)
        csf = float(fr[CLASSES.index("csf")][lesion].mean()) if lesion.any() else 0.0
        tissue += [float(np.log1p(c)) for c in counts] + [float(np.log1p(sum(counts))), csf]
        names += [f"lesion_{k}" for k in _LESION_LABELS] + ["lesion_total", "lesion_csf"]
    pure = {c: fr[CLASSES.index(c)] > 0.5 for c in _CONTRAST_CLASSES}
    per_mod: dict[str, list[float]] = {}
    for m, img in rendered.images.items():
        brain = img > 0
        med = float(np.median(img[brain])) if brain.any() else 1.0
        per_mod[m] = tissue + [float(img[pure[c] & brain].mean() / med) if (pure[c] & brain).any() else 0.0
                               for c in _CONTRAST_CLASSES]
        if lesion is not None:
            per_mod[m].append(float(img[lesion].mean() / med) if lesion.any() else 0.0)
    names += [f"contrast_{c}" for c in _CONTRAST_CLASSES] + (["contrast_lesion"] if lesion is not None else [])
    return {"names": names, "modalities": per_mod}


def collect_truth(out_dir: str | Path, specs: list[Any]) -> pd.DataFrame:
    """One row per (subject, session, modality) with the ``t_*`` ground-truth columns of every visit."""
    from brainfm.data.phantom.generate import truth_relpath

    rows = []
    for s in specs:
        for sess in s.sessions:
            doc = json.loads((Path(out_dir) / truth_relpath(s.subject, sess.name)).read_text())
            for m, values in doc["modalities"].items():
                rows.append({"subject": s.subject, "session": sess.name, "modality": m,
                             **{TRUTH_PREFIX + n: float(v) for n, v in zip(doc["names"], values)}})
    return pd.DataFrame(rows)
