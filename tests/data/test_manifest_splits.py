"""Manifest validation and subject-disjoint split properties."""

import numpy as np
import pandas as pd
import pytest

from brainfm.data.manifest import join_labels, read_manifest, validate_manifest, write_manifest
from brainfm.data.splits import cv_folds, holdout_split, nested_ratio_subsets, subject_table
from brainfm.errors import ConfigError, LeakageError, ManifestError


def _manifest(tmp_path, n=6):
    rows = []
    for i in range(n):
        for mod in ("T1", "T2"):
            p = tmp_path / f"sub-{i}_{mod}.nii.gz"
            p.write_bytes(b"x")
            rows.append(dict(dataset="d", subject=f"s{i}", session="0", modality=mod, path=p.name, site="a",
                             split="train" if i < 4 else "test", age=20.0 + i))
    return pd.DataFrame(rows)


def test_roundtrip_and_root(tmp_path):
    df = _manifest(tmp_path)
    write_manifest(tmp_path / "manifest.parquet", df)
    back = read_manifest(tmp_path / "manifest.parquet")
    assert len(back) == 12 and back.attrs["root"] == str(tmp_path.resolve())


@pytest.mark.parametrize("breaker, message", [
    (lambda d: d.drop(columns="site"), "missing required column"),
    (lambda d: pd.concat([d, d.iloc[:1]]), "duplicate rows"),
    (lambda d: d.assign(path=d["path"].where(d.index != 3, "nope.nii.gz")), "not found"),
    (lambda d: d.assign(split=d["split"].where(d.index != 0, "valid")), "split must be"),
    (lambda d: d.assign(age=d["age"].astype(object).where(d.index != 0, "old")), "must be numeric"),
])
def test_bad_manifests_are_named(tmp_path, breaker, message):
    with pytest.raises(ManifestError, match=message):
        validate_manifest(breaker(_manifest(tmp_path)), tmp_path)


def test_subject_on_both_sides_is_leakage(tmp_path):
    df = _manifest(tmp_path)
    df.loc[(df.subject == "s0") & (df.modality == "T2"), "split"] = "test"
    with pytest.raises(LeakageError, match="s0"):
        validate_manifest(df, tmp_path)


def test_join_labels_rejects_unknown_and_duplicate_ids(tmp_path):
    images = _manifest(tmp_path).drop(columns="age")
    labels = pd.DataFrame({"subject": ["s0", "s1", "zz9"], "age": [1, 2, 3]})
    with pytest.raises(ManifestError, match="zz9"):
        join_labels(images, labels)
    dup = pd.DataFrame({"subject": ["s0", "s0"], "age": [1, 2]})
    with pytest.raises(ManifestError, match="duplicate"):
        join_labels(images, dup)
    ok = join_labels(images, pd.DataFrame({"subject": ["s0"], "age": [7]}))
    assert ok.loc[ok.subject == "s0", "age"].eq(7).all() and ok.loc[ok.subject == "s1", "age"].isna().all()


def _subjects(n=60, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        lab = ["CN", "MCI", "AD"][rng.integers(0, 3)]
        for ses in ("sc", "m06", "m12")[: rng.integers(1, 4)]:
            rows.append(dict(subject=f"s{i:03d}", session=ses, split="", diagnosis=lab))
    return subject_table(pd.DataFrame(rows), "diagnosis")


def test_cv_folds_are_subject_disjoint_and_cover_everyone():
    subj = _subjects()
    folds = cv_folds(subj, n_splits=5, seed=0, val_fraction=0.15)
    tests = [set(f.test) for f in folds]
    assert set().union(*tests) == set(subj.subject)
    assert sum(len(t) for t in tests) == len(subj)
    for f in folds:
        assert not set(f.train) & set(f.test) and not set(f.val) & set(f.test) and not set(f.train) & set(f.val)


def test_ratio_subsets_are_nested_stratified_and_deterministic():
    subj = _subjects(200)
    labels = subj.set_index("subject")["strat"]
    ratios = [0.1, 0.2, 0.4, 0.6, 0.8, 1.0]
    a = nested_ratio_subsets(subj.subject, labels, ratios, seed=3)
    assert a == nested_ratio_subsets(subj.subject, labels, ratios, seed=3)
    assert a != nested_ratio_subsets(subj.subject, labels, ratios, seed=4)
    for lo, hi in zip(ratios, ratios[1:]):
        assert set(a[lo]) <= set(a[hi])
    assert sorted(a[1.0]) == sorted(subj.subject)
    full = labels.value_counts(normalize=True)
    part = labels[a[0.4]].value_counts(normalize=True)
    assert (abs(full - part) < 0.05).all()


def test_rare_class_kept_at_low_ratio_and_absent_class_is_an_error():
    labels = pd.Series(["a"] * 50 + ["b"] * 2, index=[f"s{i}" for i in range(52)])
    sub = nested_ratio_subsets(labels.index, labels, [0.1], seed=0)
    assert "b" in set(labels[sub[0.1]])
    with pytest.raises(ConfigError, match="class 'b'"):
        nested_ratio_subsets(labels.index, labels, [0.1], seed=0, min_per_class=3)


def test_holdout_respects_fixed_split_and_stratifies_free_subjects():
    subj = _subjects(100)
    subj.loc[:9, "split"] = "test"
    train, test = holdout_split(subj, 0.2, seed=1)
    assert set(subj.subject[:10]) <= set(test)
    assert not set(train) & set(test) and len(train) + len(test) == 100


def test_union_keeps_files_reachable_and_subjects_distinct(tmp_path):
    from brainfm.data.manifest import union_manifests

    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    a_dir.mkdir(), b_dir.mkdir()
    a = _manifest(a_dir).assign(dataset="ixi")
    b = _manifest(b_dir).assign(dataset="pixar")
    write_manifest(a_dir / "manifest.parquet", a)
    write_manifest(b_dir / "manifest.parquet", b)
    parts = [read_manifest(a_dir / "manifest.parquet"), read_manifest(b_dir / "manifest.parquet")]
    out = tmp_path / "pooled"
    pooled = union_manifests(parts, out, "brain_age_pool")
    write_manifest(out / "manifest.parquet", pooled)  # validates that every path resolves
    back = read_manifest(out / "manifest.parquet")
    assert back["subject"].nunique() == 12 and set(back["dataset"]) == {"brain_age_pool"}
    assert set(back["source_dataset"]) == {"ixi", "pixar"}


def test_subset_holds_exactly_the_subjects_a_task_never_tests(tmp_path):
    """A pretraining subset of a downstream cohort: the task's test subjects (free split, stratified) stay out."""
    from brainfm.data.manifest import subset_manifest
    from brainfm.data.splits import holdout_split
    from brainfm.tasks.runs import training_subjects
    from brainfm.config import TaskSpec

    src = tmp_path / "abide"
    src.mkdir()
    df = _manifest(src, n=20).assign(split="", asd=lambda d: (d["subject"].str[1:].astype(int) % 2))
    write_manifest(src / "manifest.parquet", df)
    parent = read_manifest(src / "manifest.parquet")
    spec = TaskSpec.from_config("abide", {"dataset": "abide", "kind": "classification", "target": "asd",
                                          "classes": [0, 1], "split": {"test_fraction": 0.25, "seed": 3}})
    train = training_subjects(spec, parent)
    subjects = parent.groupby("subject").agg(split=("split", "first"), strat=("asd", "first")).reset_index()
    _, test = holdout_split(subjects, 0.25, 3)
    assert len(test) == 5 and set(train) == set(parent["subject"]) - set(test)
    out = tmp_path / "abide_pretrain"
    sub = subset_manifest(parent, train, out, "abide_pretrain")
    write_manifest(out / "manifest.parquet", sub)  # every rebased path still resolves
    back = read_manifest(out / "manifest.parquet")
    assert set(back["subject"]) == set(train) and set(back["dataset"]) == {"abide_pretrain"}


def test_subset_of_a_union_filters_by_source_and_rejects_empty(tmp_path):
    from brainfm.data.manifest import subset_manifest

    src = tmp_path / "pool"
    src.mkdir()
    df = _manifest(src).assign(source_dataset=["long579"] * 6 + ["ixi"] * 6)
    write_manifest(src / "manifest.parquet", df)
    parent = read_manifest(src / "manifest.parquet")
    sub = subset_manifest(parent, parent["subject"], tmp_path / "x", "long_pre", source_dataset="long579")
    assert set(sub["source_dataset"]) == {"long579"} and len(sub) == 6
    with pytest.raises(ManifestError, match="subset is empty"):
        subset_manifest(parent, ["nobody"], tmp_path / "y", "empty")
    with pytest.raises(ManifestError, match="needs a pooled"):
        subset_manifest(parent.drop(columns="source_dataset"), ["s1"], tmp_path / "z", "z", source_dataset="ixi")
