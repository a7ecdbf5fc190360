"""Sharded stores: round trip, lookups, resume after a crash, consistency checks, worker safety."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import brainfm.preprocess.store as store_mod
from brainfm.errors import InputError
from brainfm.preprocess.store import ShardedStore, ShardWriter, concat_stores, shard_name

SHAPE = (3, 4, 5)


def _items(n, shape=SHAPE, seed=0):
    rng = np.random.default_rng(seed)
    keys = [{"dataset": "d", "subject": f"s{i:02d}", "session": "0", "modality": "T1"} for i in range(n)]
    return keys, [rng.normal(0, 3, shape).astype(np.float32) for _ in range(n)]


def _write(path, keys, arrays, shard_size=4, protocol=None, kind="volume"):
    with ShardWriter(path, arrays[0].shape, kind, protocol or {"p": 1}, shard_size=shard_size) as w:
        for k, a in zip(keys, arrays):
            w.add(k, a)
    return path


def _assert_same_store(a, b):
    sa, sb = ShardedStore(a), ShardedStore(b)
    pd.testing.assert_frame_equal(sa.index, sb.index)
    assert sa.meta == sb.meta
    for i in range(len(sa)):
        np.testing.assert_array_equal(sa[i], sb[i])
    for s in range(sa.meta["n_shards"]):
        assert (a / shard_name(s)).read_bytes() == (b / shard_name(s)).read_bytes()


def test_round_trip_and_lookups(tmp_path):
    keys, arrays = _items(11)
    _write(tmp_path / "st", keys, arrays)
    st = ShardedStore(tmp_path / "st")
    assert len(st) == 11 and st.item_shape == SHAPE and st.kind == "volume" and st.protocol == {"p": 1}
    assert st.meta["dtype"] == "float16" and st.meta["complete"] and st.meta["n_shards"] == 3
    assert [np.load(tmp_path / "st" / shard_name(s)).shape[0] for s in range(3)] == [4, 4, 3]
    assert np.load(tmp_path / "st" / shard_name(0)).dtype == np.float16
    assert list(st.index.columns) == ["dataset", "subject", "session", "modality", "shard", "offset"]
    for i in (0, 5, 10, -1):
        np.testing.assert_array_equal(st[i], arrays[i].astype(np.float16).astype(np.float32))
        assert st[i].dtype == np.float32
    np.testing.assert_array_equal(st.get(subject="s07", modality="T1"), st[7])
    assert st.locate(subject="s03") == 3
    with pytest.raises(KeyError, match="no item"):
        st.get(subject="zzz")
    with pytest.raises(KeyError, match="11 items match"):
        st.get(modality="T1")
    with pytest.raises(KeyError, match="unknown key"):
        st.get(site="x")
    with pytest.raises(IndexError):
        st[11]
    many = st.read_many([10, 0, 5, 4])
    np.testing.assert_array_equal(many, np.stack([st[10], st[0], st[5], st[4]]))
    seen = list(st.iter_items())
    assert [k["subject"] for k, _ in seen] == [k["subject"] for k in keys]
    np.testing.assert_array_equal(seen[6][1], st[6])
    assert sum(1 for _ in st) == 11
    assert np.array_equal(st.nonblank_indices(), np.arange(11))  # no blank column: every item


def test_float16_range_and_bad_items(tmp_path):
    with ShardWriter(tmp_path / "st", (2, 2), "slice", {}, shard_size=2) as w:
        w.add({"k": 0}, np.array([[1e6, -1e6], [0.1, 2.0]]))
        with pytest.raises(ValueError, match="NaN"):
            w.add({"k": 1}, np.array([[np.nan, 0], [0, 0]]))
        with pytest.raises(ValueError, match="shape"):
            w.add({"k": 2}, np.zeros((3, 2)))
        with pytest.raises(ValueError, match="differ"):
            w.add({"other": 3}, np.zeros((2, 2)))
        with pytest.raises(ValueError, match="reserved"):
            w.add({"k": 4, "shard": 1}, np.zeros((2, 2)))
    st = ShardedStore(tmp_path / "st")
    assert len(st) == 1 and st[0][0, 0] == 65504 and st[0][0, 1] == -65504
    assert st[0][1, 0] == pytest.approx(0.1, rel=1e-3)


def test_slice_store_blank_indices_are_vectorised(tmp_path):
    rng = np.random.default_rng(0)
    blank = rng.random(50) < 0.3
    with ShardWriter(tmp_path / "sl", (4, 4), "slice", {}, shard_size=8) as w:
        for i in range(50):
            w.add({"subject": f"s{i // 10}", "slice_index": i % 10, "blank": bool(blank[i])},
                  np.zeros((4, 4)) if blank[i] else rng.normal(size=(4, 4)))
    st = ShardedStore(tmp_path / "sl")
    np.testing.assert_array_equal(st.nonblank_indices(), np.flatnonzero(~blank))
    shard, offset = st.locations()
    np.testing.assert_array_equal(shard, np.arange(50) // 8)
    np.testing.assert_array_equal(offset, np.arange(50) % 8)


def test_concat_treats_stores_as_one_sequence(tmp_path):
    stores = []
    for s, n in enumerate((5, 0, 7)):
        with ShardWriter(tmp_path / f"sl{s}", (2, 3), "slice", {}, shard_size=3) as w:
            for i in range(n):
                w.add({"subject": f"{s}-{i}", "slice_index": i, "blank": i % 2 == 0}, np.full((2, 3), 10 * s + i))
        stores.append(tmp_path / f"sl{s}")
    cat = concat_stores(stores)
    assert len(cat) == 12 and cat.item_shape == (2, 3)
    assert cat[6][0, 0] == 21 and cat[4][0, 0] == 4 and cat[11][0, 0] == 26
    assert cat.resolve(5) == (2, 0)
    np.testing.assert_array_equal(cat.read_many([11, 0, 6]), np.stack([cat[11], cat[0], cat[6]]))
    nb = cat.nonblank_indices()
    np.testing.assert_array_equal(nb, [1, 3, 6, 8, 10])
    assert all(not cat.index["blank"].iloc[j] for j in nb)
    assert list(cat.index["store"]) == [0] * 5 + [2] * 7
    _write(tmp_path / "vol", *_items(2), kind="volume")
    with pytest.raises(InputError, match="differ"):
        concat_stores(stores + [tmp_path / "vol"])


def test_resume_after_an_exception_equals_an_uninterrupted_run(tmp_path):
    keys, arrays = _items(11)
    _write(tmp_path / "ref", keys, arrays, shard_size=3)
    with pytest.raises(RuntimeError, match="killed"):
        with ShardWriter(tmp_path / "st", SHAPE, "volume", {"p": 1}, shard_size=3) as w:
            for k, a in zip(keys[:8], arrays[:8]):
                w.add(k, a)
            raise RuntimeError("killed")
    meta = json.loads((tmp_path / "st" / "meta.json").read_text())
    assert meta["complete"] is False
    with pytest.raises(InputError, match="incomplete"):
        ShardedStore(tmp_path / "st")
    w = ShardWriter(tmp_path / "st", SHAPE, "volume", {"p": 1}, shard_size=3)
    assert list(w.present["subject"]) == [k["subject"] for k in keys[:6]]  # 2 complete shards survive
    assert w.resumed_items == 6
    with w:
        for k, a in zip(keys[6:], arrays[6:]):
            w.add(k, a)
    _assert_same_store(tmp_path / "st", tmp_path / "ref")


def test_crash_between_shard_and_index_write(tmp_path, monkeypatch):
    """A shard file written just before a kill, but not yet in the index, is discarded on resume."""
    keys, arrays = _items(10)
    _write(tmp_path / "ref", keys, arrays, shard_size=3)
    real = store_mod.write_parquet

    def flaky(path, df):
        if len(df) == 6:  # the index update for shard 1: dies after shard-00001.npy was written
            raise KeyboardInterrupt
        real(path, df)

    monkeypatch.setattr(store_mod, "write_parquet", flaky)
    with pytest.raises(KeyboardInterrupt):
        with ShardWriter(tmp_path / "st", SHAPE, "volume", {"p": 1}, shard_size=3) as w:
            for k, a in zip(keys, arrays):
                w.add(k, a)
    monkeypatch.setattr(store_mod, "write_parquet", real)
    assert (tmp_path / "st" / shard_name(1)).exists()
    w = ShardWriter(tmp_path / "st", SHAPE, "volume", {"p": 1}, shard_size=3)
    assert len(w.present) == 3 and not (tmp_path / "st" / shard_name(1)).exists()
    with w:
        for k, a in zip(keys[3:], arrays[3:]):
            w.add(k, a)
    _assert_same_store(tmp_path / "st", tmp_path / "ref")


def test_reopening_a_complete_store_extends_its_partial_last_shard(tmp_path):
    keys, arrays = _items(11)
    _write(tmp_path / "ref", keys, arrays, shard_size=4)
    _write(tmp_path / "st", keys[:6], arrays[:6], shard_size=4)
    w = ShardWriter(tmp_path / "st", SHAPE, "volume", {"p": 1}, shard_size=4)
    assert len(w.present) == 6
    with w:
        for k, a in zip(keys[6:], arrays[6:]):
            w.add(k, a)
    _assert_same_store(tmp_path / "st", tmp_path / "ref")


def test_a_different_protocol_starts_afresh(tmp_path):
    keys, arrays = _items(5)
    _write(tmp_path / "st", keys, arrays, protocol={"cube": 256})
    w = ShardWriter(tmp_path / "st", SHAPE, "volume", {"cube": 128}, shard_size=4)
    assert w.present.empty and not (tmp_path / "st" / shard_name(0)).exists()
    with w:
        w.add(keys[0], arrays[0])
    st = ShardedStore(tmp_path / "st")
    assert len(st) == 1 and st.protocol == {"cube": 128}


def test_shards_and_index_that_disagree_are_rejected(tmp_path):
    keys, arrays = _items(9)

    def fresh(name):
        return _write(tmp_path / name, keys, arrays, shard_size=4)

    d = fresh("missing")
    (d / shard_name(1)).unlink()
    with pytest.raises(InputError, match="disagree"):
        ShardedStore(d)
    d = fresh("short")
    np.save(d / shard_name(1), np.zeros((3, *SHAPE), np.float16))
    with pytest.raises(InputError, match="disagree"):
        ShardedStore(d)
    d = fresh("dtype")
    np.save(d / shard_name(2), np.zeros((1, *SHAPE), np.float32))
    with pytest.raises(InputError, match="disagree"):
        ShardedStore(d)
    d = fresh("extra")
    np.save(d / shard_name(3), np.zeros((1, *SHAPE), np.float16))
    with pytest.raises(InputError, match="disagree"):
        ShardedStore(d)
    d = fresh("offsets")
    idx = pd.read_parquet(d / "index.parquet")
    idx.loc[1, "offset"] = 0
    idx.to_parquet(d / "index.parquet", index=False)
    with pytest.raises(InputError, match="disagree"):
        ShardedStore(d)
    d = fresh("count")
    meta = json.loads((d / "meta.json").read_text())
    meta["n_items"] = 10
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="meta.json says"):
        ShardedStore(d)
    with pytest.raises(InputError, match="meta.json missing"):
        ShardedStore(tmp_path / "nowhere")


def test_empty_store_opens(tmp_path):
    with ShardWriter(tmp_path / "e", (2, 2), "volume", {}) as _:
        pass
    st = ShardedStore(tmp_path / "e")
    assert len(st) == 0 and st.nonblank_indices().size == 0


class _Reader(Dataset):
    def __init__(self, st):
        self.st = st

    def __len__(self):
        return len(self.st)

    def __getitem__(self, i):
        return torch.from_numpy(self.st[i])


def test_memmaps_are_lazy_per_process_and_dropped_on_pickle(tmp_path):
    keys, arrays = _items(9)
    st = ShardedStore(_write(tmp_path / "st", keys, arrays, shard_size=2))
    _ = st[0], st[8]
    assert len(st._mm) == 2
    clone = pickle.loads(pickle.dumps(st))
    assert len(clone._mm) == 0 and clone._pid is None
    np.testing.assert_array_equal(clone[8], st[8])
    serial = [st[i] for i in range(len(st))]
    loader = DataLoader(_Reader(st), batch_size=3, num_workers=2, multiprocessing_context="fork")
    got = torch.cat(list(loader)).numpy()
    np.testing.assert_array_equal(got, np.stack(serial))
