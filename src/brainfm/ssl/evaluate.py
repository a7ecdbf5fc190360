"""Evidence that pretraining learned something, and training-throughput measurement.

:func:`probe_encoder` freezes a ViT, embeds every volume of a downstream volume store as the
mean CLS token of its axial slices (the paper's slice-wise protocol), and scores a label with
subject-grouped cross-validated kNN and logistic-regression probes. :func:`compare_with_random_init`
runs the probe for the pretrained teacher and for the same architecture at its random
initialisation (the weights the student started from): the "SSL learns" check.
:func:`ssl_learning_evidence` does the whole thing on a phantom cohort (generate ->
preprocess -> pretrain -> probe) and is what the slow test calls.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from brainfm.errors import InputError

__all__ = ["embed_volumes", "probe_scores", "probe_encoder", "compare_with_random_init",
           "ssl_learning_evidence"]

log = logging.getLogger("brainfm.ssl")


@torch.no_grad()
def embed_volumes(encoder, store, batch_size: int = 64, slice_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """(N volumes, D): mean CLS over the axial slices of each volume, through the registry encoder's
    own ``preprocess`` (resize, channel replication or stacking) and ``forward_features``."""
    encoder.eval()
    feats = []
    for i in range(len(store)):
        x = encoder.preprocess(torch.from_numpy(np.asarray(store[i], dtype=np.float32)))
        d = x.shape[0]
        lo, hi = int(round(slice_range[0] * d)), max(int(round(slice_range[1] * d)), 1)
        x = x[lo:hi]
        cls = torch.cat([encoder.forward_features(x[j : j + batch_size])["cls"] for j in range(0, len(x), batch_size)])
        feats.append(cls.float().mean(0).numpy())
    return np.stack(feats)


def probe_scores(features: np.ndarray, labels: Sequence[Any], groups: Sequence[Any], seed: int = 0,
                 n_splits: int = 5, k: int = 5) -> dict[str, float]:
    """Subject-grouped CV accuracy of a cosine kNN and an L2 logistic-regression probe (balanced accuracy)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(labels)
    g = np.asarray(groups)
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    pred_knn = np.empty_like(y)
    pred_lin = np.empty_like(y)
    for train, test in cv.split(features, y, g):
        knn = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=min(k, len(train)), metric="cosine"))
        pred_knn[test] = knn.fit(features[train], y[train]).predict(features[test])
        lin = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        pred_lin[test] = lin.fit(features[train], y[train]).predict(features[test])
    return {"knn_balanced_accuracy": float(balanced_accuracy_score(y, pred_knn)),
            "linear_balanced_accuracy": float(balanced_accuracy_score(y, pred_lin)),
            "n": int(len(y)), "n_classes": int(len(np.unique(y)))}


def probe_encoder(encoder, store_dir: Path, labels: pd.DataFrame, label: str, seed: int = 0,
                  slice_range: tuple[float, float] = (0.0, 1.0)) -> dict[str, float]:
    """Probe ``label`` (a column of ``labels``, keyed by dataset/subject/session/modality) on a volume store."""
    from brainfm.ssl.data import open_store, resolve_store

    store = open_store(resolve_store(store_dir, "volume"))
    keys = [c for c in ("dataset", "subject", "session", "modality") if c in store.index.columns
            and c in labels.columns]
    idx = store.index[keys].reset_index(drop=True)
    target = labels[keys].copy()
    target["_label"] = labels[label].to_numpy()
    merged = idx.merge(target.drop_duplicates(keys), on=keys, how="left")
    keep = merged["_label"].notna().to_numpy()
    if keep.sum() < 10:
        raise InputError(store_dir, f"fewer than 10 volumes with a {label!r} label")
    feats = embed_volumes(encoder, store, slice_range=slice_range)
    return probe_scores(feats[keep], merged["_label"].to_numpy()[keep], merged["subject"].to_numpy()[keep], seed)


@torch.no_grad()
def probe_slice_level(encoder, store_dir: Path, n_bins: int = 4, slices_per_volume: int = 8,
                      slice_range: tuple[float, float] = (0.15, 0.85), seed: int = 0) -> dict[str, float]:
    """An anatomical slice-level task: from one axial slice's CLS token, predict which of ``n_bins``
    equal bands of the cranio-caudal axis it comes from (subject-grouped CV)."""
    from brainfm.ssl.data import open_store, resolve_store

    store = open_store(resolve_store(store_dir, "volume"))
    feats, labels, groups = [], [], []
    for i in range(len(store)):
        x = encoder.preprocess(torch.from_numpy(np.asarray(store[i], dtype=np.float32)))
        d = x.shape[0]
        pos = np.linspace(slice_range[0], slice_range[1], slices_per_volume)
        ks = np.minimum((pos * d).astype(int), d - 1)
        cls = encoder.forward_features(x[torch.from_numpy(ks)])["cls"].float().numpy()
        feats.append(cls)
        rel = (pos - slice_range[0]) / (slice_range[1] - slice_range[0])
        labels.append(np.minimum((rel * n_bins).astype(int), n_bins - 1))
        groups += [store.index["subject"].iloc[i]] * len(ks)
    return probe_scores(np.concatenate(feats), np.concatenate(labels), np.asarray(groups), seed)


@torch.no_grad()
def probe_slice_lesion(encoder, store_dir: Path, min_fraction: float = 0.02,
                       slice_range: tuple[float, float] = (0.1, 0.9), seed: int = 0) -> dict[str, float]:
    """A pathology slice-level task: does an axial slice contain lesion (label map > 0 on at least
    ``min_fraction`` of the slice) or none at all? Slices in between are left out; the labels come
    from the ``downstream_masks`` store next to the volumes; subject-grouped CV."""
    from brainfm.ssl.data import open_store, resolve_store

    vol_dir = resolve_store(store_dir, "volume")
    store, masks = open_store(vol_dir), open_store(Path(store_dir) / "downstream_masks")
    keys = [c for c in ("dataset", "subject", "session", "modality") if c in masks.index.columns]
    where = {tuple(r): i for i, r in enumerate(masks.index[keys].itertuples(index=False, name=None))}
    feats, labels, groups = [], [], []
    for i, row in enumerate(store.index[keys].itertuples(index=False, name=None)):
        if row not in where:
            continue
        frac = (np.asarray(masks[where[row]]) > 0).reshape(masks.item_shape[0], -1).mean(1)
        d = len(frac)
        ks = np.arange(int(slice_range[0] * d), int(slice_range[1] * d))
        ks = ks[(frac[ks] == 0) | (frac[ks] >= min_fraction)]
        if not len(ks):
            continue
        x = encoder.preprocess(torch.from_numpy(np.asarray(store[i], dtype=np.float32)))
        feats.append(encoder.forward_features(x[torch.from_numpy(ks)])["cls"].float().numpy())
        labels.append((frac[ks] >= min_fraction).astype(int))
        groups += [row[keys.index("subject")]] * len(ks)
    if not feats:
        raise InputError(store_dir, "no volume has a lesion mask in downstream_masks")
    return probe_scores(np.concatenate(feats), np.concatenate(labels), np.asarray(groups), seed)


def compare_with_random_init(weights: Path, encoder_name: str, encoder_args: dict[str, Any], store_dir: Path,
                             labels: pd.DataFrame, label: str, seed: int = 0,
                             slice_range: tuple[float, float] = (0.0, 1.0)) -> dict[str, dict[str, float]]:
    """Probe scores of the pretrained encoder (registry ``encoder_name`` + exported ``weights``) and of
    the same architecture at the trainer's initialisation (registry ``vit_random`` with the run's seed)."""
    from brainfm.models import create_encoder

    pretrained = create_encoder(encoder_name, weights=str(weights), **encoder_args)
    random = create_encoder("vit_random", seed=seed, **encoder_args)
    return {"pretrained": probe_encoder(pretrained, store_dir, labels, label, seed, slice_range),
            "random_init": probe_encoder(random, store_dir, labels, label, seed, slice_range)}


#: Preprocessing for the CPU evidence run: the paper's protocol scaled from a 256 to a 64 cube.
DEMO_PROTOCOL: dict[str, Any] = {"cube": 64, "pretrain_slices": {"n": 32, "mu": 32, "sigma": 12.5},
                                 "downstream_shape": [32, 64, 64]}


def _phantom_stores(work_dir: Path, generator: str, n_subjects: int, seed: int, protocol: dict[str, Any],
                    voxel_size: float) -> tuple[Path, pd.DataFrame]:
    from brainfm.data.manifest import read_manifest
    from brainfm.data.phantom import generate_dataset
    from brainfm.preprocess.pipeline import preprocess_dataset

    data_dir, pre_dir = work_dir / "data" / generator, work_dir / "preprocessed" / generator
    if not (data_dir / "manifest.parquet").exists():
        generate_dataset(generator, data_dir, n_subjects=n_subjects, seed=seed, voxel_size=voxel_size)
    manifest = read_manifest(data_dir / "manifest.parquet")
    if not (pre_dir / "report.json").exists():  # the pipeline writes this sentinel when it is done
        preprocess_dataset(manifest, Path(manifest.attrs.get("root", data_dir)), pre_dir, protocol=protocol,
                           products=("downstream", "pretrain"), seed=seed)
    return pre_dir, manifest


def ssl_learning_evidence(work_dir: Path, params: dict[str, Any], *, pretrain_generator: str = "phantom_pretrain",
                          n_pretrain: int = 40, probe_generator: str = "phantom_brainage", n_probe: int = 60,
                          label: str = "age", binarize: bool = True, seed: int = 0,
                          protocol: dict[str, Any] | None = None, voxel_size: float = 2.5,
                          slice_range: tuple[float, float] = (0.2, 0.8)) -> dict[str, Any]:
    """Phantom cohorts -> preprocess -> BrainDINO pretraining (``params``) -> probes vs random init.

    Pretraining reads the slice store of ``pretrain_generator`` (unlabelled); the probes read the
    downstream volume store of a *different* cohort, ``probe_generator``, and predict ``label``
    (split at its median when ``binarize``, e.g. older vs younger half for brain age). Subjects
    are grouped in the cross-validation. Writes and returns ``work_dir/evidence.json``.
    """
    from brainfm.atomic import write_json
    from brainfm.ssl.config import DinoConfig
    from brainfm.config import PretrainSpec
    from brainfm.ssl.entry import pretrain
    from brainfm.ssl.export import encoder_args

    work_dir = Path(work_dir)
    protocol = dict(protocol or DEMO_PROTOCOL)
    t0 = time.perf_counter()
    pre_store, _ = _phantom_stores(work_dir, pretrain_generator, n_pretrain, seed, protocol, voxel_size)
    probe_store, manifest = _phantom_stores(work_dir, probe_generator, n_probe, seed + 1, protocol, voxel_size)
    t_data = time.perf_counter() - t0
    labels = manifest.copy()
    target = label
    if binarize:
        target = f"{label}_above_median"
        labels[target] = np.where(labels[label].isna(), np.nan, (labels[label] > labels[label].median()).astype(float))
    run_dir = work_dir / "pretrain" / "braindino"
    spec = PretrainSpec.from_dict({"name": "braindino", "recipe": "dino", "datasets": [pretrain_generator],
                                   "params": params})
    info = pretrain(spec, [pre_store], run_dir / "weights.pth", run_dir / "summary.json", run_dir / "work")
    cfg = DinoConfig.from_dict(params)
    scores = compare_with_random_init(run_dir / "weights.pth", "braindino", encoder_args(cfg), probe_store, labels,
                                      target, seed=cfg.seed, slice_range=slice_range)
    evidence = {"pretrain_generator": pretrain_generator, "n_pretrain": n_pretrain,
                "probe_generator": probe_generator, "n_probe": n_probe, "label": target, "params": params,
                "protocol": protocol, "scores": scores, "pretrain_seconds": info["stages"][-1]["seconds"],
                "pretrain_img_per_s": info["stages"][-1]["img_per_s"], "data_seconds": t_data}
    write_json(work_dir / "evidence.json", evidence)
    log.info("SSL evidence: %s", json.dumps(scores))
    return evidence
