"""Streaming pretraining data from the preprocessed sharded stores.

The corpus is never materialised as Python objects: a source keeps flat numpy arrays (store id,
item index) of the usable items — 6.6 M slices cost ~60 MB — and reads pixels through the
store's lazily opened memmaps, which is safe in DataLoader worker processes.

**Stream positions.** Training consumes an infinite stream of samples. Position ``p`` maps to
epoch ``p // N`` and to item ``perm_epoch[p % N]`` of a per-epoch permutation seeded by
``(seed, epoch)``. Iteration ``it`` of a run whose global batch is ``G`` reads positions
``start + (it - it0) * G + rank * B + j`` (``B`` the per-process batch), and every random choice
for a sample (crops, flips, blur, masks) comes from a generator seeded by ``(seed, p)``. Hence:
a resumed run continues exactly where it stopped (its position is one integer), and K processes
with batch B see exactly the samples and augmentations of one process with batch K*B.
Stage-2 crop pairs are chosen per iteration from ``(seed, it)``, identically on every process.

**Blank slices.** Slices flagged ``blank`` in the store index are excluded up front; a slice
that is nevertheless constant (identical inputs give zero KoLeo distances) is skipped
deterministically in favour of the next stream position.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from brainfm.errors import InputError

__all__ = [
    "resolve_store",
    "open_store",
    "SliceSource",
    "VolumeSource",
    "StackedSliceSource",
    "sample_rng",
    "PositionBatchSampler",
    "DinoCropDataset",
    "SimCLRDataset",
    "collate_dino",
    "collate_simclr",
    "make_loader",
]

_MAX_SKIP = 64  # constant-slice skips before giving up on a stream position


def resolve_store(path: str | Path, kind: str) -> Path:
    """The store directory of ``kind`` ("slice" | "volume") at ``path`` or in one of its sub-directories.

    The workflow passes ``results/preprocessed/<dataset>``, which holds the slice store (for
    DINO) and/or the downstream volume store; a store directory can also be given directly.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "store directory does not exist")
    preferred = path / {"slice": "pretrain", "volume": "downstream"}.get(kind, kind)
    others = sorted(p for p in path.iterdir() if p.is_dir() and p != preferred and not p.name.endswith("_masks"))
    candidates = [path] + ([preferred] if preferred.is_dir() else []) + others
    for cand in candidates:
        meta = cand / "meta.json"
        if (cand / "index.parquet").exists() and meta.exists():
            try:
                found = json.loads(meta.read_text()).get("kind")
            except (OSError, json.JSONDecodeError) as exc:
                raise InputError(meta, f"unreadable store metadata: {exc}") from exc
            if found == kind:
                return cand
    raise InputError(path, f"no {kind} store (index.parquet + meta.json with kind={kind!r}) here or in a sub-directory")


def open_store(path: str | Path):
    """Open a :class:`brainfm.preprocess.store.ShardedStore`, turning read failures into InputError."""
    from brainfm.preprocess.store import ShardedStore

    try:
        return ShardedStore(Path(path))
    except InputError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(path, f"cannot open store: {exc}") from exc


def sample_rng(seed: int, position: int, stream: int = 0) -> np.random.Generator:
    """The generator for every random choice about the sample at stream ``position``."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(stream), int(position)])


class _Permuted:
    """Position -> item index through per-epoch permutations (only the current epoch is cached)."""

    def __init__(self, n: int, seed: int):
        self.n = int(n)
        self.seed = int(seed)
        self._epoch = -1
        self._perm: np.ndarray | None = None

    def __call__(self, position: int) -> int:
        epoch, offset = divmod(int(position), self.n)
        if epoch != self._epoch:
            perm = np.random.default_rng([self.seed & 0xFFFFFFFF, 0x5EED, epoch]).permutation(self.n)
            self._perm = perm.astype(np.int32 if self.n < 2**31 else np.int64)
            self._epoch = epoch
        return int(self._perm[offset])  # type: ignore[index]

    def __getstate__(self) -> dict:  # workers rebuild their own cache
        return {"n": self.n, "seed": self.seed, "_epoch": -1, "_perm": None}


def _is_constant(a: np.ndarray) -> bool:
    return a.size == 0 or bool(np.nanmax(a) == np.nanmin(a)) or not np.isfinite(a).all()


class _MultiStore:
    """Several stores behind one flat item numbering; memmaps are opened lazily per process."""

    def __init__(self, dirs: Sequence[Path], kind: str):
        self.dirs = [Path(d) for d in dirs]
        self.kind = kind
        self._stores: list[Any] | None = None
        stores = self._open()
        shapes = {tuple(s.meta["item_shape"]) for s in stores}
        if len(shapes) > 1:
            raise InputError(self.dirs[0], f"stores have different item shapes {sorted(shapes)}; "
                                           "preprocess all pretraining datasets with one protocol")
        self.item_shape = shapes.pop() if shapes else ()
        for d, s in zip(self.dirs, stores):
            if s.meta.get("kind") != kind:
                raise InputError(d, f"expected a {kind} store, found kind={s.meta.get('kind')!r}")

    def _open(self) -> list[Any]:
        if self._stores is None:
            self._stores = [open_store(d) for d in self.dirs]
        return self._stores

    def store(self, sid: int):
        return self._open()[sid]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_stores"] = None
        return state


class SliceSource:
    """Non-blank 2D slices of one or more slice stores (BrainDINO pretraining)."""

    def __init__(self, store_dirs: Sequence[str | Path]):
        dirs = [resolve_store(d, "slice") for d in store_dirs]
        if not dirs:
            raise InputError("<stores>", "no slice store given")
        self.stores = _MultiStore(dirs, "slice")
        sids, items = [], []
        for sid, store in enumerate(self.stores._open()):
            keep = store.nonblank_indices()
            sids.append(np.full(keep.shape, sid, dtype=np.int16))
            items.append(keep.astype(np.int64))
        self.store_id = np.concatenate(sids) if sids else np.zeros(0, np.int16)
        self.item = np.concatenate(items) if items else np.zeros(0, np.int64)
        if len(self.item) == 0:
            raise InputError(dirs[0] if len(dirs) == 1 else ", ".join(map(str, dirs)),
                             "the slice store has no non-blank slices to pretrain on")
        self.n_total = int(sum(len(s.index) for s in self.stores._open()))

    def __len__(self) -> int:
        return len(self.item)

    def read(self, j: int) -> np.ndarray:
        """Slice ``j`` of the flat numbering as float32 (C=1, H, W)."""
        arr = np.asarray(self.stores.store(int(self.store_id[j]))[int(self.item[j])], dtype=np.float32)
        return arr[None] if arr.ndim == 2 else arr


class VolumeSource:
    """Whole 3D volumes of one or more downstream volume stores (BrainIAC SimCLR pretraining)."""

    def __init__(self, store_dirs: Sequence[str | Path]):
        dirs = [resolve_store(d, "volume") for d in store_dirs]
        self.stores = _MultiStore(dirs, "volume")
        sids, items = [], []
        for sid, store in enumerate(self.stores._open()):
            n = len(store)
            sids.append(np.full(n, sid, dtype=np.int16))
            items.append(np.arange(n, dtype=np.int64))
        self.store_id = np.concatenate(sids) if sids else np.zeros(0, np.int16)
        self.item = np.concatenate(items) if items else np.zeros(0, np.int64)
        if len(self.item) == 0:
            raise InputError(", ".join(map(str, dirs)), "the volume store is empty: nothing to pretrain on")

    def __len__(self) -> int:
        return len(self.item)

    def read(self, j: int) -> np.ndarray:
        return np.asarray(self.stores.store(int(self.store_id[j]))[int(self.item[j])], dtype=np.float32)


class StackedSliceSource:
    """Axial slices with three channels from the volume store (BrainFound input).

    ``stack="adjacent"``: slices (k - step, k, k + step) of one volume. ``stack="modalities"``:
    slice k of three co-registered modalities of one (dataset, subject, session). Units are
    (group, k) pairs numbered ``group * n_k + (k - k0)``; constant slices are skipped at read time.
    """

    def __init__(self, store_dirs: Sequence[str | Path], stack: str = "adjacent",
                 modalities: Sequence[str] = ("T1", "T2", "FLAIR"), step: int = 1):
        dirs = [resolve_store(d, "volume") for d in store_dirs]
        self.stores = _MultiStore(dirs, "volume")
        self.stack = stack
        self.step = int(step)
        depth = int(self.stores.item_shape[0]) if self.stores.item_shape else 0
        groups: list[np.ndarray] = []  # rows: (store id, item c0, item c1, item c2)
        for sid, store in enumerate(self.stores._open()):
            index = store.index.reset_index(drop=True)
            if stack == "adjacent":
                ids = np.arange(len(index), dtype=np.int64)
                groups.append(np.stack([np.full_like(ids, sid), ids, ids, ids], axis=1))
            else:
                keys = [c for c in ("dataset", "subject", "session") if c in index.columns]
                sub = index[index["modality"].isin(list(modalities))]
                rows = []
                for _, g in sub.groupby(keys, sort=True):
                    by_mod = dict(zip(g["modality"], g.index))
                    if all(m in by_mod for m in modalities):
                        rows.append([sid] + [int(by_mod[m]) for m in modalities])
                if rows:
                    groups.append(np.asarray(rows, dtype=np.int64))
        self.groups = np.concatenate(groups) if groups else np.zeros((0, 4), np.int64)
        if stack == "adjacent":
            self.k0, self.k1 = self.step, depth - self.step  # k in [k0, k1)
        else:
            self.k0, self.k1 = 0, depth
        self.n_k = max(self.k1 - self.k0, 0)
        if len(self.groups) == 0 or self.n_k == 0:
            what = "volumes" if stack == "adjacent" else f"sessions with all of {list(modalities)}"
            raise InputError(", ".join(map(str, dirs)), f"no {what} to build stacked slices from")

    def __len__(self) -> int:
        return len(self.groups) * self.n_k

    def read(self, j: int) -> np.ndarray:
        g, kk = divmod(int(j), self.n_k)
        k = self.k0 + kk
        sid, a, b, c = (int(v) for v in self.groups[g])
        store = self.stores.store(sid)
        if self.stack == "adjacent":
            vol = store[a]
            return np.asarray(vol[[k - self.step, k, k + self.step]], dtype=np.float32)
        return np.stack([np.asarray(store[i][k], dtype=np.float32) for i in (a, b, c)])


# ----------------------------------------------------------------------------- sampling
@dataclass
class PositionBatchSampler(Sampler):
    """Yields, for each iteration, this process's list of (stream position, crop-pair index)."""

    start_position: int
    start_iter: int
    n_iters: int
    global_batch: int
    local_batch: int
    rank: int
    seed: int
    pair_ratios: Sequence[float] = (1.0,)

    def pair_of(self, it: int) -> int:
        if len(self.pair_ratios) == 1:
            return 0
        p = np.asarray(self.pair_ratios, dtype=np.float64)
        return int(np.random.default_rng([self.seed & 0xFFFFFFFF, 0xC80B, int(it)]).choice(len(p), p=p / p.sum()))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for i in range(self.n_iters):
            it = self.start_iter + i
            base = self.start_position + i * self.global_batch + self.rank * self.local_batch
            pair = self.pair_of(it)
            yield [(base + j, pair) for j in range(self.local_batch)]

    def __len__(self) -> int:
        return self.n_iters


class DinoCropDataset(Dataset):
    """Stream position -> multi-crop views and iBOT masks of one slice."""

    def __init__(self, source, augment, pairs: Sequence[tuple[int, int]], patch_size: int, seed: int,
                 mask_prob: float, mask_ratio: tuple[float, float], mask_min_patches: int = 4):
        self.source = source
        self.augment = augment
        self.pairs = [tuple(p) for p in pairs]
        self.patch_size = int(patch_size)
        self.seed = int(seed)
        self.mask_prob = mask_prob
        self.mask_ratio = tuple(mask_ratio)
        self.mask_min_patches = mask_min_patches
        self.order = _Permuted(len(source), seed)

    def __len__(self) -> int:
        return len(self.source)

    def _read(self, position: int) -> np.ndarray:
        for skip in range(_MAX_SKIP):
            arr = self.source.read(self.order(position + skip))
            if not _is_constant(arr):
                return arr
        raise InputError("<slice store>", f"{_MAX_SKIP} consecutive constant (blank) slices around stream "
                                          f"position {position}; the store's blank flags look wrong")

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        from brainfm.ssl.masking import sample_crop_masks

        position, pair = key
        gsize, lsize = self.pairs[pair]
        img = torch.from_numpy(np.ascontiguousarray(self._read(position)))
        rng = sample_rng(self.seed, position)
        g, loc = self.augment(img, rng, gsize, lsize)
        grid = (gsize // self.patch_size, gsize // self.patch_size)
        masks = sample_crop_masks(2, grid, rng, self.mask_prob, self.mask_ratio, self.mask_min_patches)
        return {"global": g, "local": loc, "masks": torch.from_numpy(masks), "position": position}


def collate_dino(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Crop-major batches: global (2B, C, g, g) = [crop 0 of every sample, crop 1 of every sample]."""
    g = torch.stack([s["global"] for s in samples], dim=1)  # (2, B, C, g, g)
    loc = torch.stack([s["local"] for s in samples], dim=1)  # (L, B, C, l, l)
    m = torch.stack([s["masks"] for s in samples], dim=1)  # (2, B, h, w)
    return {
        "global": g.flatten(0, 1),
        "local": loc.flatten(0, 1),
        "masks": m.flatten(0, 1),
        "positions": torch.tensor([s["position"] for s in samples], dtype=torch.long),
    }


class SimCLRDataset(Dataset):
    """Stream position -> two augmented views of one volume."""

    def __init__(self, source: VolumeSource, augment, seed: int):
        self.source = source
        self.augment = augment
        self.seed = int(seed)
        self.order = _Permuted(len(source), seed)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        position, _ = key
        vol = torch.from_numpy(np.ascontiguousarray(self.source.read(self.order(position))))
        rng = sample_rng(self.seed, position)
        return {"view1": self.augment(vol, rng), "view2": self.augment(vol, rng), "position": position}


def collate_simclr(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {
        "view1": torch.stack([s["view1"] for s in samples]),
        "view2": torch.stack([s["view2"] for s in samples]),
        "positions": torch.tensor([s["position"] for s in samples], dtype=torch.long),
    }


def make_loader(dataset: Dataset, sampler: PositionBatchSampler, collate, num_workers: int,
                pin_memory: bool = False, prefetch_factor: int = 2) -> DataLoader:
    """A DataLoader over the position sampler; workers only parallelise reading and augmentation."""
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs.update(prefetch_factor=prefetch_factor, persistent_workers=False)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate,
                      pin_memory=pin_memory, **kwargs)
