"""The ``brainfm`` command line: one subcommand per workflow step.

Snakemake rules call these subcommands (so a rule's log shows a command a user can rerun by
hand), and researchers can run any step on its own. Errors the user can fix print one line and
exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from brainfm.errors import BrainfmError

log = logging.getLogger("brainfm")


def _json_arg(text: str) -> Any:
    """Accept inline JSON or a path to a JSON/YAML file."""
    path = Path(text)
    if not text.lstrip().startswith(("{", "[")) and path.exists():
        import yaml

        return yaml.safe_load(path.read_text())
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc


def _csv_floats(text: str) -> list[float] | None:
    return None if text in ("", "none") else [float(t) for t in text.split(",")]


def _csv_ints(text: str) -> list[int]:
    return [] if text in ("", "none") else [int(t) for t in text.split(",")]


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise BrainfmError("device 'cuda' requested but no CUDA device is visible")
    return name


# ----------------------------------------------------------------------------- data
def cmd_phantom(a: argparse.Namespace) -> None:
    from brainfm.data.phantom import generate_dataset

    t0 = time.perf_counter()
    df = generate_dataset(a.generator, Path(a.out), n_subjects=a.n_subjects, seed=a.seed, voxel_size=a.voxel_size,
                          n_sites=a.n_sites, test_fraction=a.test_fraction, n_jobs=a.n_jobs,
                          cache_dir=a.cache_dir or None, **(a.options or {}))
    log.info("generated %s: %d images of %d subjects in %.1f s", a.generator, len(df), df["subject"].nunique(),
             time.perf_counter() - t0)


def cmd_dataset(a: argparse.Namespace) -> None:
    from brainfm.atomic import write_json
    from brainfm.data.registry import build_manifest, check_dataset, fetch_dataset, load_dataset_entry

    entry = load_dataset_entry(a.registry)
    root = Path(a.root)
    if a.download:
        fetch_dataset(entry, root)
    df = build_manifest(entry, root, Path(a.manifest))
    report = check_dataset(entry, root)
    write_json(a.check, report)
    log.info("%s: %d images, %d subjects", entry.name, len(df), df["subject"].nunique())


def cmd_union(a: argparse.Namespace) -> None:
    from brainfm.data.manifest import read_manifest, union_manifests, write_manifest

    out = Path(a.out)
    df = union_manifests([read_manifest(p) for p in a.inputs], out.parent, a.name)
    write_manifest(out, df)
    log.info("%s: %d images of %d subjects from %d datasets", a.name, len(df), df["subject"].nunique(), len(a.inputs))


def cmd_subset(a: argparse.Namespace) -> None:
    from brainfm.data.manifest import read_manifest, subset_manifest, write_manifest
    from brainfm.tasks.runs import training_subjects
    from brainfm.tasks.spec import TaskSpec

    out = Path(a.out)
    parent = read_manifest(a.manifest)
    subjects = training_subjects(TaskSpec.from_config(a.task, a.spec), parent)
    df = subset_manifest(parent, subjects, out.parent, a.name, source_dataset=a.source_dataset)
    write_manifest(out, df)
    log.info("%s: %d images of %d subjects (training subjects of task %s)", a.name, len(df),
             df["subject"].nunique(), a.task)


def cmd_preprocess(a: argparse.Namespace) -> None:
    from brainfm.data.manifest import read_manifest
    from brainfm.preprocess.pipeline import preprocess_dataset

    manifest = read_manifest(a.manifest)
    report = preprocess_dataset(manifest, Path(manifest.attrs["root"]), Path(a.out), protocol=a.protocol,
                                products=tuple(a.products.split(",")), skull_strip=a.skull_strip,
                                n_jobs=a.n_jobs, seed=a.seed, perturbation=_perturbation(a.perturbation))
    log.info("preprocessed: %s", json.dumps({k: v for k, v in report.items() if not isinstance(v, (list, dict))}))


def _perturbation(text: str) -> dict[str, Any] | None:
    if text in ("", "none"):
        return None
    kind, _, severity = text.partition(":")
    return {"kind": kind, "severity": float(severity)}


# ----------------------------------------------------------------------------- models
def cmd_pretrain(a: argparse.Namespace) -> None:
    from brainfm.ssl.entry import run_pretraining

    run_pretraining(recipe=a.recipe, spec=a.spec, stores=[Path(s) for s in a.stores], out=Path(a.out),
                    summary=Path(a.summary), work_dir=Path(a.work_dir), nproc=a.nproc,
                    device=resolve_device(a.device))


def build_backbone(spec: dict[str, Any], weights: str | None):
    """Create a registry encoder from a backbone spec {"encoder", "args"} and optional weights."""
    from brainfm.models import create_encoder

    return create_encoder(spec["encoder"], weights=None if weights in (None, "none") else weights,
                          **spec.get("args", {}))


def cmd_extract(a: argparse.Namespace) -> None:
    from brainfm.features import extract_features
    from brainfm.preprocess.store import ShardedStore

    if a.threads > 0:
        import torch

        torch.set_num_threads(a.threads)
    encoder = build_backbone(a.backbone, a.weights)
    store = ShardedStore(a.store)
    central = _csv_floats(a.central_range)
    fs = extract_features(encoder, store, Path(a.out), batch_size=a.batch_size, device=resolve_device(a.device),
                          amp_bf16=a.amp_bf16, layers=tuple(_csv_ints(a.layers)),
                          central_range=tuple(central) if central else None)
    log.info("features %s: %s", a.out, json.dumps({k: fs.meta.get(k) for k in ("n_volumes", "seconds")}))


def cmd_missing_weights(a: argparse.Namespace) -> None:
    from brainfm.models.registry import get_factory

    doc = (get_factory(a.encoder).__doc__ or "").strip().splitlines()
    what = doc[0].split(";")[0].replace("``", "") if doc else a.encoder
    raise BrainfmError(f"{a.key} names the weights file {a.path}, which does not exist. Released weights are "
                       f"not downloaded by brainfm: obtain the file ({what}) from its "
                       f"authors and place it at {a.path}, or change {a.key} in the config.")


def cmd_list_encoders(a: argparse.Namespace) -> None:
    from brainfm.models import list_encoders

    print("\n".join(list_encoders()))


# ----------------------------------------------------------------------------- tasks
def _pretrain_subjects(paths: Sequence[str]) -> set[str] | None:
    from brainfm.data.manifest import read_manifest

    paths = [p for p in paths if p != "none"]
    if not paths:
        return None
    return {s for p in paths for s in read_manifest(p, check_files=False)["subject"]}


def cmd_fit(a: argparse.Namespace) -> None:
    from brainfm.data.manifest import read_manifest
    from brainfm.features import FeatureStore
    from brainfm.tasks.data import build_task_data
    from brainfm.tasks.runner import run_grid
    from brainfm.tasks.runs import write_run
    from brainfm.tasks.spec import TaskSpec

    spec = TaskSpec.from_config(a.task, a.spec)
    ratios = _csv_floats(a.ratios) or list(spec.ratios)
    data = build_task_data(spec, FeatureStore(a.features), read_manifest(a.manifest, check_files=False))
    t0 = time.perf_counter()
    results = run_grid(data, backbone=a.backbone, ratios=ratios, seeds=spec.seeds, head_defaults=a.head,
                       pretrain_subjects=_pretrain_subjects(a.pretrain_manifests))
    from brainfm.atomic import atomic_dir

    with atomic_dir(a.out) as tmp:
        for key, entry in results.items():
            write_run(tmp, key, entry)
            log.info("%s ratio=%g seed=%d: %s", spec.name, key.ratio, key.seed,
                     json.dumps({k: round(v, 4) for k, v in entry["metrics"].items()}))
    log.info("trained %d heads in %.2f s", sum(len(e["folds"]) for e in results.values()), time.perf_counter() - t0)


def cmd_finetune(a: argparse.Namespace) -> None:
    from brainfm.atomic import atomic_dir
    from brainfm.data.manifest import read_manifest
    from brainfm.preprocess.store import ShardedStore
    from brainfm.tasks.finetune import FinetuneConfig, finetune_grid
    from brainfm.tasks.runs import write_run
    from brainfm.tasks.spec import TaskSpec

    spec = TaskSpec.from_config(a.task, a.spec)
    cfg = FinetuneConfig.from_dict(a.settings)
    results = finetune_grid(spec, ShardedStore(a.store), read_manifest(a.manifest, check_files=False),
                            lambda: build_backbone(a.backbone_spec, a.weights), backbone=a.backbone, cfg=cfg,
                            head_defaults=a.head, pretrain_subjects=_pretrain_subjects(a.pretrain_manifests),
                            device=resolve_device(a.device))
    with atomic_dir(a.out) as tmp:
        for key, entry in results.items():
            write_run(tmp, key, entry)
            log.info("%s fine-tuned ratio=%g seed=%d: %s", spec.name, key.ratio, key.seed,
                     json.dumps({k: round(v, 4) for k, v in entry["metrics"].items()}))


def cmd_finetune_report(a: argparse.Namespace) -> None:
    from brainfm.stats.runners import finetune_table

    if len(a.frozen) != len(a.finetuned):
        raise BrainfmError("--frozen and --finetuned need one run directory per task, in the same order")
    finetune_table(list(zip(a.frozen, a.finetuned)), a.table, backbone=a.backbone, n_boot=a.n_boot, seed=a.seed,
                   labels=_labels(a))


def cmd_knn(a: argparse.Namespace) -> None:
    from brainfm.analysis.knn import run_knn_task
    from brainfm.atomic import write_parquet
    from brainfm.data.manifest import read_manifest
    from brainfm.features import FeatureStore
    from brainfm.tasks.data import build_task_data
    from brainfm.tasks.spec import TaskSpec

    spec = TaskSpec.from_config(a.task, a.spec)
    data = build_task_data(spec, FeatureStore(a.features), read_manifest(a.manifest, check_files=False))
    frame = run_knn_task(data, backbone=a.backbone, pretrain_subjects=_pretrain_subjects(a.pretrain_manifests))
    write_parquet(a.out, frame)
    acc = frame.groupby("k")["correct"].mean()
    log.info("kNN %s/%s accuracy by k: %s", spec.name, a.backbone, json.dumps({int(k): round(v, 4) for k, v in acc.items()}))


def cmd_perturbed(a: argparse.Namespace) -> None:
    from brainfm.atomic import write_parquet
    from brainfm.data.manifest import read_manifest
    from brainfm.features import FeatureStore
    from brainfm.tasks.perturbation import evaluate_perturbations
    from brainfm.tasks.spec import TaskSpec

    spec = TaskSpec.from_config(a.task, a.spec)
    manifest = read_manifest(a.manifest, check_files=False)
    settings = {}
    for item in a.perturbed:
        label, _, path = item.partition("=")
        kind, _, severity = label.partition(":")
        settings[(kind, float(severity))] = FeatureStore(path)
    frame = evaluate_perturbations(spec, FeatureStore(a.features), settings, manifest, backbone=a.backbone,
                                   head_defaults=a.head, n_boot=a.n_boot, seed=a.stats_seed)
    write_parquet(a.out, frame)
    log.info("perturbation results for %s/%s: %d rows", spec.name, a.backbone, len(frame))


# ----------------------------------------------------------------------------- statistics and report
def _labels(a: argparse.Namespace) -> dict[str, str]:
    return a.labels or {}


def cmd_stats(a: argparse.Namespace) -> None:
    from brainfm.stats.runners import task_stats

    task_stats(a.task, a.runs, a.out_dir, a.table, a.figure, reference=a.reference,
               description=a.spec.get("description", ""), n_boot=a.n_boot, seed=a.seed, labels=_labels(a))


def cmd_strata(a: argparse.Namespace) -> None:
    from brainfm.stats.runners import strata_stats

    strata_stats(a.task, a.runs, a.out_dir, a.table, a.figure, edges=(a.spec.get("strata") or {}).get("edges"),
                 reference=a.reference, n_boot=a.n_boot, seed=a.seed, labels=_labels(a))


def cmd_km(a: argparse.Namespace) -> None:
    from brainfm.stats.runners import km_stats

    km_stats(a.task, a.runs, a.out_dir, a.table, a.figure, reference=a.reference, labels=_labels(a))


def cmd_knn_report(a: argparse.Namespace) -> None:
    from brainfm.stats.runners import knn_stats

    knn_stats(a.task, a.inputs, a.out_dir, a.table, a.figure, reference=a.reference, n_boot=a.n_boot,
              seed=a.seed, labels=_labels(a))


def cmd_cka(a: argparse.Namespace) -> None:
    from brainfm.analysis.cka import cka_from_feature_stores
    from brainfm.atomic import write_parquet

    mods = None if a.modalities == ["all"] else a.modalities
    table = cka_from_feature_stores(dict(zip(a.backbones, a.features)), a.reference, modalities=mods,
                                    depth_labels=a.depth_labels)
    write_parquet(a.out, table)
    log.info("CKA:\n%s", table.to_string(index=False))


def cmd_cka_report(a: argparse.Namespace) -> None:
    from brainfm.report.build import cka_figure

    cka_figure(a.inputs, a.figure, reference=a.reference, labels=_labels(a))


def cmd_perturbation_report(a: argparse.Namespace) -> None:
    from brainfm.stats.runners import perturbation_stats

    perturbation_stats(a.inputs, a.table, a.figure, reference=a.reference, labels=_labels(a))


def cmd_summary(a: argparse.Namespace) -> None:
    from brainfm.report.build import summary_table

    summary_table(a.comparisons, a.knn, a.out, reference=a.reference, labels=_labels(a))


def cmd_bench(a: argparse.Namespace) -> None:
    from brainfm.bench.suite import run_benchmarks

    run_benchmarks(Path(a.out), which=a.only)


# ----------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="brainfm", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("phantom", help="generate a phantom dataset from the ICBM152 template")
    s.add_argument("--generator", required=True, help="phantom dataset kind, e.g. phantom_brainage")
    s.add_argument("--out", required=True, help="output dataset directory (NIfTI + manifest.parquet)")
    s.add_argument("--n-subjects", type=int, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--voxel-size", type=float, default=2.5)
    s.add_argument("--n-sites", type=int, default=3)
    s.add_argument("--test-fraction", type=float, default=0.2)
    s.add_argument("--options", type=_json_arg, default={}, help="JSON of extra generator options")
    s.add_argument("--n-jobs", type=int, default=1)
    s.add_argument("--cache-dir", default="", help="cache of the resampled template (shared by datasets)")
    s.set_defaults(func=cmd_phantom)

    s = sub.add_parser("dataset", help="check (and download) a real dataset and build its manifest")
    s.add_argument("--registry", required=True, help="dataset name in config/datasets or a YAML path")
    s.add_argument("--root", required=True, help="dataset root directory")
    s.add_argument("--download", action="store_true", help="fetch open datasets with a download section")
    s.add_argument("--manifest", required=True)
    s.add_argument("--check", required=True, help="JSON report of what was found")
    s.set_defaults(func=cmd_dataset)

    s = sub.add_parser("union", help="pool several datasets' manifests into one dataset")
    s.add_argument("--name", required=True)
    s.add_argument("--inputs", nargs="+", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_union)

    s = sub.add_parser("subset", help="the training subjects of a task's dataset (for a pretraining corpus)")
    s.add_argument("--name", required=True)
    s.add_argument("--manifest", required=True, help="the task dataset's manifest")
    s.add_argument("--task", required=True)
    s.add_argument("--spec", type=_json_arg, required=True, help="JSON task spec (config 'tasks.<task>')")
    s.add_argument("--source-dataset", default=None, help="keep only rows pooled from this dataset")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_subset)

    s = sub.add_parser("preprocess", help="run the paper's preprocessing into sharded stores")
    s.add_argument("--manifest", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--protocol", type=_json_arg, required=True, help="JSON protocol (see config 'preprocess')")
    s.add_argument("--products", default="downstream,pretrain")
    s.add_argument("--skull-strip", default="none", choices=["none", "deepbet", "hdbet"])
    s.add_argument("--n-jobs", type=int, default=1)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--perturbation", default="none", help="KIND:SEVERITY applied to raw volumes, e.g. gamma:2.0")
    s.set_defaults(func=cmd_preprocess)

    s = sub.add_parser("pretrain", help="self-supervised pretraining (dino | simclr | brainfound)")
    s.add_argument("--recipe", required=True, choices=["dino", "simclr", "brainfound"])
    s.add_argument("--spec", type=_json_arg, required=True, help="JSON of the pretrain run (config 'pretrain.<run>')")
    s.add_argument("--stores", nargs="+", required=True, help="slice (or volume) store directories")
    s.add_argument("--out", required=True, help="exported weights for the encoder registry")
    s.add_argument("--summary", required=True)
    s.add_argument("--work-dir", required=True, help="checkpoints for resuming (kept across failures)")
    s.add_argument("--nproc", type=int, default=1, help="processes (torchrun-style DDP)")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_pretrain)

    s = sub.add_parser("extract", help="frozen feature extraction into a feature store")
    s.add_argument("--backbone", type=_json_arg, required=True, help='JSON {"encoder": ..., "args": {...}}')
    s.add_argument("--weights", default="none")
    s.add_argument("--store", required=True, help="downstream volume store directory")
    s.add_argument("--out", required=True)
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--layers", default="none", help="comma-separated block indices for layer-wise features")
    s.add_argument("--central-range", default="none", help="lo,hi axial fractions for central patch features")
    s.add_argument("--amp-bf16", action="store_true")
    s.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_extract)

    s = sub.add_parser("missing-weights", help="explain how to supply a missing baseline weights file (exit 2)")
    s.add_argument("--key", required=True, help="the config key naming the file (e.g. backbones.dinov3.weights)")
    s.add_argument("--encoder", required=True)
    s.add_argument("--path", required=True)
    s.set_defaults(func=cmd_missing_weights)

    s = sub.add_parser("list-encoders", help="list registered encoders")
    s.set_defaults(func=cmd_list_encoders)

    s = sub.add_parser("fit", help="train task heads for one backbone over ratios x seeds x folds")
    s.add_argument("--task", required=True)
    s.add_argument("--spec", type=_json_arg, required=True, help="JSON task spec (config 'tasks.<task>')")
    s.add_argument("--head", type=_json_arg, default={}, help="JSON head defaults (config 'head')")
    s.add_argument("--features", required=True)
    s.add_argument("--manifest", required=True)
    s.add_argument("--backbone", required=True)
    s.add_argument("--ratios", default="", help="comma-separated ratios (default: the spec's)")
    s.add_argument("--pretrain-manifests", nargs="*", default=[], help="manifests whose subjects must not be tested")
    s.add_argument("--out", required=True, help="directory receiving ratio~R/seed~S/{predictions.parquet,metrics.json}")
    s.set_defaults(func=cmd_fit)

    s = sub.add_parser("finetune", help="full fine-tuning of encoder + head over folds x ratios x seeds (Supp. Table 6)")
    s.add_argument("--task", required=True)
    s.add_argument("--spec", type=_json_arg, required=True, help="JSON task spec (config 'tasks.<task>')")
    s.add_argument("--head", type=_json_arg, default={}, help="JSON head defaults (config 'head')")
    s.add_argument("--settings", type=_json_arg, default={}, help="JSON fine-tuning settings (config 'finetune')")
    s.add_argument("--store", required=True, help="preprocessed downstream volume store")
    s.add_argument("--manifest", required=True)
    s.add_argument("--backbone", required=True, help="backbone name (for the outputs)")
    s.add_argument("--backbone-spec", type=_json_arg, required=True, help='JSON {"encoder", "args"}')
    s.add_argument("--weights", default="none")
    s.add_argument("--pretrain-manifests", nargs="*", default=[], help="manifests whose subjects must not be tested")
    s.add_argument("--device", default="auto")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_finetune)

    s = sub.add_parser("knn", help="kNN probing on frozen features")
    s.add_argument("--task", required=True)
    s.add_argument("--spec", type=_json_arg, required=True)
    s.add_argument("--features", required=True)
    s.add_argument("--manifest", required=True)
    s.add_argument("--backbone", required=True)
    s.add_argument("--pretrain-manifests", nargs="*", default=[])
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_knn)

    s = sub.add_parser("perturbed", help="evaluate full-data heads on perturbed features (paper §4.5)")
    s.add_argument("--task", required=True)
    s.add_argument("--spec", type=_json_arg, required=True)
    s.add_argument("--head", type=_json_arg, default={})
    s.add_argument("--features", required=True, help="clean features (the heads train on these)")
    s.add_argument("--perturbed", nargs="+", required=True, help="KIND:SEVERITY=FEATURE_DIR items")
    s.add_argument("--manifest", required=True)
    s.add_argument("--backbone", required=True)
    s.add_argument("--n-boot", type=int, default=2000)
    s.add_argument("--stats-seed", type=int, default=42)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_perturbed)

    def report_args(s: argparse.ArgumentParser) -> None:
        s.add_argument("--reference", default="braindino")
        s.add_argument("--labels", type=_json_arg, default={}, help="JSON {backbone: display name}")

    def task_report_args(s: argparse.ArgumentParser) -> None:
        s.add_argument("--out-dir", required=True, help="tidy statistics (parquet) of the task")
        s.add_argument("--table", required=True, help="table path (.md; .csv and .tex written beside it)")
        s.add_argument("--figure", required=True, help="figure path (.png; .pdf written beside it)")
        s.add_argument("--n-boot", type=int, default=2000)
        s.add_argument("--seed", type=int, default=42)
        report_args(s)

    def runs_report(name: str, help_: str, func: Callable[[argparse.Namespace], None], spec: bool = True) -> None:
        s = sub.add_parser(name, help=help_)
        s.add_argument("--task", required=True)
        if spec:
            s.add_argument("--spec", type=_json_arg, required=True)
        s.add_argument("--runs", nargs="+", required=True, help="run directories (one per backbone)")
        task_report_args(s)
        s.set_defaults(func=func)

    runs_report("stats", "comparison statistics, table and figures of one task", cmd_stats)
    runs_report("strata", "age-stratified comparison at full supervision (Holm within strata)", cmd_strata)
    runs_report("km", "Kaplan-Meier risk stratification grid with log-rank p (survival tasks)", cmd_km, spec=False)

    s = sub.add_parser("knn-report", help="kNN accuracy table and figure of one task")
    s.add_argument("--task", required=True)
    s.add_argument("--inputs", nargs="+", required=True)
    task_report_args(s)
    s.set_defaults(func=cmd_knn_report)

    s = sub.add_parser("cka", help="layer-wise linear CKA of the reference backbone against the others")
    s.add_argument("--reference", required=True)
    s.add_argument("--backbones", nargs="+", required=True)
    s.add_argument("--features", nargs="+", required=True, help="feature dirs, same order as --backbones")
    s.add_argument("--modalities", nargs="+", default=["all"])
    s.add_argument("--depth-labels", nargs="+", default=["early", "mid", "late"])
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_cka)

    s = sub.add_parser("cka-report", help="CKA heatmaps")
    s.add_argument("--inputs", nargs="+", required=True)
    s.add_argument("--figure", required=True)
    report_args(s)
    s.set_defaults(func=cmd_cka_report)

    s = sub.add_parser("perturbation-report", help="perturbation table and grouped bars")
    s.add_argument("--inputs", nargs="+", required=True)
    s.add_argument("--table", required=True)
    s.add_argument("--figure", required=True)
    report_args(s)
    s.set_defaults(func=cmd_perturbation_report)

    s = sub.add_parser("finetune-report", help="frozen vs fine-tuned table (Supplementary Table 6)")
    s.add_argument("--backbone", required=True)
    s.add_argument("--frozen", nargs="+", required=True, help="frozen run directories, one per task")
    s.add_argument("--finetuned", nargs="+", required=True, help="fine-tuned run directories, same order")
    s.add_argument("--table", required=True)
    s.add_argument("--n-boot", type=int, default=2000)
    s.add_argument("--seed", type=int, default=42)
    report_args(s)
    s.set_defaults(func=cmd_finetune_report)

    s = sub.add_parser("summary", help="headline table over all tasks")
    s.add_argument("--comparisons", nargs="*", default=[])
    s.add_argument("--knn", nargs="*", default=[])
    s.add_argument("--out", required=True)
    report_args(s)
    s.set_defaults(func=cmd_summary)

    s = sub.add_parser("bench", help="benchmarks: extraction vs roofline, heads, statistics, SSL training, demo DAG")
    s.add_argument("--out", default="results/bench")
    s.add_argument("--only", nargs="*", default=[], help="subset of: extraction heads stats pretrain demo")
    s.set_defaults(func=cmd_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        args.func(args)
    except BrainfmError as exc:
        print(f"brainfm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
