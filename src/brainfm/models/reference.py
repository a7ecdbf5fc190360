"""Reference "encoders": what a crude baseline, no information at all, and the ground truth achieve.

They are registered like any encoder, so their features flow through the same extraction, heads,
statistics, tables and figures as the foundation models, and a reader sees per task how much signal
there was to find. None of them learns anything.

* ``image_stats`` -- intensity percentiles and tissue-contrast statistics of the preprocessed
  volume (relative to the brain's median intensity, so global gain differences between scans do
  not dominate), over the whole brain, 3×3×3 blocks of the volume and a central core vs its
  periphery. Its "layers" are those groups (global, grid, core/periphery); its "patch tokens" are
  the same statistics of each axial slice, so the central-slice protocol (PPMI) works unchanged.
* ``prior`` -- a constant feature. ``fit_heads`` recognises it (``config["reference"] == "prior"``)
  and predicts the training subset's class frequencies or target mean in closed form (what a head
  on constant inputs converges to; sklearn's ``DummyClassifier(strategy="prior")`` and
  ``DummyRegressor()``), so its rows show chance level with the same folds and subsets.
* ``phantom_oracle`` -- the phantom generator's ground truth of each scan (true tissue fractions,
  regional grey matter, lesion volumes, tissue contrasts; :mod:`brainfm.data.phantom.truth`),
  read from ``truth.parquet`` next to the dataset manifest, each column standardised over the
  dataset's scans (no labels). An upper reference on phantom data only; real datasets have no
  such table and extraction says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainfm.errors import InputError
from brainfm.frames import read_frame
from brainfm.models.base import Encoder
from brainfm.models.registry import register_encoder

__all__ = ["ImageStats", "PriorEncoder", "PhantomOracle", "image_statistics", "STAT_NAMES", "GRID_STAT_NAMES",
           "PERCENTILES"]

PERCENTILES = (0.02, 0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95, 0.98)
DARK = (0.3, 0.5, 0.7, 0.85)  # fractions of brain voxels below these multiples of the brain median
BRIGHT = (1.15, 1.3)
STAT_NAMES = ([f"p{int(round(100 * q))}" for q in PERCENTILES] + ["mean", "std"]
              + [f"below_{t:g}" for t in DARK] + [f"above_{t:g}" for t in BRIGHT]
              + ["contrast_p90_p10", "contrast_p75_p25", "volume_fraction"])
N_STATS = len(STAT_NAMES)
GRID = 3  # the volume's box cut into GRID³ blocks, each summarised by GRID_STAT_NAMES
GRID_STAT_NAMES = ["brain_fraction", "mean", "below_0.5", "below_0.75", "p10"]
_GROUPS = ("global", "grid", "core_periphery")
_N_REGIONS = {"global": 1, "grid": GRID ** 3, "core_periphery": 2}
_WIDTH = {"global": N_STATS, "grid": GRID ** 3 * len(GRID_STAT_NAMES), "core_periphery": 2 * N_STATS}


def _region_stats(values: torch.Tensor, ref: float, n_brain: int) -> torch.Tensor:
    """The statistics of one region's brain voxels ``values``, relative to the brain median ``ref``."""
    if values.numel() == 0:
        return torch.zeros(N_STATS, dtype=torch.float64)
    rel = values / ref
    q = torch.quantile(rel, torch.tensor(PERCENTILES, dtype=rel.dtype))
    dark = [(rel < t).double().mean() for t in DARK]
    bright = [(rel > t).double().mean() for t in BRIGHT]
    return torch.stack([*q, rel.mean(), rel.std(unbiased=False) if rel.numel() > 1 else rel.new_zeros(()),
                        *dark, *bright, q[PERCENTILES.index(0.90)] - q[PERCENTILES.index(0.10)],
                        q[PERCENTILES.index(0.75)] - q[PERCENTILES.index(0.25)],
                        torch.tensor(values.numel() / max(n_brain, 1), dtype=torch.float64)]).double()


MAX_VOXELS = 1 << 20  # larger brains are read on a regular voxel lattice (statistics, not anatomy)


def _grid_stats(v: torch.Tensor, brain: torch.Tensor, ref: float, n: int = GRID) -> torch.Tensor:
    """Compact statistics of each of the n³ blocks of the volume's box (zeros for a block without brain)."""
    d, h, w = v.shape
    out = []
    for a in range(n):
        for b in range(n):
            for c in range(n):
                sl = (slice(a * d // n, (a + 1) * d // n), slice(b * h // n, (b + 1) * h // n),
                      slice(c * w // n, (c + 1) * w // n))
                m = brain[sl]
                rel = v[sl][m] / ref
                if rel.numel() == 0:
                    out.append(torch.zeros(len(GRID_STAT_NAMES), dtype=torch.float64))
                    continue
                out.append(torch.stack([m.double().mean(), rel.mean(), (rel < 0.5).double().mean(),
                                        (rel < 0.75).double().mean(), torch.quantile(rel, 0.1)]))
    return torch.cat(out)


def image_statistics(volume: torch.Tensor, threshold: float = 0.01,
                     max_voxels: int = MAX_VOXELS) -> dict[str, torch.Tensor]:
    """Statistics of a (D, H, W) volume per group of regions: {"global", "grid", "core_periphery"}.

    Brain voxels are those above ``threshold`` times the volume's maximum (preprocessed volumes
    have an exact-zero background); intensities are taken relative to the brain's median. "grid"
    cuts the volume's box into 3×3×3 blocks (brain fraction, mean, dark fractions, 10th
    percentile of each: where atrophy and enlarged ventricles put CSF); the core is the brain
    voxels nearer their centre of mass than the median brain voxel (normalised by the brain's
    bounding-box half-extents), the periphery the rest. An empty volume gives zeros. A brain of
    more than ``max_voxels`` voxels is summarised from every k-th of its voxels (deterministic),
    so a 256³ volume costs about what a 100³ one does.
    """
    v = volume.detach().to(torch.float64)
    if v.ndim != 3:
        raise ValueError(f"image_statistics needs a (D, H, W) volume, got shape {tuple(v.shape)}")
    top = float(v.max()) if v.numel() else 0.0
    brain = v > threshold * top if top > 0 else torch.zeros_like(v, dtype=torch.bool)
    n = int(brain.sum())
    if n == 0:
        return {g: torch.zeros(_WIDTH[g], dtype=torch.float64) for g in _GROUPS}
    if n > max_voxels:  # a regular lattice of the volume for the block statistics too
        step = round((n / max_voxels) ** (1 / 3)) + 1
        v, brain = v[::step, ::step, ::step], brain[::step, ::step, ::step]
        n = int(brain.sum())
    vals = v[brain]
    idx = brain.nonzero().double()  # (n, 3)
    ref = float(torch.quantile(vals, 0.5)) or 1.0
    lo, hi = idx.min(0).values, idx.max(0).values
    half = ((hi - lo) / 2).clamp(min=1.0)
    radius = (((idx - idx.mean(0)) / half) ** 2).sum(1).sqrt()
    core = radius <= torch.quantile(radius, 0.5)
    return {
        "global": _region_stats(vals, ref, n),
        "grid": _grid_stats(v, brain, ref),
        "core_periphery": torch.cat([_region_stats(vals[core], ref, n), _region_stats(vals[~core], ref, n)]),
    }


class ImageStats(Encoder):
    """Hand-made intensity statistics of the whole volume (no weights, no learning)."""

    input_kind = "volume3d"

    def __init__(self, threshold: float = 0.01) -> None:
        super().__init__()
        self.threshold = float(threshold)
        self.layer_names = list(_GROUPS)
        self.embed_dim = sum(_WIDTH.values())
        self.config = {"reference": "baseline", "threshold": self.threshold, "statistics": STAT_NAMES,
                       "grid_statistics": GRID_STAT_NAMES, "regions": dict(_N_REGIONS)}

    def preprocess(self, volume: torch.Tensor) -> torch.Tensor:
        return volume.float()[None, None]

    def _features(self, vol: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        groups = image_statistics(vol, self.threshold)
        parts = [groups[g] for g in _GROUPS]
        return torch.cat(parts), parts

    def forward_features(self, x: torch.Tensor, layers: Sequence[int] = (),
                         return_patch: bool = False) -> dict[str, Any]:
        cls, per_layer, patch = [], [[] for _ in layers], []
        for b in range(x.shape[0]):
            vol = x[b, 0].float()
            feat, parts = self._features(vol)
            cls.append(feat)
            for j, layer in enumerate(layers):
                per_layer[j].append(parts[self.layer_index(layer)])
            if return_patch:
                # the same statistics of each axial slice (a (D, 1, 1) grid of "tokens")
                patch.append(torch.stack([self._features(vol[k:k + 1])[0] for k in range(vol.shape[0])]))
        out: dict[str, Any] = {"cls": torch.stack(cls).float()}
        if layers:
            out["layers"] = [torch.stack(p).float() for p in per_layer]
        if return_patch:
            out["patch"] = torch.stack(patch).float()[:, :, None, None, :]
        return out


class PriorEncoder(Encoder):
    """A constant feature: the heads' closed-form prior (class frequencies / mean) is fitted on it."""

    input_kind = "volume3d"

    def __init__(self) -> None:
        super().__init__()
        self.layer_names = ["constant"]
        self.embed_dim = 1
        self.config = {"reference": "prior"}

    def preprocess(self, volume: torch.Tensor) -> torch.Tensor:
        return volume.new_zeros((1, 1, 1, 1, 1))

    def forward_features(self, x: torch.Tensor, layers: Sequence[int] = (),
                         return_patch: bool = False) -> dict[str, Any]:
        b = x.shape[0]
        out: dict[str, Any] = {"cls": x.new_zeros((b, 1))}
        if layers:
            out["layers"] = [x.new_zeros((b, 1)) for _ in layers]
        if return_patch:
            out["patch"] = x.new_zeros((b, 1, 1, 1, 1))
        return out


class PhantomOracle(Encoder):
    """The phantom generator's ground truth per scan (an upper reference; phantom data only)."""

    input_kind = "table"

    def __init__(self) -> None:
        super().__init__()
        self.layer_names = ["truth"]
        self.embed_dim = 0  # known once the table is read
        self.config = {"reference": "oracle"}

    def encode_table(self, index: Any, manifest: str | Path | None) -> np.ndarray:
        """Ground-truth rows for ``index`` (subject, session, modality) from ``truth.parquet`` by the manifest."""
        import pandas as pd

        from brainfm.data.phantom.generate import TRUTH_FILE
        from brainfm.data.phantom.truth import TRUTH_PREFIX

        if manifest is None:
            raise InputError("phantom_oracle", "the oracle reads the dataset's ground truth: pass its manifest")
        path = Path(manifest).parent / TRUTH_FILE
        if not path.exists():
            raise InputError(path, "no phantom ground truth next to the manifest: the phantom_oracle reference "
                                   "exists for phantom datasets only (regenerate the dataset if it is one)")
        truth = read_frame(path, "phantom ground truth")
        cols = sorted(c for c in truth.columns if c.startswith(TRUTH_PREFIX))
        key = ["subject", "session", "modality"]
        truth[key] = truth[key].astype(str)
        joined = index[key].astype(str).merge(truth, on=key, how="left", validate="many_to_one")
        missing = joined[cols].isna().any(axis=1)
        if missing.any():
            bad = index.loc[missing.to_numpy(), key].head(3).to_dict("records")
            raise InputError(path, f"no ground truth for {int(missing.sum())} scan(s), e.g. {bad}")
        x = joined[cols].to_numpy(np.float64)
        # standardised over the dataset's scans (no labels involved): the heads' per-sample LayerNorm
        # would otherwise let log volumes drown differences of a few percent in tissue fractions
        mean, sd = x.mean(0), x.std(0)
        x = (x - mean) / np.where(sd > 1e-12, sd, 1.0)
        self.embed_dim = len(cols)
        self.config = {"reference": "oracle", "columns": cols, "standardised": "over the dataset's scans"}
        return x.astype(np.float32)


@register_encoder("image_stats")
def image_stats(weights: str | None = None, threshold: float = 0.01) -> ImageStats:
    """Intensity percentiles and tissue contrasts per region; a reference without weights."""
    if weights:
        raise InputError(weights, "image_stats has no weights")
    return ImageStats(threshold)


@register_encoder("prior")
def prior(weights: str | None = None) -> PriorEncoder:
    """Training-set class frequencies / mean; the chance reference without weights."""
    if weights:
        raise InputError(weights, "prior has no weights")
    return PriorEncoder()


@register_encoder("phantom_oracle")
def phantom_oracle(weights: str | None = None) -> PhantomOracle:
    """The phantom generator's ground truth; the upper reference on phantom data."""
    if weights:
        raise InputError(weights, "phantom_oracle has no weights")
    return PhantomOracle()
