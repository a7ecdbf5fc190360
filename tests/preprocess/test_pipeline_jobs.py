"""n_jobs > 1 (spawned worker processes) writes byte-identical stores and the same quarantine."""

from __future__ import annotations

import pandas as pd

from brainfm.preprocess.pipeline import preprocess_dataset


def test_worker_processes_give_identical_stores(tmp_path, proto, make_dataset, assert_stores_equal):
    man = make_dataset(tmp_path / "data", n=4)
    bad = man.iloc[[0]].assign(subject="ghost", path="ghost.nii.gz", mask_path="")
    man = pd.concat([man.iloc[:2], bad, man.iloc[2:]], ignore_index=True)
    one = preprocess_dataset(man, tmp_path / "data", tmp_path / "one", protocol=proto, n_jobs=1)
    two = preprocess_dataset(man, tmp_path / "data", tmp_path / "two", protocol=proto, n_jobs=2)
    assert_stores_equal(tmp_path / "one", tmp_path / "two")
    assert (tmp_path / "one" / "quarantine.csv").read_text() == (tmp_path / "two" / "quarantine.csv").read_text()
    assert one["n_quarantined"] == two["n_quarantined"] == 1 and two["n_processed"] == 4
