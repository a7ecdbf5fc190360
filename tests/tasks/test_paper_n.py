"""The paper config trains the heads on the paper's n (Supp. Table 2 / text), planned from manifests alone."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainfm.config import load_config
from brainfm.config.model import registry_split
from brainfm.tasks.runs import manifest_task_data, training_n

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def paper():
    return load_config(ROOT / "config" / "paper.yaml")


def _manifest(dataset: str, n: int, labels: dict, modalities=("T1",)) -> pd.DataFrame:
    """A phantom manifest: one session per subject, the given label columns, no images."""
    subjects = [f"s{i:05d}" for i in range(n)]
    rows = []
    for i, s in enumerate(subjects):
        for m in modalities:
            rows.append({"dataset": dataset, "subject": s, "session": "1", "modality": m,
                         "path": f"/nowhere/{s}_{m}.nii.gz", "site": "A", "split": "",
                         **{k: v[i] for k, v in labels.items()}})
    return pd.DataFrame(rows)


def _classes(counts: dict) -> np.ndarray:
    values = np.concatenate([np.full(k, v) for v, k in counts.items()])
    return np.random.default_rng(0).permutation(values)


COHORTS = {
    # task: (cohort size, label columns) sized as the paper's train + test
    "abide": (1196, lambda n: {"asd": _classes({0: 615, 1: 581})}),
    "oasis": (235, lambda n: {"demented": _classes({0: 135, 1: 100})}),
    "ppmi": (1441, lambda n: {"pd": _classes({1: 1158, 0: 283})}),
    "brain_age": (1800, lambda n: {"age": np.linspace(4, 90, n)}),
    "atlas_dps": (263, lambda n: {"dps": np.linspace(1, 4000, n)}),
    "idh": (452, lambda n: {"idh": _classes({0: 361, 1: 91})}),
}


@pytest.mark.parametrize("task", sorted(COHORTS))
def test_paper_config_trains_on_the_papers_n(paper, task):
    spec = paper.tasks[task]
    size, labels = COHORTS[task]
    man = _manifest(spec.dataset, size, labels(size), spec.modalities)
    n = training_n(manifest_task_data(spec, man), ratios=(0.1, 1.0), seeds=(0,))
    full = n[n["ratio"] == 1.0].iloc[0]
    assert full["n_train_subjects"] == full["paper_n_train"] == spec.paper_n["train"]
    if "test" in spec.paper_n:
        assert full["n_test_subjects"] == full["paper_n_test"] == spec.paper_n["test"]
    assert full["n_val_subjects"] > 0 and full["validation"] == "separate"
    if task in ("brain_age", "atlas_dps"):  # the 10% n the paper states: 144 and 21
        low = n[n["ratio"] == 0.1].iloc[0]
        assert low["n_train_subjects"] == low["paper_n_train"] == {"brain_age": 144, "atlas_dps": 21}[task]


def test_carve_out_shrinks_the_counted_training_set(paper):
    """The schema default keeps validation out of training: n is smaller than the split's training side."""
    from dataclasses import replace

    spec = paper.tasks["oasis"]
    spec = replace(spec, split=replace(spec.split, validation="carve_out"))
    man = _manifest(spec.dataset, 235, COHORTS["oasis"][1](235))
    n = training_n(manifest_task_data(spec, man), ratios=(1.0,), seeds=(0,)).iloc[0]
    assert n["n_train_subjects"] + n["n_val_subjects"] == 195


def test_split_rule_comes_from_the_registry_unless_the_task_sets_it(paper):
    assert paper.tasks["oasis"].split.test_fraction == pytest.approx(0.17)  # oasis1.yaml
    assert paper.tasks["knn_adni"].split.type == "holdout"  # the task's own rule wins over adni's CV
    assert paper.tasks["adni_3class"].split.n_splits == 5
    raw = paper.values["datasets"]
    assert registry_split("brain_age_cohort", raw) == {"type": "holdout", "test_fraction": 0.2, "seed": 0}
    cfg = load_config({"datasets": {"oasis1": {"source": "download"}},
                       "backbones": {"braindino": {"encoder": "vit_random"}},
                       "tasks": {"oasis": {"dataset": "oasis1", "kind": "classification", "target": "demented",
                                           "classes": [0, 1], "split": {"test_fraction": 0.3}}}})
    assert cfg.tasks["oasis"].split.test_fraction == pytest.approx(0.3)
    assert cfg.tasks["oasis"].split.validation == "carve_out"  # the schema's default


def test_pretraining_subsets_take_the_papers_counts_from_training_subjects_only(paper, tmp_path):
    """853 of the 956 ABIDE training subjects; 200 BraTS2023-MEN volumes; a seeded, reproducible draw."""
    from brainfm.data.manifest import write_manifest
    from brainfm.tasks.runs import subset_dataset, training_subjects

    size = 1196
    man = _manifest("abide", size, COHORTS["abide"][1](size))
    for p in man["path"]:
        (tmp_path / "abide" / Path(p).name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "abide" / Path(p).name).touch()
    man["path"] = [Path(p).name for p in man["path"]]
    write_manifest(tmp_path / "abide" / "manifest.parquet", man)
    spec, task = paper.datasets["abide_pretrain"], paper.tasks["abide"]
    out = subset_dataset(spec, task, tmp_path / "abide" / "manifest.parquet", tmp_path / "pre" / "manifest.parquet")
    again = subset_dataset(spec, task, tmp_path / "abide" / "manifest.parquet", tmp_path / "pre2" / "manifest.parquet")
    train = set(training_subjects(task, man))
    assert out["subject"].nunique() == 853 and set(out["subject"]) <= train and len(train) == 956
    assert out["subject"].tolist() == again["subject"].tolist()

    from brainfm.tasks.runs import take_subset

    volumes = _manifest("brats2023_men", 100, {}, ("T1", "T1c", "T2", "FLAIR"))
    take = paper.datasets["brats2023_men_pretrain"].take
    drawn = take_subset(volumes, take, "brats2023_men_pretrain")
    assert len(drawn) == 200 and drawn.equals(take_subset(volumes, take, "brats2023_men_pretrain"))
    assert {paper.datasets[f"brats2023_{c}_pretrain"].take["n"] for c in ("ped", "ssa")} == {100, 120}
    with pytest.raises(Exception, match="only 400 training volumes"):
        take_subset(volumes, {**take, "n": 401}, "brats2023_men_pretrain")


def test_cox_cohort_has_the_papers_n_inside_the_binary_split(paper):
    """UPENN-GBM: binary 482 / 121; the Cox cohort, filtered from that split, 414 / 106 (§4.3.4)."""
    from brainfm.tasks.runs import plan_folds

    n = 603
    rng = np.random.default_rng(1)
    days = np.where(np.arange(n) < 265, rng.uniform(30, 365, n), rng.uniform(366, 2000, n))
    man = _manifest("upenn_gbm", n, {"survival_days": days, "event": np.ones(n)}, ("T1", "T1c", "T2", "FLAIR"))
    binary = manifest_task_data(paper.tasks["survival_1y"], man)
    fold = plan_folds(binary)[0]
    assert (len(fold.train), len(fold.test)) == (482, 121)
    # 68 training and 15 test patients without follow-up (no event status): out of the Cox cohort only
    lost = set(sorted(fold.train)[:68]) | set(sorted(fold.test)[:15])
    man.loc[man["subject"].isin(lost), "event"] = np.nan
    cox = manifest_task_data(paper.tasks["survival_cox"], man)
    n_cox = training_n(cox, ratios=(1.0,), seeds=(0,)).iloc[0]
    assert (n_cox["n_train_subjects"], n_cox["n_test_subjects"]) == (414, 106) == (
        n_cox["paper_n_train"], n_cox["paper_n_test"])
    assert len(manifest_task_data(paper.tasks["survival_1y"], man).table) == n  # the binary cohort keeps them
