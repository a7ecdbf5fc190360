"""Run planning and run folders: which heads a (task, backbone) trains, and where their outputs live.

A *run* is one (task, backbone, ratio, seed); its heads are trained on every fold of the task. The
frozen heads (:mod:`brainfm.tasks.runner`), full fine-tuning (:mod:`brainfm.tasks.finetune`),
test-time perturbations, the kNN probe and the statistics steps all plan and read runs here, so
that a fold, a label-ratio subset, a head's seed and a run's folder are defined once:

- folds: :func:`plan_folds` (hold-out or K-fold CV, subject-disjoint), :func:`checked_folds`
  (refusing test subjects seen in pretraining), :func:`training_subjects` (what a pretraining
  corpus may share, planned from the manifest alone);
- per (seed, fold): :func:`ratio_subsets` (nested label-ratio subsets of the training subjects,
  drawn once so that every ratio of a seed shares its subjects) and :func:`head_seed`;
- folders: ``<root>/ratio~R/seed~S/`` (:func:`run_dir`) holding ``predictions.parquet``,
  ``metrics.json`` and, for survival heads, ``train_risk.parquet`` (:func:`write_run`), read back
  by :func:`collect_predictions` and :func:`collect_optional`.

Nothing here needs torch: planning and reading runs works on any machine.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from brainfm.atomic import write_json, write_parquet
from brainfm.data.splits import (
    Fold,
    check_against_pretraining,
    cv_folds,
    holdout_split,
    nested_ratio_subsets,
    validation_split,
)
from brainfm.errors import InputError
from brainfm.frames import read_frames
from brainfm.stats.predictions import read_predictions

if TYPE_CHECKING:
    from brainfm.tasks.data import TaskData
    from brainfm.config import TaskSpec

__all__ = [
    "RunKey", "run_dir", "run_files", "write_run", "collect_predictions", "collect_optional",
    "plan_folds", "checked_folds", "training_subjects", "subject_rows", "ratio_subsets", "head_seed",
    "summarize_run", "pretraining_subjects", "write_runs", "subset_dataset", "manifest_task_data",
    "training_n", "paper_n", "collect_training_n", "EPOCH_COLUMNS", "untrained_cells",
    "FIRST_EPOCH_MARK_SHARE", "take_subset", "scan_leakage",
]


class RunKey(NamedTuple):
    ratio: float
    seed: int


# ----------------------------------------------------------------------------- run folders
def run_dir(root: str | Path, ratio: float, seed: int) -> Path:
    """Where one (ratio, seed) of a (task, backbone) lives: ``<root>/ratio~R/seed~S``."""
    return Path(root) / f"ratio~{ratio:g}" / f"seed~{seed}"


def run_files(run_dirs: Iterable[str | Path], name: str) -> list[Path]:
    """Every run's ``name`` file under the given (task, backbone) roots, in a stable order."""
    return sorted(p for d in run_dirs for p in Path(d).glob(f"ratio~*/seed~*/{name}"))


def write_run(root: str | Path, key: RunKey, entry: dict[str, Any]) -> Path:
    """Write predictions.parquet and metrics.json for one (task, backbone, ratio, seed)."""
    info = entry["info"]
    out = run_dir(root, key.ratio, key.seed)
    write_parquet(out / "predictions.parquet", entry["predictions"])
    if entry.get("train_risk") is not None:
        write_parquet(out / "train_risk.parquet", entry["train_risk"])
    write_json(out / "metrics.json", {**info, "metrics": entry["metrics"], "folds": entry["folds"]})
    return out


def collect_predictions(run_dirs: Sequence[str | Path], name: str = "predictions.parquet") -> pd.DataFrame:
    """Concatenate every run's predictions, each checked against the predictions contract."""
    paths = run_files(run_dirs, name)
    if not paths:
        raise InputError(", ".join(map(str, run_dirs)), f"no {name} files found")
    return read_predictions(paths)


def collect_optional(run_dirs: Sequence[str | Path], name: str) -> pd.DataFrame | None:
    """Concatenate a file some runs write (e.g. ``train_risk.parquet``); None when no run has it."""
    paths = run_files(run_dirs, name)
    return read_frames(paths, name) if paths else None


# ----------------------------------------------------------------------------- planning
def plan_folds(data: TaskData) -> list[Fold]:
    """The task's subject-disjoint partitions: one hold-out fold or K CV folds."""
    spec = data.spec
    if spec.split_reference is not None:
        return _folds_of_reference(data)
    subjects = data.table.groupby("subject", sort=True).agg(split=("split", "first")).reset_index()
    labels = data.subject_labels
    if labels is not None:
        subjects["strat"] = subjects["subject"].map(labels)
    mode = spec.split.validation
    if spec.split.type == "cv":
        return cv_folds(subjects, spec.split.n_splits, spec.split.seed, spec.split.val_fraction, mode)
    train, test = holdout_split(subjects, spec.split.test_fraction, spec.split.seed, spec.split.n_test)
    train, val = validation_split(train, labels, spec.split.val_fraction, spec.split.seed + 1, mode)
    fold = Fold(0, tuple(train), tuple(val), tuple(test), mode == "separate")
    fold.check()
    return [fold]


def _folds_of_reference(data: TaskData) -> list[Fold]:
    """The ``split_from`` task's folds restricted to this task's subjects (e.g. the Cox cohort in the binary split)."""
    from brainfm.config import TaskSpec

    if data.manifest is None:
        raise InputError(data.spec.name, "split_from needs the manifest the task data was assembled from")
    ref = TaskSpec.from_dict(data.spec.split_reference, source=f"tasks.{data.spec.name}.split_from")
    mine = set(data.table["subject"].astype(str))
    keep = lambda ids: tuple(s for s in ids if s in mine)  # noqa: E731
    folds = [Fold(f.fold, keep(f.train), keep(f.val), keep(f.test), f.val_in_train)
             for f in plan_folds(manifest_task_data(ref, data.manifest))]
    outside = mine - {s for f in folds for s in (*f.train, *f.val, *f.test)}
    if outside:
        raise InputError(data.spec.name, f"{len(outside)} subject(s) are not in the cohort of task {ref.name} "
                                         f"(split_from), e.g. {sorted(outside)[:3]}")
    return folds


def training_subjects(spec: TaskSpec, manifest: pd.DataFrame) -> list[str]:
    """Subjects the task never tests (in any fold): the only ones a pretraining corpus may share.

    The task's folds depend only on labels and split settings, so they are planned here from the
    manifest alone (no features); the fit step later re-plans the same folds and checks leakage.
    """
    data = manifest_task_data(spec, manifest)
    tested = {s for fold in plan_folds(data) for s in fold.test}
    return sorted(set(manifest["subject"].astype(str)) - tested)


def manifest_task_data(spec: TaskSpec, manifest: pd.DataFrame) -> TaskData:
    """The task's samples planned from the manifest alone (zero features): its selection and labels."""
    from brainfm.tasks.data import note_missing_modality, assemble, complete_sessions

    n_missing = 0
    if spec.unit == "image":
        keys = manifest.loc[manifest["modality"].astype(str).isin(spec.modalities),
                            ["subject", "session", "modality"]].drop_duplicates()
    else:
        keys, n_missing = complete_sessions(manifest, spec.modalities)
    keys = keys.reset_index(drop=True)
    data = assemble(spec, keys, np.zeros((len(keys), 1), dtype=np.float32), manifest, source="manifest")
    return note_missing_modality(data, n_missing)


def paper_n(spec: TaskSpec, ratio: float) -> dict[str, int | None]:
    """The paper's training n at ``ratio`` (``round(ratio * n)`` of its 100% count) and its test n."""
    p = spec.paper_n or {}
    train = p.get("train")
    return {"paper_n_train": int(round(ratio * train)) if train else None, "paper_n_test": p.get("test")}


def training_n(data: TaskData, ratios: Iterable[float] | None = None,
               seeds: Iterable[int] | None = None) -> pd.DataFrame:
    """Subjects (and samples) each (ratio, seed, fold) head trains, validates and tests on, beside the paper's n.

    Planned exactly as :func:`brainfm.tasks.runner.run_grid` plans its heads (same folds, same
    nested ratio subsets), so it can be computed from the manifest alone (:func:`manifest_task_data`).
    """
    spec = data.spec
    ratios = tuple(spec.ratios if ratios is None else ratios)
    seeds = tuple(spec.seeds if seeds is None else seeds)
    rows_of = subject_rows(data)
    labels = data.subject_labels
    records = []
    for fold in plan_folds(data):
        for seed in seeds:
            subsets = ratio_subsets(fold, labels, ratios, seed)
            for ratio in ratios:
                train = subsets[float(ratio)]
                records.append({
                    "task": spec.name, "ratio": float(ratio), "seed": int(seed), "fold": fold.fold,
                    "validation": spec.split.validation,
                    "n_train_subjects": len(train), "n_train": int(sum(len(rows_of[s]) for s in train)),
                    "n_val_subjects": len(fold.val), "n_test_subjects": len(fold.test),
                    "n_test": int(sum(len(rows_of[s]) for s in fold.test)),
                    **paper_n(spec, float(ratio)),
                })
    return pd.DataFrame.from_records(records)


def checked_folds(data: TaskData, pretrain_subjects: Iterable[str] | None) -> list[Fold]:
    """:func:`plan_folds`, refusing any fold that tests a subject seen during pretraining."""
    folds = plan_folds(data)
    if pretrain_subjects is not None:
        pre = set(map(str, pretrain_subjects))
        for fold in folds:
            check_against_pretraining(fold.test, pre, data.spec.name)
    return folds


def subject_rows(data: TaskData) -> dict[str, np.ndarray]:
    """Row indices of ``data.table`` per subject (all visits / images of a subject together)."""
    subj = data.table["subject"].to_numpy()
    return pd.Series(np.arange(len(subj))).groupby(subj).apply(lambda s: s.to_numpy()).to_dict()


def ratio_subsets(fold: Fold, labels: pd.Series | None, ratios: Iterable[float],
                  seed: int) -> dict[float, list[str]]:
    """Nested training subsets of ``fold`` per label ratio for one seed (one draw for every ratio)."""
    return nested_ratio_subsets(fold.train, labels, ratios, seed=seed * 7919 + fold.fold)


def head_seed(seed: int, fold: int) -> int:
    """The initialisation/shuffling seed of the head of (seed, fold), shared by every ratio."""
    return zlib.crc32(f"head:{seed}:{fold}".encode())


def summarize_run(entry: dict[str, Any], key: RunKey, data: TaskData, backbone: str,
                  **info: Any) -> dict[str, Any]:
    """Turn a run's per-fold frames and records into ``predictions``, mean ``metrics`` and ``info``."""
    spec = data.spec
    frame = pd.concat(entry.pop("frames"), ignore_index=True)
    for col, val in (("seed", key.seed), ("ratio", key.ratio), ("backbone", backbone), ("task", spec.name)):
        frame.insert(0, col, val)
    entry["predictions"] = frame
    folds = entry["folds"]
    entry["metrics"] = {k: float(v) for k, v in pd.DataFrame([f["metrics"] for f in folds]).mean().items()}
    entry["info"] = {
        "task": spec.name, "backbone": backbone, "ratio": key.ratio, "seed": key.seed,
        "kind": spec.kind, "dataset": spec.dataset, "n_folds": len(folds),
        **{n: int(sum(f[n] for f in folds) / len(folds)) for n in ("n_train", "n_val", "n_test")},
        **{n: int(sum(f[n] for f in folds) / len(folds)) for n in ("n_train_subjects", "n_test_subjects")
           if all(n in f for f in folds)},
        "validation": spec.split.validation, **paper_n(spec, key.ratio),
        "excluded": data.excluded, **info,
    }
    return entry


_N_COLUMNS = ("n_train_subjects", "paper_n_train", "n_train", "n_val", "n_test_subjects", "paper_n_test", "n_test")


#: how the heads of a run trained: the median epoch early stopping kept, and the share of heads
#: (folds) that kept the weights after their first epoch (no later epoch improved the validation
#: loss: with a handful of validation subjects and a few optimiser steps per epoch, a head that
#: barely moved from its initialisation)
EPOCH_COLUMNS = ("best_epoch", "first_epoch_share")


#: a (task, backbone, ratio) cell counts as untrained when at least this share of its heads (seeds x
#: folds) kept their first epoch's weights
FIRST_EPOCH_MARK_SHARE = 0.5


def untrained_cells(n: pd.DataFrame, share: float = FIRST_EPOCH_MARK_SHARE) -> set[tuple[str, str, float]]:
    """(task, backbone, ratio) where at least ``share`` of the heads kept their first epoch.

    ``n`` holds :func:`collect_training_n` rows (one per seed). Ratios are rounded to 6 decimals,
    as a lookup should round them.
    """
    if n.empty or "first_epoch_share" not in n.columns:
        return set()
    first = pd.to_numeric(n["first_epoch_share"], errors="coerce")
    mean = first.groupby([n["task"].astype(str), n["backbone"].astype(str), n["ratio"].astype(float)]).mean()
    return {(t, b, round(float(r), 6)) for (t, b, r), v in mean.items() if v >= share}


def collect_training_n(run_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """Per (task, backbone, ratio, seed): the n each run's heads trained/tested on beside the paper's n.

    Read from every run's ``metrics.json`` (runs written before these counts existed lack the
    subject columns; they are left empty), with how far the heads trained (``EPOCH_COLUMNS``).
    """
    import json

    records = []
    for path in run_files(run_dirs, "metrics.json"):
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise InputError(path, f"cannot read a run's metrics ({exc.__class__.__name__}: {exc})") from None
        rec = {k: info.get(k) for k in ("task", "backbone", "ratio", "seed", "validation", *_N_COLUMNS)}
        # closed-form predictors (the prior) run no epochs: nothing to say about their training
        folds = [f for f in info.get("folds", []) if f.get("epochs_run", 0) > 0]
        rec["best_epoch"] = float(np.median([f["best_epoch"] for f in folds])) if folds else None
        # stuck: later epochs ran and none was kept (a one-epoch budget is not a stuck head)
        rec["first_epoch_share"] = (float(np.mean([f["best_epoch"] <= 1 < f["epochs_run"] for f in folds]))
                                    if folds else None)
        records.append(rec)
    columns = ["task", "backbone", "ratio", "seed", "validation", *_N_COLUMNS, *EPOCH_COLUMNS]
    if not records:
        return pd.DataFrame(columns=columns)
    return pd.DataFrame.from_records(records, columns=columns).sort_values(["task", "backbone", "ratio", "seed"],
                                                                           ignore_index=True)


def pretraining_subjects(manifests: Sequence[str | Path]) -> set[str] | None:
    """Subjects of the pretraining manifests a task's test subjects must avoid (None: no such corpus)."""
    from brainfm.data.manifest import read_manifest

    if not manifests:
        return None
    return {str(s) for p in manifests for s in read_manifest(p, check_files=False)["subject"]}


def write_runs(out: str | Path, results: dict[RunKey, dict[str, Any]]) -> Path:
    """Every (ratio, seed) run of a (task, backbone) cell into ``out``, which appears atomically."""
    from brainfm.atomic import atomic_dir

    with atomic_dir(out) as tmp:
        for key, entry in results.items():
            write_run(tmp, key, entry)
    return Path(out)


def scan_leakage(task: TaskSpec, manifest: str | Path, fingerprints: str | Path,
                 pretrain_fingerprints: Sequence[str | Path], out: str | Path) -> dict[str, Any]:
    """The ``scan_leakage`` step: stop when a test scan of ``task`` is also a pretraining scan.

    Subject ids cannot catch the same scan shared by two collections (BraTS2025-GLI-PRE and
    BraTS2021 / UPENN-GBM / UCSF-PDGM), so the image fingerprints written by each dataset's
    preprocess step are compared (:mod:`brainfm.preprocess.fingerprint`). ``fingerprints`` and
    ``pretrain_fingerprints`` are fingerprint files or the preprocess ``report.json`` beside them.
    Raises :class:`~brainfm.errors.LeakageError` naming both files; otherwise writes ``out``.
    """
    from brainfm.atomic import write_json
    from brainfm.data.manifest import read_manifest
    from brainfm.preprocess.fingerprint import check_scan_leakage, read_fingerprints

    data = manifest_task_data(task, read_manifest(manifest, check_files=False))
    tested = {s for fold in plan_folds(data) for s in fold.test}
    own = read_fingerprints([_fingerprint_file(fingerprints)])
    test_scans = own[own["subject"].astype(str).isin(tested)]
    pre = read_fingerprints([_fingerprint_file(p) for p in pretrain_fingerprints])
    check_scan_leakage(test_scans, pre, f"task {task.name}")
    record = {"task": task.name, "n_test_subjects": len(tested), "n_test_scans": len(test_scans),
              "n_pretrain_scans": len(pre), "matches": 0}
    write_json(out, record)
    return record


def _fingerprint_file(path: str | Path) -> Path:
    from brainfm.preprocess.fingerprint import FINGERPRINT_FILE

    path = Path(path)
    return path.with_name(FINGERPRINT_FILE) if path.name == "report.json" else path


def subset_dataset(dataset: Any, task: TaskSpec, manifest: str | Path, out: str | Path) -> pd.DataFrame:
    """The ``subset_dataset`` step: the subjects of a task's dataset that the task never tests.

    ``dataset`` is the subset's :class:`brainfm.config.DatasetSpec` (``source_dataset`` keeps only
    rows pooled from one part of a union); the subset's manifest is written to ``out``.
    """
    from brainfm.data.manifest import read_manifest, subset_manifest, write_manifest

    parent = read_manifest(manifest)
    out = Path(out)
    df = subset_manifest(parent, training_subjects(task, parent), out.parent, dataset.name,
                         source_dataset=dataset.source_dataset)
    if getattr(dataset, "take", None):
        df = take_subset(df, dataset.take, dataset.name)
    write_manifest(out, df)
    return df


def take_subset(df: pd.DataFrame, take: dict[str, Any], name: str) -> pd.DataFrame:
    """A reproducible draw of ``take["n"]`` subjects (all their images) or volumes from a subset's rows.

    The draw is a seeded permutation of the sorted subject ids (or of the rows sorted by subject,
    session and modality), so it depends only on which training subjects are available.
    """
    n, unit, seed = int(take["n"]), take.get("unit", "subjects"), int(take.get("seed", 0))
    rng = np.random.default_rng(seed)
    if unit == "subjects":
        subjects = np.array(sorted(df["subject"].astype(str).unique()))
        if n > len(subjects):
            raise InputError(name, f"take {n} subjects, but only {len(subjects)} training subjects are available")
        chosen = set(subjects[rng.permutation(len(subjects))[:n]].tolist())
        keep = df["subject"].astype(str).isin(chosen)
        return df[keep].reset_index(drop=True)
    ordered = df.sort_values(["subject", "session", "modality"], kind="stable").reset_index(drop=True)
    if n > len(ordered):
        raise InputError(name, f"take {n} volumes, but only {len(ordered)} training volumes are available")
    return ordered.iloc[np.sort(rng.permutation(len(ordered))[:n])].reset_index(drop=True)
