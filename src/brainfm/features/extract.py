"""Frozen feature extraction: one pass of an encoder over a preprocessed volume store.

Protocol (paper §4.3, §4.6): for a 2D encoder every axial slice of a (D, H, W) volume goes
through the frozen ViT and the volume's feature is the mean of its slice CLS tokens; requested
layers are pooled the same way (CKA); with ``central_range`` the patch tokens of the central
axial slices are averaged as well (PPMI protocol). A 3D encoder sees the whole volume.

Throughput: slices of consecutive volumes are packed into full batches (a batch may span two
volumes), so the accelerator always sees ``batch_size`` slices; reading the next volume from the
memory-mapped store overlaps with compute in a background thread. Per-slice outputs are kept
until their volume is complete and then averaged in float64 in slice order, so the features do
not depend on how slices were batched (up to the model's own batch-size numerics).

Frozen for real: the encoder runs in eval mode (no dropout, no drop-path) under
``torch.inference_mode()``; its previous train/eval state is restored afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import math
import platform
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from brainfm.atomic import atomic_dir
from brainfm.device import autocast_dtype, cpu_attention, resolve_precision
from brainfm.errors import ConfigError, InputError
from brainfm.features.store import FeatureStore, write_feature_dir
from brainfm.models.base import Encoder

__all__ = ["extract_features", "central_indices", "autocast_context", "synchronize"]

log = logging.getLogger("brainfm.features")

_RESERVED = ("shard", "offset")


# ----------------------------------------------------------------------------- helpers
def central_indices(n: int, central_range: tuple[float, float]) -> tuple[int, int]:
    """Half-open [k0, k1) of the positions whose centres (k + 0.5) / n lie in [lo, hi].

    Used for axial slices (2D) and axial token planes (3D) alike, so a fraction of the axial
    extent means the same anatomy for both. At least one position (the one nearest the middle
    of the range) is always selected.
    """
    lo, hi = float(central_range[0]), float(central_range[1])
    k0 = max(0, math.ceil(lo * n - 0.5))
    k1 = min(n, math.floor(hi * n - 0.5) + 1)
    if k1 <= k0:
        k0 = min(n - 1, max(0, int((lo + hi) / 2 * n)))
        k1 = k0 + 1
    return k0, k1


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast for a resolved precision (``bf16``) on CPU or CUDA; a no-op for ``fp32``."""
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _version(package: str) -> str | None:
    """An installed package's version without importing it (timm costs seconds to import)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels so wall-clock timings are honest on GPUs."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_END = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def _prefetch(read: Callable[[int], Any], items: Iterable[int], depth: int = 2) -> Iterator[tuple[int, Any]]:
    """Yield ``(i, read(i))`` with reads running ahead in a background thread."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(obj: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(obj, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def worker() -> None:
        try:
            for i in items:
                if not put((i, read(i))):
                    return
        except BaseException as exc:  # re-raised in the consumer
            put(_Failure(exc))
            return
        put(_END)

    thread = threading.Thread(target=worker, name="brainfm-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            obj = q.get()
            if obj is _END:
                return
            if isinstance(obj, _Failure):
                raise obj.exc
            yield obj
    finally:
        stop.set()
        thread.join(timeout=5)


def _store_dir(store: Any) -> str:
    return str(getattr(store, "dir", getattr(store, "path", type(store).__name__)))


def _resolve_layers(encoder: Encoder, layers: Sequence[int | str]) -> tuple[list[int], list[str]]:
    idx: list[int] = []
    for layer in layers:
        i = encoder.layer_index(layer)
        if i not in idx:
            idx.append(i)
    return idx, [encoder.layer_names[i] for i in idx]


class _Pending:
    """Per-volume per-slice outputs until every slice of the volume has been through the model."""

    __slots__ = ("row", "n", "done", "cls", "layers", "central", "k0", "k1")

    def __init__(self, row: int, n: int, dim: int, k0: int, k1: int):
        self.row, self.n, self.done = row, n, 0
        self.cls = np.empty((n, dim), np.float32)
        self.layers: list[np.ndarray] = []  # allocated when the first layer outputs arrive
        self.central = np.empty((k1 - k0, dim), np.float32) if k1 > k0 else None
        self.k0, self.k1 = k0, k1


# ----------------------------------------------------------------------------- main entry
def extract_features(encoder: Encoder, store: Any, out_dir: str | Path, *, batch_size: int = 64,
                     device: str | torch.device = "cpu", precision: str = "fp32", layers: Sequence[int | str] = (),
                     central_range: tuple[float, float] | None = None, rows: Sequence[int] | None = None,
                     progress: bool = True, volume_batch: int = 1,
                     manifest: str | Path | None = None) -> FeatureStore:
    """Extract frozen features of every volume (or ``rows``) of ``store`` into ``out_dir``.

    ``store`` is a :class:`brainfm.preprocess.store.ShardedStore` of (D, H, W) volumes (anything
    with ``index`` and ``__getitem__`` works). ``batch_size`` counts slices for 2D encoders;
    ``volume_batch`` volumes go through a 3D encoder at once. ``precision`` ``auto`` is resolved
    for ``device`` (:func:`brainfm.device.resolve_precision`); the store records the result. Returns the written
    :class:`FeatureStore`; the directory appears atomically, complete or not at all.
    An encoder of ``input_kind == "table"`` (a reference such as the phantom oracle) reads no
    voxels: it maps the store's scans to values of a table found through ``manifest``.
    """
    if not isinstance(encoder, Encoder):
        raise TypeError(f"encoder must be a brainfm Encoder, got {type(encoder).__name__}")
    if encoder.input_kind not in ("slices2d", "volume3d", "table"):
        raise ConfigError(f"encoder {encoder.name!r} has unknown input_kind {encoder.input_kind!r}")
    if int(batch_size) < 1 or int(volume_batch) < 1:
        raise ConfigError(f"batch_size and volume_batch must be >= 1, got {batch_size}, {volume_batch}")
    if central_range is not None:
        lo, hi = (float(v) for v in central_range)
        if not 0.0 <= lo < hi <= 1.0:
            raise ConfigError(f"central_range must satisfy 0 <= lo < hi <= 1, got {tuple(central_range)}")
        central_range = (lo, hi)
    meta_kind = (getattr(store, "meta", None) or {}).get("kind")
    if meta_kind not in (None, "volume"):
        raise InputError(_store_dir(store), f"feature extraction needs a volume store, this one holds {meta_kind!r}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but CUDA is not available")
    layer_idx, layer_names = _resolve_layers(encoder, layers)
    requested = str(precision)
    precision = resolve_precision(requested, str(dev))
    cpu_attention([encoder], dev.type, precision)

    full_index = store.index.reset_index(drop=True)
    n_store = len(full_index)
    if rows is None:
        row_ids = np.arange(n_store, dtype=np.int64)
    else:
        row_ids = np.asarray(list(rows), dtype=np.int64).reshape(-1)
        if len(row_ids) and (row_ids.min() < -n_store or row_ids.max() >= n_store):
            raise ConfigError(f"rows out of range for a store of {n_store} volumes")
        row_ids %= max(n_store, 1)
    if len(row_ids) == 0:
        raise InputError(_store_dir(store), "no volumes to extract")
    key_cols = [c for c in full_index.columns if c not in _RESERVED]
    index = full_index.loc[row_ids, key_cols].reset_index(drop=True)
    n = len(row_ids)

    if encoder.input_kind == "table":
        return _extract_table(encoder, store, out_dir, index, rows, row_ids, layers, manifest,
                              central=central_range is not None)

    was_training = encoder.training
    encoder.eval()
    encoder.to(dev)
    dim = int(encoder.embed_dim)
    results: dict[str, Any] = {"cls": np.empty((n, dim), np.float32), "layers": None,
                               "central": np.empty((n, dim), np.float32) if central_range else None}
    stats = {"slices_per_volume": set(), "total_slices": 0, "central": set()}

    def read(j: int) -> torch.Tensor:
        vol = np.asarray(store[int(row_ids[j])], dtype=np.float32)
        if vol.ndim != 3:
            raise InputError(_store_dir(store), f"item {int(row_ids[j])} has shape {vol.shape}, expected (D, H, W)")
        return torch.from_numpy(vol)

    bar = tqdm(total=n, desc=f"features {encoder.name or type(encoder).__name__}", unit="vol",
               disable=None if progress else True)
    t0 = time.perf_counter()
    try:
        with torch.inference_mode():
            if encoder.input_kind == "slices2d":
                _run_2d(encoder, _prefetch(read, range(n)), dev, precision, int(batch_size), layer_idx,
                        central_range, results, stats, bar, index, _store_dir(store))
            else:
                _run_3d(encoder, _prefetch(read, range(n)), dev, precision, int(volume_batch), layer_idx,
                        central_range, results, stats, bar, index, _store_dir(store))
        synchronize(dev)
    finally:
        bar.close()
        encoder.train(was_training)
    seconds = time.perf_counter() - t0

    weights = encoder.weights_info or {}
    spv = sorted(stats["slices_per_volume"])
    meta = {
        "encoder": encoder.name,
        "encoder_class": type(encoder).__name__,
        "input_kind": encoder.input_kind,
        "embed_dim": dim,
        # the whole load info: file, sha256, recognised layout, ignored keys, RoPE precision, LayerNorm eps
        "weights": dict(weights) if weights else None,
        "encoder_config": dict(encoder.config),
        "protocol": {
            "pooling": ("mean over axial slices of the per-slice CLS token after the final norm"
                        if encoder.input_kind == "slices2d" else "encoder's volume token (cls)"),
            "layers": "same pooling of each block's CLS token passed through the final norm"
            if encoder.input_kind == "slices2d" else "encoder's pooled token per stage/block",
            "central_range": list(central_range) if central_range else None,
            "central_positions": sorted(stats["central"]) if central_range else None,
            "store": _store_dir(store),
            "store_protocol": (getattr(store, "meta", None) or {}).get("protocol"),
        },
        "layer_indices": layer_idx,
        "rows": None if rows is None else [int(r) for r in row_ids],
        "n_slices": spv[0] if len(spv) == 1 else spv,
        "total_slices": int(stats["total_slices"]),
        "dtype": "float32",
        "precision": precision,  # fp32 | bf16 (autocast), as run
        "precision_requested": requested,
        "device": str(dev),
        "batch_size": int(batch_size),
        "seconds": round(seconds, 3),
        "slices_per_s": round(stats["total_slices"] / seconds, 3) if seconds > 0 and stats["total_slices"] else None,
        "volumes_per_s": round(n / seconds, 4) if seconds > 0 else None,
        "versions": {"torch": torch.__version__, "timm": _version("timm"), "python": platform.python_version()},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    layers_out = dict(zip(layer_names, results["layers"])) if layer_idx else None
    with atomic_dir(out_dir) as tmp:
        write_feature_dir(tmp, index, results["cls"], layers_out, results["central"], meta)
    log.info("extracted %d volumes (%d slices) with %s in %.1f s", n, stats["total_slices"], encoder.name, seconds)
    return FeatureStore(out_dir)


def _extract_table(encoder: Encoder, store: Any, out_dir: str | Path, index: pd.DataFrame,
                   rows: Sequence[int] | None, row_ids: np.ndarray, layers: Sequence[int | str],
                   manifest: str | Path | None, central: bool = False) -> FeatureStore:
    """Features of a table encoder: one row of values per scan, no voxels read.

    Per-scan values have no slices: the central-slice features (``central``) are the same values.
    """
    t0 = time.perf_counter()
    cls = np.asarray(encoder.encode_table(index, manifest), dtype=np.float32)
    if cls.shape[0] != len(index):
        raise ValueError(f"{type(encoder).__name__}.encode_table returned {cls.shape[0]} rows for {len(index)} scans")
    if not np.isfinite(cls).all():
        raise InputError(_store_dir(store), f"non-finite values from {encoder.name}")
    layer_idx, layer_names = _resolve_layers(encoder, layers)
    meta = {
        "encoder": encoder.name, "encoder_class": type(encoder).__name__, "input_kind": encoder.input_kind,
        "embed_dim": int(cls.shape[1]), "weights": None, "encoder_config": dict(encoder.config),
        "protocol": {"pooling": "per-scan table values", "source": str(manifest), "store": _store_dir(store),
                     "central_range": None},
        "layer_indices": layer_idx, "rows": None if rows is None else [int(r) for r in row_ids],
        "dtype": "float32", "seconds": round(time.perf_counter() - t0, 3),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    layers_out = {name: cls for name in layer_names} if layer_idx else None
    with atomic_dir(out_dir) as tmp:
        write_feature_dir(tmp, index, cls, layers_out, cls if central else None, meta)
    return FeatureStore(out_dir)


def _check_finite(t: torch.Tensor, what: str, index: pd.DataFrame, rows: Sequence[int], source: str) -> None:
    if not torch.isfinite(t).all():
        bad = index.iloc[sorted(set(rows))[:3]].to_dict("records")
        raise InputError(source, f"non-finite {what} for volume(s) {bad} (bad input values, or bf16 overflow: "
                                 "retry with precision fp32)")


def _run_2d(encoder: Encoder, volumes: Iterator[tuple[int, torch.Tensor]], dev: torch.device, precision: str,
            batch_size: int, layer_idx: list[int], central_range: tuple[float, float] | None,
            results: dict[str, Any], stats: dict[str, Any], bar: tqdm, index: pd.DataFrame, source: str) -> None:
    """Pack slices of consecutive volumes into full batches; pool per volume when complete."""
    pieces: list[tuple[_Pending, int, int, torch.Tensor]] = []  # (volume, first slice, count, slices)
    queued = 0

    def finish(p: _Pending) -> None:
        results["cls"][p.row] = p.cls.astype(np.float64).mean(axis=0)
        if layer_idx:
            if results["layers"] is None:
                results["layers"] = [np.empty((len(results["cls"]), a.shape[1]), np.float32) for a in p.layers]
            for dst, src in zip(results["layers"], p.layers):
                dst[p.row] = src.astype(np.float64).mean(axis=0)
        if central_range is not None:
            results["central"][p.row] = p.central.astype(np.float64).mean(axis=0)
        bar.update(1)

    def run(take: int) -> None:
        """Forward the first ``take`` queued slices as one batch."""
        nonlocal queued
        chunks, owners, need_patch = [], [], False
        left = take
        while left:
            p, start, count, x = pieces[0]
            use = min(count, left)
            chunks.append(x[:use])
            owners.append((p, start, use))
            need_patch |= central_range is not None and start < p.k1 and start + use > p.k0
            if use == count:
                pieces.pop(0)
            else:
                pieces[0] = (p, start + use, count - use, x[use:])
            left -= use
        queued -= take
        xb = torch.cat(chunks) if len(chunks) > 1 else chunks[0]
        with autocast_context(dev, precision):
            out = encoder.forward_features(xb, layers=layer_idx, return_patch=need_patch)
        cls = out["cls"].float()
        _check_finite(cls, "CLS tokens", index, [p.row for p, _, _ in owners], source)
        cls = cls.cpu().numpy()
        lay = [t.float().cpu().numpy() for t in out.get("layers", [])] if layer_idx else []
        patch = out["patch"].float().mean(dim=(1, 2)).cpu().numpy() if need_patch else None
        off = 0
        for p, start, use in owners:
            p.cls[start:start + use] = cls[off:off + use]
            if lay and not p.layers:
                p.layers = [np.empty((p.n, a.shape[1]), np.float32) for a in lay]
            for dst, src in zip(p.layers, lay):
                dst[start:start + use] = src[off:off + use]
            if patch is not None:
                a, b = max(start, p.k0), min(start + use, p.k1)
                if b > a:
                    p.central[a - p.k0:b - p.k0] = patch[off + a - start:off + b - start]
            off += use
            p.done += use
            if p.done == p.n:
                finish(p)

    for j, vol in volumes:
        x = encoder.preprocess(vol.to(dev, non_blocking=True))
        s = int(x.shape[0])
        if s == 0:
            raise InputError(source, f"volume {index.iloc[j].to_dict()} has no slices")
        k0, k1 = central_indices(s, central_range) if central_range else (0, 0)
        if central_range:
            stats["central"].add((s, k0, k1))
        stats["slices_per_volume"].add(s)
        stats["total_slices"] += s
        pieces.append((_Pending(j, s, int(encoder.embed_dim), k0, k1), 0, s, x))
        queued += s
        while queued >= batch_size:
            run(batch_size)
    while queued:
        run(min(batch_size, queued))


def _run_3d(encoder: Encoder, volumes: Iterator[tuple[int, torch.Tensor]], dev: torch.device, precision: str,
            volume_batch: int, layer_idx: list[int], central_range: tuple[float, float] | None,
            results: dict[str, Any], stats: dict[str, Any], bar: tqdm, index: pd.DataFrame, source: str) -> None:
    """Whole volumes through a 3D encoder, ``volume_batch`` at a time."""
    batch: list[tuple[int, torch.Tensor]] = []

    def run() -> None:
        rows = [j for j, _ in batch]
        xb = torch.cat([x for _, x in batch])
        with autocast_context(dev, precision):
            out = encoder.forward_features(xb, layers=layer_idx, return_patch=central_range is not None)
        cls = out["cls"].float()
        _check_finite(cls, "features", index, rows, source)
        results["cls"][rows] = cls.cpu().numpy()
        if layer_idx:
            lay = [t.float().reshape(t.shape[0], -1).cpu().numpy() for t in out["layers"]]
            if results["layers"] is None:
                results["layers"] = [np.empty((len(results["cls"]), a.shape[1]), np.float32) for a in lay]
            for dst, src in zip(results["layers"], lay):
                dst[rows] = src
        if central_range is not None:
            patch = out["patch"].float()  # (B, gd, gh, gw, D), gd along the axial axis
            k0, k1 = central_indices(int(patch.shape[1]), central_range)
            stats["central"].add((int(patch.shape[1]), k0, k1))
            sel = patch[:, k0:k1]
            results["central"][rows] = sel.reshape(sel.shape[0], -1, sel.shape[-1]).mean(dim=1).cpu().numpy()
        bar.update(len(rows))
        batch.clear()

    # an encoder with one input layer per MRI sequence (BM-MAE's tokenizers) is told each volume's
    # modality; a batch never mixes modalities
    per_modality = bool(getattr(encoder, "per_modality", False))
    if per_modality and "modality" not in index.columns:
        raise InputError(source, f"{type(encoder).__name__} picks its input layer by modality; the store has none")
    current = None
    for j, vol in volumes:
        if per_modality:
            modality = str(index.at[j, "modality"])
            if modality != current:
                if batch:
                    run()
                encoder.use_modality(modality)
                current = modality
        stats["slices_per_volume"].add(int(vol.shape[0]))
        stats["total_slices"] += int(vol.shape[0])
        x = encoder.preprocess(vol.to(dev, non_blocking=True))
        if x.ndim != 5 or x.shape[0] != 1:
            raise ValueError(f"{type(encoder).__name__}.preprocess must return (1, C, d, h, w), got {tuple(x.shape)}")
        batch.append((j, x))
        if len(batch) == volume_batch:
            run()
    if batch:
        run()
