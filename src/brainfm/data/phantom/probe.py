"""Is the phantom's signal learnable? A quick probe with hand-made features and linear models.

This is the sanity check behind the phantom's effect sizes, not part of the benchmark. Two
feature sets are cross-validated with ridge / logistic / Cox models:

* ``tissue``: ground-truth tissue volumes of the rendered subject (what FreeSurfer-like volumetry
  would report): global CSF/GM/WM/ventricle fractions, regional GM in MNI spheres, lesion burden;
* ``image``: crude statistics of the written image itself (intensity histogram relative to the
  brain median, dark-voxel fractions, regional intensities), or of image + lesion mask for tumours
  and strokes.

If such crude features already score perfectly the phantom is too easy to rank encoders; at chance
the labels carry no signal. Run::

    python -m brainfm.data.phantom.probe --n 120 --out /tmp/phantom-probe.json

Scores are 5-fold cross-validated (subject-grouped for the longitudinal ADNI-like set).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from brainfm.atomic import write_json
from brainfm.data.phantom.contrast import CLASSES
from brainfm.data.phantom.generate import sample_cohort
from brainfm.data.phantom.render import Rendered, render_session
from brainfm.data.phantom.template import Template, load_template

__all__ = ["image_features", "tissue_features", "probe", "main"]

# MNI spheres (centre, radius mm) for regional read-outs
_REGIONS = {
    "hippocampus": [((28.0, -22.0, -14.0), 8.0), ((-28.0, -22.0, -14.0), 8.0)],
    "temporoparietal": [((50.0, -45.0, 20.0), 14.0), ((-50.0, -45.0, 20.0), 14.0)],
    "nigra": [((11.0, -17.0, -10.0), 5.0), ((-11.0, -17.0, -10.0), 5.0)],
    "putamen": [((26.0, -2.0, 2.0), 6.0), ((-26.0, -2.0, 2.0), 6.0)],
    "frontal": [((32.0, 38.0, 22.0), 14.0), ((-32.0, 38.0, 22.0), 14.0)],
    "ventricles": [((0.0, -10.0, 16.0), 18.0)],
}


def _region_masks(tpl: Template) -> dict[str, np.ndarray]:
    grid = tpl.mni_grid
    out = {}
    for name, spheres in _REGIONS.items():
        m = np.zeros(tpl.shape, dtype=bool)
        for c, r in spheres:
            m |= ((grid - np.asarray(c, dtype=np.float32)[:, None, None, None]) ** 2).sum(0) < r * r
        out[name] = m
    return out


def image_features(img: np.ndarray, regions: dict[str, np.ndarray]) -> np.ndarray:
    """Contrast-robust statistics of one image: histogram, dark fractions, regional intensities."""
    brain = img > 0
    v = img[brain]
    med = float(np.median(v)) if v.size else 1.0
    rel = v / med
    hist = np.histogram(rel, bins=20, range=(0.0, 2.0))[0] / max(v.size, 1)
    dark = [(rel < t).mean() for t in (0.4, 0.5, 0.6, 0.7, 0.8)]
    reg = []
    for m in regions.values():
        sel = img[m & brain] / med
        reg += [float(sel.mean()) if sel.size else 0.0, float((sel < 0.6).mean()) if sel.size else 0.0]
    return np.concatenate([hist, dark, reg, [np.log(brain.sum())]])


def tissue_features(r: Rendered, regions: dict[str, np.ndarray]) -> np.ndarray:
    """Ground-truth volumetry of a rendered visit (relative to brain volume)."""
    fr = r.fractions
    brain = fr.sum(0)
    tot = float(brain.sum())
    glob = [float(fr[k].sum()) / tot for k in range(len(CLASSES))] + [float(r.ventricles.sum()) / tot, np.log(tot)]
    gm = fr[CLASSES.index("gm")]
    reg = [float(gm[m].sum() / max(brain[m].sum(), 1e-6)) for m in regions.values()]
    return np.array(glob + reg)


def _lesion_features(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    brain = img > 0
    wm_level = float(np.percentile(img[brain], 90))
    les = mask > 0
    vals = img[les] / wm_level if les.any() else np.zeros(1)
    counts = [float((mask == k).sum()) for k in (1, 2, 3)]
    tot = max(sum(counts), 1.0)
    ring = ndi.binary_dilation(les, iterations=2) & ~les & brain
    rim = float(img[ring].mean() / wm_level) if ring.any() else 0.0
    return np.array([np.log1p(tot), *(c / tot for c in counts), vals.mean(), np.percentile(vals, 10),
                     np.percentile(vals, 90), rim], dtype=np.float64)


def _cv(X: np.ndarray, y: np.ndarray, kind: str, groups: np.ndarray | None = None, seed: int = 0
        ) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.metrics import mean_absolute_error, roc_auc_score
    from sklearn.model_selection import KFold, StratifiedGroupKFold, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "regression":
        splits = KFold(5, shuffle=True, random_state=seed).split(X)
    elif groups is not None:
        splits = StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(X, y, groups)
    else:
        splits = StratifiedKFold(5, shuffle=True, random_state=seed).split(X, y)
    classes = np.unique(y)
    pred = np.zeros(len(y)) if kind == "regression" else np.zeros((len(y), len(classes)))
    base = np.zeros(len(y))
    for tr, te in splits:
        if kind == "regression":
            model = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 13))).fit(X[tr], y[tr])
            pred[te] = model.predict(X[te])
            base[te] = y[tr].mean()
        else:
            model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=5000)).fit(X[tr], y[tr])
            pred[te] = model.predict_proba(X[te])
    if kind == "regression":
        return {"mae": round(float(mean_absolute_error(y, pred)), 3),
                "mae_mean_predictor": round(float(mean_absolute_error(y, base)), 3),
                "pearson_r": round(float(np.corrcoef(y, pred)[0, 1]), 3)}
    if len(classes) == 2:
        return {"auc": round(float(roc_auc_score(y, pred[:, 1])), 3)}
    return {"macro_auc": round(float(roc_auc_score(y, pred, multi_class="ovr", average="macro")), 3)}


def _cindex(X: np.ndarray, t: np.ndarray, e: np.ndarray, seed: int = 0) -> float:
    from lifelines import CoxPHFitter
    from lifelines.utils import concordance_index
    from sklearn.model_selection import KFold

    risk = np.zeros(len(t))
    for tr, te in KFold(5, shuffle=True, random_state=seed).split(X):
        mu, sd = X[tr].mean(0), X[tr].std(0)
        keep = sd > 1e-6
        cols = [f"f{i}" for i in range(int(keep.sum()))]
        z = lambda a: np.clip((a[:, keep] - mu[keep]) / sd[keep], -6, 6)  # noqa: E731
        d = pd.DataFrame(z(X[tr]), columns=cols).assign(T=t[tr], E=e[tr])
        cph = CoxPHFitter(penalizer=1.0).fit(d, "T", "E")
        risk[te] = cph.predict_partial_hazard(pd.DataFrame(z(X[te]), columns=cols)).to_numpy()
    return round(float(concordance_index(t, -risk, e)), 3)


def probe(name: str, n_subjects: int, seed: int = 0, voxel_size: float = 2.5,
          cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Render a cohort in memory and cross-validate both feature sets on its labels."""
    tpl = load_template(voxel_size, cache_dir)
    regions = _region_masks(tpl)
    specs = sample_cohort(name, n_subjects, seed=seed, voxel_size=voxel_size, cache_dir=cache_dir)
    rows, fi, ft = [], [], []
    main_mod = "T1c" if name == "phantom_tumor" else "T1"
    for s in specs:
        for k, sess in enumerate(s.sessions):
            r = render_session(s, k, tpl)
            img = r.images[main_mod]
            if s.tumor is not None or s.stroke is not None:
                f = _lesion_features(img, r.mask)
                if s.tumor is not None:
                    t1 = r.images["T1"]
                    les = r.mask > 0
                    enh = float(img[les].mean() / np.median(img[img > 0]) - t1[les].mean() / np.median(t1[t1 > 0]))
                    f = np.r_[f, enh]
                fi.append(np.r_[f, image_features(img, regions)])
            else:
                fi.append(image_features(img, regions))
            ft.append(tissue_features(r, regions))
            rows.append({"subject": s.subject, "age": sess.age, **s.labels})
    df = pd.DataFrame(rows)
    Xi, Xt = np.array(fi), np.array(ft)
    out: dict[str, Any] = {"dataset": name, "n_subjects": len(specs), "n_images": len(df)}
    for tag, X in (("image", Xi), ("tissue", Xt)):
        if name == "phantom_brainage":
            out[f"age_{tag}"] = _cv(X, df["age"].to_numpy(float), "regression")
        elif name == "phantom_adni":
            dx = df["diagnosis"].map({"CN": 0, "MCI": 1, "AD": 2}).to_numpy(int)
            g = df["subject"].to_numpy()
            out[f"dx3_{tag}"] = _cv(X, dx, "classification", g)
            keep = dx != 1
            out[f"cn_vs_ad_{tag}"] = _cv(X[keep], (dx[keep] == 2).astype(int), "classification", g[keep])
            keep = dx != 2
            out[f"cn_vs_mci_{tag}"] = _cv(X[keep], dx[keep], "classification", g[keep])
        elif name == "phantom_tumor":
            out[f"idh_{tag}"] = _cv(X, df["idh"].to_numpy(int), "classification")
            out[f"survival_cindex_{tag}"] = _cindex(X, df["survival_days"].to_numpy(float), df["event"].to_numpy(int))
        elif name == "phantom_stroke":
            out[f"log10_dps_{tag}"] = _cv(X, np.log10(df["dps"].to_numpy(float)), "regression")
        else:
            label = {"phantom_oasis": "demented", "phantom_abide": "asd", "phantom_ppmi": "pd"}[name]
            out[f"{label}_{tag}"] = _cv(X, df[label].to_numpy(int), "classification")
    for col in ("diagnosis", "idh", "event", "demented", "asd", "pd"):
        if col in df.columns:
            counts = df.groupby("subject")[col].first().value_counts()
            out[f"{col}_counts"] = {str(k): int(v) for k, v in counts.items()}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="JSON report")
    p.add_argument("--n", type=int, default=120)
    p.add_argument("--voxel-size", type=float, default=2.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--datasets", default="phantom_brainage,phantom_adni,phantom_oasis,phantom_abide,phantom_ppmi,"
                                         "phantom_tumor,phantom_stroke")
    p.add_argument("--cache-dir", default=None)
    a = p.parse_args(argv)
    report = {}
    for name in a.datasets.split(","):
        t0 = time.perf_counter()
        report[name] = probe(name, a.n, a.seed, a.voxel_size, a.cache_dir)
        report[name]["seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(report[name]), flush=True)
    write_json(a.out, report)


if __name__ == "__main__":
    main()
