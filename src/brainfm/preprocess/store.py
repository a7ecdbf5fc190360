"""Sharded stores of fixed-shape float16 arrays: the preprocessed volumes and pretraining slices.

Layout (see the contracts)::

    store_dir/
      index.parquet          one row per item: key columns + ``shard`` + ``offset``
      shard-00000.npy ...    (n_items_in_shard, *item_shape) float16, every shard but the last full
      meta.json              item_shape, dtype, kind, protocol, shard_size, n_items, complete

The paper's corpus is ~51k volumes / 6.6 M slices, so items are never one file each and the
reader never builds Python objects per item unless asked: the index is a DataFrame, item
lookups are numpy arrays over it, pixels come from memory-mapped shards.

**Writing is crash-safe and resumable at shard granularity.** Items are buffered; a full shard
is written atomically (temp file + rename) and *then* ``index.parquet`` is rewritten atomically
to include it, so the index never names a shard that is not complete. A killed writer leaves
complete shards + an index describing a prefix of them + ``meta.json`` with ``complete: false``.
Reopening with the same item shape/kind/protocol/shard size recovers that prefix (an orphan shard
written just before the kill is discarded, a partial last shard is reloaded into the buffer) and
:attr:`ShardWriter.present` tells the caller what is already there; a different protocol starts
the store afresh. Readers refuse incomplete stores and stores whose shards disagree with the index.

**Readers are fork/worker safe.** :class:`ShardedStore` opens memmaps lazily, per process (the
cache is keyed by pid and dropped when pickled), with a bounded number of open shards.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainfm.atomic import save_npy, write_json, write_parquet
from brainfm.errors import InputError

__all__ = ["ShardWriter", "ShardedStore", "ConcatStore", "concat_stores", "shard_name", "FLOAT16_MAX", "KINDS"]

log = logging.getLogger(__name__)

KINDS = ("volume", "slice")
FLOAT16_MAX = float(np.finfo(np.float16).max)
STORE_FORMAT = 1
_RESERVED = ("shard", "offset")
_SHARD_RE = re.compile(r"^shard-(\d{5,})\.npy$")
_MAX_OPEN_SHARDS = 128


def shard_name(i: int) -> str:
    return f"shard-{int(i):05d}.npy"


def _jsonable(obj: Any) -> Any:
    """A JSON round trip, so tuples/numpy scalars compare equal to what meta.json holds."""
    from brainfm.atomic import json_default

    return json.loads(json.dumps(obj, default=json_default))


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    return tuple(int(s) for s in shape), np.dtype(dtype)


def _to_float16(arr: np.ndarray) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype == np.float16:
        return a
    return np.clip(a, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16)


class ShardWriter:
    """Append fixed-shape items (float16 on disk) to a sharded store; resumable at shard granularity.

    Use as a context manager: on a clean exit the last partial shard, the final index and
    ``meta.json`` (``complete: true``) are written; if the block raises, buffered items are
    dropped and the store stays resumable (``complete: false``).
    """

    def __init__(self, store_dir: str | Path, item_shape: Sequence[int], kind: str, protocol: Mapping[str, Any],
                 shard_size: int = 256, *, resume: bool = True):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if int(shard_size) < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.dir = Path(store_dir)
        self.item_shape = tuple(int(s) for s in item_shape)
        if not self.item_shape or min(self.item_shape) < 1:
            raise ValueError(f"item_shape must be non-empty and positive, got {self.item_shape}")
        self.kind = kind
        self.shard_size = int(shard_size)
        self.protocol = _jsonable(dict(protocol))
        self.meta: dict[str, Any] = {"item_shape": list(self.item_shape), "dtype": "float16", "kind": kind,
                                     "protocol": self.protocol, "shard_size": self.shard_size,
                                     "format": STORE_FORMAT, "n_items": None, "complete": False}
        self._committed: list[pd.DataFrame] = []
        self._n_committed = 0
        self._next_shard = 0
        self._buf = np.empty((self.shard_size, *self.item_shape), dtype=np.float16)
        self._buf_keys: list[dict[str, Any]] = []
        self._columns: tuple[str, ...] | None = None
        self._closed = False
        self.resumed_items = 0
        self.dir.mkdir(parents=True, exist_ok=True)
        self._remove_temp_files()
        if resume and self._compatible():
            self._recover()
        else:
            self._wipe()
        write_json(self.dir / "meta.json", self.meta)

    # ------------------------------------------------------------------ resume
    def _remove_temp_files(self) -> None:
        for p in self.dir.glob(".*.tmp*"):
            if p.is_file():
                p.unlink(missing_ok=True)

    def _compatible(self) -> bool:
        meta_path = self.dir / "meta.json"
        if not meta_path.exists():
            return False
        try:
            old = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            return False
        same = all(old.get(k) == self.meta[k] for k in ("item_shape", "dtype", "kind", "protocol", "shard_size"))
        if not same:
            log.warning("%s: existing store was written with a different protocol/shape; starting it afresh",
                        self.dir)
        return same

    def _wipe(self) -> None:
        for p in list(self.dir.iterdir()):
            if _SHARD_RE.match(p.name) or p.name in ("index.parquet", "meta.json"):
                p.unlink()

    def _recover(self) -> None:
        """Keep the longest prefix of shards that the index describes completely and correctly."""
        index_path = self.dir / "index.parquet"
        try:
            index = pd.read_parquet(index_path) if index_path.exists() else pd.DataFrame({"shard": [], "offset": []})
        except Exception as exc:  # an unreadable index cannot vouch for any shard
            log.warning("%s: unreadable index (%s); starting the store afresh", self.dir, exc)
            index = pd.DataFrame({"shard": [], "offset": []})
        kept: list[pd.DataFrame] = []
        shard = 0
        groups = {int(s): g for s, g in index.groupby("shard", sort=True)} if len(index) else {}
        while shard in groups:
            rows = groups[shard].sort_values("offset")
            path = self.dir / shard_name(shard)
            try:
                shape, dtype = _npy_header(path)
            except (OSError, ValueError):
                break
            n = len(rows)
            partial = n < self.shard_size
            if (dtype != np.float16 or shape[1:] != self.item_shape or n > self.shard_size
                    or (shape[0] < n if partial else shape[0] != n)
                    or not np.array_equal(rows["offset"].to_numpy(), np.arange(n))):
                break
            kept.append(rows.reset_index(drop=True))
            shard += 1
            if partial:  # only the last shard may be partial
                break
        # a partial last shard is reloaded into the buffer so later items can complete it
        if kept and len(kept[-1]) < self.shard_size:
            last = kept.pop()
            shard -= 1
            data = np.load(self.dir / shard_name(shard), mmap_mode="r")
            n = len(last)
            self._buf[:n] = data[:n]
            del data
            self._buf_keys = last.drop(columns=list(_RESERVED)).to_dict("records")
        self._committed = kept
        self._n_committed = sum(len(k) for k in kept)
        self._next_shard = shard
        # orphan shards (written just before a kill, or beyond an inconsistency) are discarded
        for p in list(self.dir.iterdir()):
            m = _SHARD_RE.match(p.name)
            if m and int(m.group(1)) >= self._next_shard:
                p.unlink()
        if self._committed or self._buf_keys:
            ref = self._committed[0] if self._committed else pd.DataFrame(self._buf_keys[:1])
            self._columns = tuple(c for c in ref.columns if c not in _RESERVED)
        self.resumed_items = self._n_committed + len(self._buf_keys)
        if self.resumed_items:
            log.info("%s: resuming with %d items in %d complete shard(s)", self.dir, self.resumed_items,
                     self._next_shard)
        self._write_index()  # the index now matches exactly the shards kept

    # ------------------------------------------------------------------ writing
    @property
    def n_items(self) -> int:
        return self._n_committed + len(self._buf_keys)

    @property
    def present(self) -> pd.DataFrame:
        """Key columns of every item already in the store (committed or buffered), in store order."""
        frames = [c.drop(columns=list(_RESERVED)) for c in self._committed]
        if self._buf_keys:
            frames.append(pd.DataFrame(self._buf_keys))
        if not frames:
            return pd.DataFrame(columns=list(self._columns or ()))
        return pd.concat(frames, ignore_index=True)

    def _check_key(self, key: Mapping[str, Any]) -> dict[str, Any]:
        key = dict(key)
        bad = [c for c in _RESERVED if c in key]
        if bad:
            raise ValueError(f"key columns {bad} are reserved by the store")
        cols = tuple(key)
        if self._columns is None:
            self._columns = cols
        elif set(cols) != set(self._columns):
            raise ValueError(f"key columns {sorted(cols)} differ from the store's {sorted(self._columns)}")
        return key

    def add(self, key: Mapping[str, Any], array: np.ndarray) -> None:
        """Append one item; ``key`` identifies it (same columns for every item)."""
        if self._closed:
            raise RuntimeError(f"{self.dir}: writer is closed")
        arr = np.asarray(array)
        if tuple(arr.shape) != self.item_shape:
            raise ValueError(f"item shape {arr.shape} != store item shape {self.item_shape}")
        if not np.isfinite(arr).all():
            raise ValueError(f"item {dict(key)} has NaN/Inf values")
        key = self._check_key(key)
        n = len(self._buf_keys)
        self._buf[n] = _to_float16(arr)
        self._buf_keys.append(key)
        if n + 1 == self.shard_size:
            self._commit()

    def add_many(self, keys: pd.DataFrame | Sequence[Mapping[str, Any]], arrays: np.ndarray) -> None:
        """Append several items (e.g. the sampled slices of one volume)."""
        records = keys.to_dict("records") if isinstance(keys, pd.DataFrame) else list(keys)
        if len(records) != len(arrays):
            raise ValueError(f"{len(records)} keys for {len(arrays)} arrays")
        for key, arr in zip(records, arrays):
            self.add(key, arr)

    def _commit(self) -> None:
        n = len(self._buf_keys)
        if n == 0:
            return
        shard = self._next_shard
        save_npy(self.dir / shard_name(shard), self._buf[:n])
        rows = pd.DataFrame(self._buf_keys)
        rows["shard"] = np.int32(shard)
        rows["offset"] = np.arange(n, dtype=np.int32)
        self._committed.append(rows)
        self._n_committed += n
        self._buf_keys = []
        self._next_shard += 1
        self._write_index()

    def _index_frame(self) -> pd.DataFrame:
        if self._committed:
            return pd.concat(self._committed, ignore_index=True)
        cols = list(self._columns or ()) + list(_RESERVED)
        return pd.DataFrame({c: pd.Series([], dtype=np.int32 if c in _RESERVED else object) for c in cols})

    def _write_index(self) -> None:
        write_parquet(self.dir / "index.parquet", self._index_frame())

    def close(self) -> None:
        """Write the last (partial) shard, the final index and ``meta.json`` marked complete."""
        if self._closed:
            return
        self._commit()
        self._write_index()
        self.meta.update(n_items=self._n_committed, n_shards=self._next_shard, complete=True)
        write_json(self.dir / "meta.json", self.meta)
        self._closed = True

    def abort(self) -> None:
        """Drop buffered items and leave the store resumable (what a kill would leave)."""
        self._buf_keys = []
        self._closed = True

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False


class ShardedStore:
    """Read a complete sharded store: ``len``, ``store[i]`` (float32), ``get(**key)``, iteration.

    Opening checks that ``meta.json`` says complete and that every shard file has exactly the
    rows the index gives it (shape, dtype, offsets); anything else raises :class:`InputError`.
    """

    def __init__(self, store_dir: str | Path, *, verify: bool = True):
        self.dir = Path(store_dir)
        meta_path, index_path = self.dir / "meta.json", self.dir / "index.parquet"
        if not meta_path.exists():
            raise InputError(self.dir, "not a sharded store (meta.json missing)")
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(meta_path, f"unreadable store metadata: {exc}") from exc
        if not self.meta.get("complete", False):
            raise InputError(self.dir, "incomplete store: its writer did not finish (killed or failed); rerun "
                                       "preprocessing to resume it")
        try:
            self.index: pd.DataFrame = pd.read_parquet(index_path).reset_index(drop=True)
        except Exception as exc:  # missing or corrupt parquet
            raise InputError(index_path, f"unreadable store index: {exc}") from exc
        self.item_shape = tuple(int(s) for s in self.meta["item_shape"])
        if not all(c in self.index.columns for c in _RESERVED):
            raise InputError(index_path, "store index lacks the 'shard'/'offset' columns")
        self._shard = self.index["shard"].to_numpy(dtype=np.int64)
        self._offset = self.index["offset"].to_numpy(dtype=np.int64)
        self._pid: int | None = None
        self._mm: OrderedDict[int, np.ndarray] = OrderedDict()
        if verify:
            self.verify()

    # ------------------------------------------------------------------ metadata
    @property
    def kind(self) -> str:
        return str(self.meta.get("kind"))

    @property
    def protocol(self) -> dict[str, Any]:
        return dict(self.meta.get("protocol", {}))

    @property
    def key_columns(self) -> list[str]:
        return [c for c in self.index.columns if c not in _RESERVED]

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return f"ShardedStore({str(self.dir)!r}, kind={self.kind}, n={len(self)}, item_shape={self.item_shape})"

    def verify(self) -> None:
        """Raise InputError if shards and index disagree (vectorised over the index)."""
        n = len(self.index)
        if self.meta.get("n_items") is not None and int(self.meta["n_items"]) != n:
            raise InputError(self.dir, f"store index has {n} rows but meta.json says {self.meta['n_items']} items")
        if n and (self._shard.min() < 0 or self._offset.min() < 0):
            raise InputError(self.dir, "shards and index disagree: negative shard/offset in the index")
        counts = np.bincount(self._shard) if n else np.zeros(0, np.int64)
        order = np.lexsort((self._offset, self._shard))
        s_sorted, o_sorted = self._shard[order], self._offset[order]
        if n:
            starts = np.r_[0, np.flatnonzero(np.diff(s_sorted)) + 1]
            expected = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
            if (counts == 0).any() or not np.array_equal(o_sorted, expected):
                raise InputError(self.dir, "shards and index disagree: shard ids must be contiguous from 0 and "
                                           "offsets 0..n-1 within each shard without duplicates")
        on_disk = sorted(int(m.group(1)) for p in self.dir.iterdir() if (m := _SHARD_RE.match(p.name)))
        if on_disk != list(range(len(counts))):
            raise InputError(self.dir, f"shards and index disagree: index names {len(counts)} shard(s), found "
                                       f"shard files {on_disk[:10]}{'...' if len(on_disk) > 10 else ''}")
        for s, c in enumerate(counts):
            path = self.dir / shard_name(s)
            try:
                shape, dtype = _npy_header(path)
            except (OSError, ValueError) as exc:
                raise InputError(path, f"unreadable shard: {exc}") from exc
            if shape != (int(c), *self.item_shape) or dtype != np.float16:
                raise InputError(path, f"shards and index disagree: shard holds {shape} {dtype}, index expects "
                                       f"({int(c)}, {', '.join(map(str, self.item_shape))}) float16")

    # ------------------------------------------------------------------ reading
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_mm"] = OrderedDict()
        state["_pid"] = None
        return state

    def _memmap(self, shard: int) -> np.ndarray:
        pid = os.getpid()
        if self._pid != pid:  # a forked worker must not reuse the parent's maps
            self._mm = OrderedDict()
            self._pid = pid
        mm = self._mm.get(shard)
        if mm is None:
            mm = np.load(self.dir / shard_name(shard), mmap_mode="r")
            self._mm[shard] = mm
            if len(self._mm) > _MAX_OPEN_SHARDS:
                self._mm.popitem(last=False)
        else:
            self._mm.move_to_end(shard)
        return mm

    def read(self, i: int, dtype: Any = np.float32) -> np.ndarray:
        """Item ``i`` (row ``i`` of the index) as a new array of ``dtype``."""
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"item {i} out of range for a store of {n} items")
        i %= n
        return np.array(self._memmap(int(self._shard[i]))[int(self._offset[i])], dtype=dtype)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.read(i)

    def read_many(self, indices: Sequence[int] | np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        """Items ``indices`` stacked (n, *item_shape); reads each shard once."""
        idx = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(idx), *self.item_shape), dtype=dtype)
        shards = self._shard[idx]
        for s in np.unique(shards):
            sel = np.flatnonzero(shards == s)
            out[sel] = self._memmap(int(s))[self._offset[idx[sel]]]
        return out

    def locate(self, **key: Any) -> int:
        """Row of the single item matching ``key`` (a subset of the key columns)."""
        unknown = [k for k in key if k not in self.index.columns]
        if unknown:
            raise KeyError(f"{self.dir}: unknown key column(s) {unknown}; store keys are {self.key_columns}")
        hit = np.ones(len(self.index), dtype=bool)
        for k, v in key.items():
            col = self.index[k]
            hit &= (col.astype(str) == str(v)).to_numpy() if col.dtype == object else (col == v).to_numpy()
        rows = np.flatnonzero(hit)
        if len(rows) == 0:
            raise KeyError(f"{self.dir}: no item with {key}")
        if len(rows) > 1:
            raise KeyError(f"{self.dir}: {len(rows)} items match {key}; add key columns to select one")
        return int(rows[0])

    def get(self, **key: Any) -> np.ndarray:
        """The item matching ``key`` as float32, e.g. ``store.get(subject="s1", session="0", modality="T1")``."""
        return self.read(self.locate(**key))

    def iter_items(self, indices: Iterable[int] | None = None) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
        """(key dict, float32 array) in store order (or ``indices`` order)."""
        cols = self.key_columns
        keys = self.index[cols]
        for i in (range(len(self)) if indices is None else indices):
            yield {c: v for c, v in zip(cols, keys.iloc[int(i)].tolist())}, self.read(int(i))

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self.read(i)

    def nonblank_indices(self) -> np.ndarray:
        """Rows whose ``blank`` flag is False (all rows if the store has no flag), int64, no per-row objects."""
        if "blank" not in self.index.columns:
            return np.arange(len(self), dtype=np.int64)
        return np.flatnonzero(~self.index["blank"].to_numpy(dtype=bool)).astype(np.int64)

    def locations(self) -> tuple[np.ndarray, np.ndarray]:
        """(shard, offset) arrays of every row, for custom vectorised readers."""
        return self._shard.copy(), self._offset.copy()


class ConcatStore:
    """Several stores of one item shape and kind as one sequence (pretraining reads 20 datasets).

    Global item ``j`` is item ``j - start[s]`` of store ``s``; ``index`` gains a ``store`` column.
    """

    def __init__(self, stores: Sequence[ShardedStore | str | Path]):
        self.stores = [s if isinstance(s, ShardedStore) else ShardedStore(s) for s in stores]
        if not self.stores:
            raise ValueError("no stores to concatenate")
        shapes = {s.item_shape for s in self.stores}
        kinds = {s.kind for s in self.stores}
        if len(shapes) > 1 or len(kinds) > 1:
            raise InputError(", ".join(str(s.dir) for s in self.stores),
                             f"stores differ in item shape {sorted(shapes)} or kind {sorted(kinds)}; preprocess "
                             "them with one protocol")
        self.item_shape = shapes.pop()
        self.kind = kinds.pop()
        self.lengths = np.array([len(s) for s in self.stores], dtype=np.int64)
        self.starts = np.r_[0, np.cumsum(self.lengths)].astype(np.int64)
        self._index: pd.DataFrame | None = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    def resolve(self, j: int | np.ndarray) -> tuple[Any, Any]:
        """(store id, local index) of global item(s) ``j``."""
        j = np.asarray(j, dtype=np.int64)
        if np.any((j < 0) | (j >= len(self))):
            raise IndexError(f"item(s) out of range for {len(self)} items")
        s = np.searchsorted(self.starts, j, side="right") - 1
        local = j - self.starts[s]
        return (int(s), int(local)) if j.ndim == 0 else (s, local)

    def __getitem__(self, j: int) -> np.ndarray:
        s, i = self.resolve(j)
        return self.stores[s][i]

    def read_many(self, indices: Sequence[int] | np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        sid, local = self.resolve(idx)
        out = np.empty((len(idx), *self.item_shape), dtype=dtype)
        for s in np.unique(sid):
            sel = np.flatnonzero(sid == s)
            out[sel] = self.stores[int(s)].read_many(local[sel], dtype=dtype)
        return out

    @property
    def index(self) -> pd.DataFrame:
        if self._index is None:
            frames = [s.index.assign(store=np.int32(k)) for k, s in enumerate(self.stores)]
            self._index = pd.concat(frames, ignore_index=True)
        return self._index

    def nonblank_indices(self) -> np.ndarray:
        """Global indices of non-blank items over all stores (vectorised)."""
        parts = [s.nonblank_indices() + self.starts[k] for k, s in enumerate(self.stores)]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def concat_stores(stores: Sequence[ShardedStore | str | Path]) -> ConcatStore:
    """Treat several stores (e.g. the 20 pretraining datasets' slice stores) as one sequence."""
    return ConcatStore(stores)
