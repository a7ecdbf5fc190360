"""Fig. 1a and Supp. Table 2 count what the manifests and slice stores hold."""

import numpy as np
import pandas as pd

from brainfm.atomic import write_parquet
from brainfm.preprocess.store import ShardWriter
from brainfm.report.corpus import corpus_counts, corpus_figure, dataset_table


def _manifest(path, dataset, n_subjects, modalities, sessions=1, test_every=4):
    rows = [dict(dataset=dataset, subject=f"{dataset}-{s:02d}", session=f"ses-{v}", modality=m, path=f"{s}_{v}_{m}.nii",
                 site="a", split="test" if s % test_every == 0 else "train")
            for s in range(n_subjects) for v in range(sessions) for m in modalities]
    write_parquet(path, pd.DataFrame(rows))
    return pd.DataFrame(rows)


def _slice_store(path, manifest, per_volume, blank_every=5):
    with ShardWriter(path, (4, 4), "slice", {"t": 1}, shard_size=50) as w:
        k = 0
        for _, r in manifest.iterrows():
            for i in range(per_volume):
                w.add({"dataset": r.dataset, "subject": r.subject, "session": r.session, "modality": r.modality,
                       "slice_index": i, "blank": k % blank_every == 0}, np.zeros((4, 4), np.float32))
                k += 1


def test_corpus_counts_match_the_manifests_and_stores(tmp_path):
    a = _manifest(tmp_path / "a.parquet", "a", 5, ["T1", "FLAIR"], sessions=2)
    b = _manifest(tmp_path / "b.parquet", "b", 3, ["T1"])
    _slice_store(tmp_path / "sa", a, per_volume=3)
    counts = corpus_counts({"a": tmp_path / "a.parquet", "b": tmp_path / "b.parquet"}, {"a": tmp_path / "sa"})
    row = counts.set_index(["dataset", "modality"])
    assert row.loc[("a", "T1"), "volumes"] == 10 and row.loc[("a", "T1"), "subjects"] == 5
    assert row.loc[("a", "FLAIR"), "slices"] == 30
    assert row.loc[("a", "T1"), "blank_slices"] + row.loc[("a", "FLAIR"), "blank_slices"] == 12  # every 5th of 60
    assert row.loc[("b", "T1"), "volumes"] == 3 and np.isnan(row.loc[("b", "T1"), "slices"])
    table, fig = tmp_path / "corpus.md", tmp_path / "corpus.png"
    corpus_figure({"a": tmp_path / "a.parquet", "b": tmp_path / "b.parquet"}, {"a": tmp_path / "sa"}, table, fig)
    csv = pd.read_csv(table.with_suffix(".csv"))
    total = csv[csv.dataset == "total"].iloc[0]
    assert total.volumes == 23 and total.subjects == 8 and int(total.slices) == 60
    assert fig.with_suffix(".pdf").is_file()


def test_dataset_table_takes_access_and_paper_n_from_the_registry(tmp_path):
    _manifest(tmp_path / "oasis1.parquet", "oasis1", 20, ["T1"])
    _manifest(tmp_path / "ph.parquet", "ph", 8, ["T1", "T2"])
    datasets = [{"name": "oasis1", "source": "local", "registry": "oasis1", "path": "data/oasis1"},
                {"name": "ph", "source": "phantom", "registry": "ph", "n_subjects": 8}]
    out = dataset_table(datasets, {"oasis1": tmp_path / "oasis1.parquet", "ph": tmp_path / "ph.parquet"},
                        {"oasis1": ["task oasis"], "ph": ["pretraining (braindino)"]}, tmp_path / "datasets.md")
    o = out.set_index("dataset").loc["oasis1"]
    assert o["access"] == "open" and o["paper n (train / test)"] == "195 / 40"
    assert o["split rule"].startswith("holdout") and o["subjects"] == 20
    assert o["test subjects"] == 5 and o["train subjects"] == 15 and o["role"] == "task oasis"
    p = out.set_index("dataset").loc["ph"]
    assert p["modalities"] == "T1, T2" and p["images"] == 16 and "phantom" in p["title"]
    assert "OASIS-1" in (tmp_path / "datasets.md").read_text()
