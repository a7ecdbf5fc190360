"""The ``brainfm`` command line: one subcommand per workflow step, named like its rule.

Rule ``fit_heads`` runs ``brainfm fit-heads``, which calls ``brainfm.tasks.fit_heads``; a rule's
log shows a command a user can rerun by hand. Settings arrive as the JSON of a config section
(``--task``, ``--backbone``, ``--stats``...; inline or a path to a JSON/YAML file), rebuilt with
the same spec classes that read the config, so a step checks its settings exactly as the
workflow does. Errors the user can fix print one line and exit with status 2.
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


def _spec(cls_name: str) -> Callable[[str], Any]:
    """argparse type: a config section's JSON -> its spec (``brainfm.config.<cls_name>``)."""

    def parse(text: str) -> Any:
        import brainfm.config as config

        return getattr(config, cls_name).from_json(text)

    parse.__name__ = cls_name  # argparse names the type in its error messages
    return parse


def _json(text: str) -> Any:
    from brainfm.config import read_json_arg

    return read_json_arg(text)


def _log_metrics(what: str, results: dict[Any, dict[str, Any]]) -> None:
    for key, entry in results.items():
        log.info("%s ratio=%g seed=%d: %s", what, key.ratio, key.seed,
                 json.dumps({k: round(v, 4) for k, v in entry["metrics"].items()}))


# ----------------------------------------------------------------------------- data
def cmd_phantom_dataset(a: argparse.Namespace) -> None:
    from brainfm.data.phantom import phantom_dataset

    t0 = time.perf_counter()
    df = phantom_dataset(a.dataset, a.phantom, Path(a.out))
    log.info("generated %s: %d images of %d subjects in %.1f s", a.dataset.name, len(df), df["subject"].nunique(),
             time.perf_counter() - t0)


def cmd_real_dataset(a: argparse.Namespace) -> None:
    from brainfm.data.datasets import real_dataset

    df = real_dataset(a.dataset, a.manifest, a.check)
    log.info("%s: %d images, %d subjects", a.dataset.name, len(df), df["subject"].nunique())


def cmd_union_dataset(a: argparse.Namespace) -> None:
    from brainfm.data.manifest import union_dataset

    df = union_dataset(a.name, a.inputs, a.out)
    log.info("%s: %d images of %d subjects from %d datasets", a.name, len(df), df["subject"].nunique(), len(a.inputs))


def cmd_subset_dataset(a: argparse.Namespace) -> None:
    from brainfm.tasks.runs import subset_dataset

    df = subset_dataset(a.dataset, a.task, a.manifest, a.out)
    log.info("%s: %d images of %d subjects (training subjects of task %s)", a.dataset.name, len(df),
             df["subject"].nunique(), a.task.name)


def cmd_user_weights(a: argparse.Namespace) -> None:
    from brainfm.models.registry import user_weights

    user_weights(a.key, a.encoder, a.path)


def cmd_preprocess(a: argparse.Namespace) -> None:
    from brainfm.preprocess.pipeline import preprocess

    report = preprocess(a.manifest, a.out, a.preprocess, products=a.products.split(","), seed=a.seed,
                        perturbation=a.perturbation or None, device=a.device, n_jobs=a.n_jobs or None)
    log.info("preprocessed: %s", json.dumps({k: v for k, v in report.items() if not isinstance(v, (list, dict))}))


# ----------------------------------------------------------------------------- models
def cmd_pretrain(a: argparse.Namespace) -> None:
    from brainfm.device import resolve_device, resolve_precision
    from brainfm.ssl.entry import pretrain

    device = resolve_device(a.device)
    precision = resolve_precision(a.precision, device, conv3d_training=a.spec.recipe == "simclr")  # a 3D ResNet
    pretrain(a.spec, [Path(s) for s in a.stores], Path(a.out), Path(a.summary), Path(a.work_dir),
             device=device, precision=precision, rdzv_endpoint=a.rdzv_endpoint)


def cmd_extract_features(a: argparse.Namespace) -> None:
    import torch

    from brainfm.device import resolve_device
    from brainfm.features import extract_features
    from brainfm.models import create_encoder
    from brainfm.preprocess.store import ShardedStore

    settings, backbone = a.features, a.backbone
    torch.set_num_threads(settings.threads)
    encoder = create_encoder(backbone.encoder, weights=backbone.weights, **backbone.args)
    fs = extract_features(encoder, ShardedStore(a.store), Path(a.out), batch_size=settings.batch_size,
                          volume_batch=settings.volume_batch, device=resolve_device(a.device), precision=a.precision,
                          layers=() if a.no_layers else tuple(backbone.layers),
                          central_range=tuple(settings.central_range) if a.central_patches else None,
                          manifest=a.manifest)
    log.info("features %s: %s", a.out, json.dumps({k: fs.meta.get(k) for k in ("n_volumes", "seconds")}))


def cmd_list_encoders(a: argparse.Namespace) -> None:
    from brainfm.models import list_encoders

    print("\n".join(list_encoders()))


# ----------------------------------------------------------------------------- tasks and analyses
def cmd_fit_heads(a: argparse.Namespace) -> None:
    from brainfm.tasks.runner import fit_heads

    t0 = time.perf_counter()
    results = fit_heads(a.task, a.features, a.manifest, a.backbone, a.out, pretrain_manifests=a.pretrain_manifests)
    _log_metrics(a.task.name, results)
    log.info("trained %d heads in %.2f s", sum(len(e["folds"]) for e in results.values()), time.perf_counter() - t0)


def cmd_scan_leakage(a: argparse.Namespace) -> None:
    from brainfm.tasks.runs import scan_leakage

    record = scan_leakage(a.task, a.manifest, a.fingerprints, a.pretrain_fingerprints, a.out)
    log.info("scan leakage %s: %s", a.task.name, json.dumps(record))


def cmd_finetune(a: argparse.Namespace) -> None:
    from brainfm.device import resolve_device
    from brainfm.tasks.finetune import finetune

    results = finetune(a.task, a.settings, a.backbone, a.store, a.manifest, a.out,
                       pretrain_manifests=a.pretrain_manifests, device=resolve_device(a.device),
                       precision=a.precision)
    _log_metrics(f"{a.task.name} fine-tuned", results)


def cmd_knn_probe(a: argparse.Namespace) -> None:
    from brainfm.analysis.knn import knn_probe

    frame = knn_probe(a.task, a.features, a.manifest, a.backbone, a.out, pretrain_manifests=a.pretrain_manifests)
    acc = frame.groupby("k")["correct"].mean()
    log.info("kNN %s/%s accuracy by k: %s", a.task.name, a.backbone,
             json.dumps({int(k): round(v, 4) for k, v in acc.items()}))


def cmd_evaluate_perturbed(a: argparse.Namespace) -> None:
    from brainfm.tasks.perturbation import evaluate_perturbed

    perturbed = dict(item.partition("=")[::2] for item in a.perturbed)
    frame = evaluate_perturbed(a.task, a.features, perturbed, a.manifest, a.backbone, a.out, stats=a.stats,
                               predictions=a.predictions or None)
    log.info("perturbation results for %s/%s: %d rows", a.task.name, a.backbone, len(frame))


def cmd_cka(a: argparse.Namespace) -> None:
    from brainfm.analysis.cka import cka

    table = cka(dict(zip(a.backbones, a.features)), a.reference, a.out, modalities=a.modalities,
                depth_labels=a.depth_labels)
    log.info("CKA:\n%s", table.to_string(index=False))


# ----------------------------------------------------------------------------- segmentation
def cmd_prepare_segmentation(a: argparse.Namespace) -> None:
    from brainfm.segmentation.steps import prepare_segmentation

    settings = a.settings or {}
    prepare_segmentation(a.dataset, a.manifest, a.out, configurations=a.configurations,
                         batch_sizes=settings.get("batch_sizes"), test_fraction=settings.get("test_fraction"),
                         processes=int(settings.get("processes", 1)))


def cmd_segment(a: argparse.Namespace) -> None:
    from brainfm.device import resolve_device
    from brainfm.segmentation.steps import segment

    info = segment(a.benchmark, a.out, benchmark=a.name, backbone=a.backbone, network=a.network, ratio=a.ratio,
                   seed=a.seed, settings=a.settings, pretrain_manifests=a.pretrain_manifests,
                   device=resolve_device(a.device), precision=a.precision)
    log.info("%s/%s ratio %g seed %d: Dice %s vs all-background %s; parameters %s", a.name, a.backbone.name, a.ratio,
             a.seed, json.dumps({k: round(v, 4) for k, v in info["mean_dice"].items()}),
             json.dumps({k: round(v, 4) for k, v in info["all_background_mean_dice"].items()}),
             json.dumps(info["parameters"]))


def cmd_segment_finetune(a: argparse.Namespace) -> None:
    from brainfm.device import resolve_device
    from brainfm.segmentation.steps import segment_finetune

    info = segment_finetune(a.benchmark, a.out, benchmark=a.name, backbone=a.backbone, network=a.network,
                            ratio=a.ratio, seed=a.seed, settings=a.settings, pretrain_manifests=a.pretrain_manifests,
                            device=resolve_device(a.device), precision=a.precision)
    log.info("%s/%s fine-tuned, ratio %g seed %d: Dice %s; parameters %s", a.name, a.backbone.name, a.ratio, a.seed,
             json.dumps({k: round(v, 4) for k, v in info["mean_dice"].items()}), json.dumps(info["parameters"]))


def cmd_segment_perturbed(a: argparse.Namespace) -> None:
    from brainfm.config import PerturbationSetting
    from brainfm.device import resolve_device
    from brainfm.segmentation.steps import segment_perturbed

    segment_perturbed(a.benchmark, a.run, a.out, benchmark=a.name, backbone=a.backbone,
                      settings=[PerturbationSetting.parse(t) for t in a.settings], seed=a.seed,
                      n_boot=a.stats.n_boot, device=resolve_device(a.device), threads=a.threads)


def cmd_segmentation_stats(a: argparse.Namespace) -> None:
    from brainfm.stats.runners import segmentation_stats

    settings = a.settings
    segmentation_stats(a.runs, a.out, a.table, a.figure, reference=a.stats.reference,
                       all_background=settings.all_background, adjust=settings.adjust, n_boot=a.stats.n_boot,
                       seed=a.stats.seed, alpha=a.stats.alpha, labels=a.labels)


def cmd_segmentation_labels(a: argparse.Namespace) -> None:
    from brainfm.report.segmentation import segmentation_labels

    segmentation_labels(dict(item.partition("=")[::2] for item in a.benchmarks), a.table)


def cmd_segmentation_figure(a: argparse.Namespace) -> None:
    from brainfm.report.segmentation import segmentation_figure

    runs: dict[str, dict[str, str]] = {}
    for item in a.runs:
        key, _, path = item.partition("=")
        benchmark, _, backbone = key.partition(":")
        runs.setdefault(benchmark, {})[backbone] = path
    benchmarks = dict(item.partition("=")[::2] for item in a.benchmarks)
    segmentation_figure(benchmarks, runs, a.figure, reference=a.stats.reference, n_cases=a.cases, labels=a.labels)


def cmd_similarity_maps(a: argparse.Namespace) -> None:
    from brainfm.analysis.similarity import similarity_maps
    from brainfm.device import resolve_device
    from brainfm.models import create_encoder

    backbone = a.backbone
    encoder = create_encoder(backbone.encoder, weights=backbone.weights, **backbone.args)
    frame = similarity_maps(encoder, backbone.name, a.store, a.masks or None, a.out, modality=a.modality,
                            n_cases=a.n_cases, references=a.references, device=resolve_device(a.device))
    log.info("similarity %s: mean AUC by reference %s", backbone.name,
             json.dumps({k: round(v, 3) for k, v in frame.groupby("reference")["auc"].mean().items()}))


def cmd_similarity_report(a: argparse.Namespace) -> None:
    from brainfm.analysis.similarity import similarity_report

    summary = similarity_report(a.inputs, a.tidy, a.table, a.figure, reference=a.stats.reference,
                                n_boot=a.stats.n_boot, seed=a.stats.seed, alpha=a.stats.alpha, labels=a.labels)
    log.info("similarity AUCs:\n%s", summary.to_string(index=False))


# ----------------------------------------------------------------------------- statistics and report
def cmd_task_stats(a: argparse.Namespace) -> None:
    from brainfm.stats.runners import task_metrics, task_stats

    task_stats(a.task.name, a.runs, a.out_dir, a.table, a.figure, reference=a.stats.reference,
               description=a.task.description, n_boot=a.stats.n_boot, seed=a.stats.seed, labels=a.labels,
               metrics=task_metrics(a.task.kind, a.task.target), controls=a.stats.controls)


def cmd_strata_stats(a: argparse.Namespace) -> None:
    from brainfm.stats.runners import strata_stats

    strata_stats(a.task.name, a.runs, a.out_dir, a.table, a.figure, edges=(a.task.strata or {}).get("edges"),
                 reference=a.stats.reference, n_boot=a.stats.n_boot, seed=a.stats.seed, labels=a.labels)


def cmd_km_stats(a: argparse.Namespace) -> None:
    from brainfm.stats.runners import km_stats

    km_stats(a.task.name, a.runs, a.out_dir, a.table, a.figure, reference=a.stats.reference, labels=a.labels)


def cmd_knn_stats(a: argparse.Namespace) -> None:
    from brainfm.stats.runners import knn_stats

    knn_stats(a.task.name, a.inputs, a.out_dir, a.table, a.figure, reference=a.stats.reference,
              n_boot=a.stats.n_boot, seed=a.stats.seed, labels=a.labels)


def cmd_perturbation_stats(a: argparse.Namespace) -> None:
    from brainfm.stats.runners import perturbation_stats

    perturbation_stats(a.inputs, a.table, a.figure, reference=a.stats.reference, labels=a.labels,
                       predictions=a.predictions, comparison_path=a.comparison or None, n_boot=a.stats.n_boot,
                       seed=a.stats.seed, alpha=a.stats.alpha)


def cmd_finetune_table(a: argparse.Namespace) -> None:
    from brainfm.stats.runners import finetune_table

    if len(a.frozen) != len(a.finetuned):
        raise BrainfmError("--frozen and --finetuned need one run directory per task, in the same order")
    if len(a.segmentation_frozen) != len(a.segmentation_finetuned):
        raise BrainfmError("--segmentation-frozen and --segmentation-finetuned need one job folder per cell, "
                           "in the same order")
    finetune_table(list(zip(a.frozen, a.finetuned)), a.table, backbone=a.backbone, n_boot=a.stats.n_boot,
                   seed=a.stats.seed, labels=a.labels,
                   segmentation=list(zip(a.segmentation_frozen, a.segmentation_finetuned)))


def cmd_cka_figure(a: argparse.Namespace) -> None:
    from brainfm.report.build import cka_figure

    cka_figure(a.inputs, a.figure, reference=a.stats.reference, labels=a.labels)


def cmd_composite_figure(a: argparse.Namespace) -> None:
    from brainfm.report.build import composite_figure

    composite_figure(a.comparisons, a.figure, reference=a.stats.reference, labels=a.labels,
                     descriptions=a.descriptions)


def cmd_summary_table(a: argparse.Namespace) -> None:
    from brainfm.report.build import summary_table

    summary_table(a.comparisons, a.knn, a.out, reference=a.stats.reference, labels=a.labels,
                  control_files=a.controls, controls=a.stats.controls, training_n_files=a.training_n)


def _named_paths(items: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise BrainfmError(f"{what}: expected NAME=PATH, got {item!r}")
        out[name] = path
    return out


def cmd_corpus_figure(a: argparse.Namespace) -> None:
    from brainfm.report.corpus import corpus_figure

    counts = corpus_figure(_named_paths(a.manifests, "--manifests"), _named_paths(a.stores, "--stores"), a.table,
                           a.figure)
    log.info("corpus: %d datasets, %d volumes, %s slices", counts["dataset"].nunique(), int(counts["volumes"].sum()),
             counts["slices"].sum(min_count=1))


def cmd_dataset_table(a: argparse.Namespace) -> None:
    from brainfm.report.corpus import dataset_table

    frame = dataset_table(a.datasets, _named_paths(a.manifests, "--manifests"), a.roles, a.table)
    log.info("dataset table: %d datasets, %d subjects", len(frame), int(frame["subjects"].sum()))


def cmd_protocol_deviations(a: argparse.Namespace) -> None:
    from brainfm.config import load_config
    from brainfm.report.protocol import protocol_deviations

    text = a.config.strip()
    cfg = load_config(_json(text) if text.startswith("{") else text, source=a.source or text)
    dev = protocol_deviations(cfg.values, a.out, source=a.source or text)
    log.info("%d deviation(s) from the paper's protocol: %s", len(dev), ", ".join(r["key"] for r in dev) or "none")


def cmd_pretrain_curves(a: argparse.Namespace) -> None:
    from brainfm.report.pretrain_curves import pretrain_curves

    rows = pretrain_curves(a.inputs, a.figure, a.table, labels=a.labels)
    for r in rows:
        log.info("%s: final loss %s vs uniform %s; teacher entropy %s (batch mean %s)", r["run"], r["loss"],
                 r["uniform_loss"], r["teacher_entropy"], r["teacher_batch_entropy"])


def cmd_bench(a: argparse.Namespace) -> None:
    from brainfm.bench.suite import run_benchmarks

    options = {"demo": {"benchmarks": a.benchmarks, "preloaded": not a.fresh_processes}}
    run_benchmarks(Path(a.out), which=a.only, options=options)


def cmd_preload(a: argparse.Namespace) -> None:
    from brainfm.preload import preloaded

    command = a.command_line[1:] if a.command_line[:1] == ["--"] else a.command_line
    if not command:
        raise SystemExit("brainfm preload: give a command to run, e.g. brainfm preload -- snakemake --cores 2")
    raise SystemExit(preloaded(command))


def cmd_plan(a: argparse.Namespace) -> None:
    import os

    from brainfm.plan import format_plan, plan

    if a.directory:
        os.chdir(a.directory)
    slices = {} if a.pretrain_slices is None else {"pretrain_slices": a.pretrain_slices}
    report = plan(a.config, snakefile=a.snakefile, profile=a.profile, bench_dir=a.bench, dry_run=a.dry_run,
                  **slices)
    sys.stdout.write(json.dumps(report, indent=1) + "\n" if a.json else format_plan(report))


# ----------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="brainfm", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def step(name: str, func: Callable[[argparse.Namespace], None], help_: str) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=help_, description=help_)
        s.set_defaults(func=func)
        return s

    def task_arg(s: argparse.ArgumentParser) -> None:
        s.add_argument("--task", type=_spec("TaskSpec"), required=True,
                       help="JSON of the task (a config 'tasks.<name>' entry plus 'name', ratios, seeds, head)")

    def stats_args(s: argparse.ArgumentParser) -> None:
        s.add_argument("--stats", type=_spec("StatsSpec"), default="{}",
                       help="JSON of the config 'stats' section (reference, n_boot, seed, alpha)")
        s.add_argument("--labels", type=_json, default={}, help="JSON {backbone: display name}")

    def leakage_arg(s: argparse.ArgumentParser) -> None:
        s.add_argument("--pretrain-manifests", nargs="*", default=[],
                       help="manifests of pretraining datasets: none of their subjects may be tested")

    def outputs(s: argparse.ArgumentParser, out_dir: bool = True) -> None:
        if out_dir:
            s.add_argument("--out-dir", required=True, help="tidy statistics (parquet) of the task")
        s.add_argument("--table", required=True, help="table path (.md; .csv and .tex written beside it)")
        s.add_argument("--figure", required=True, help="figure path (.png; .pdf written beside it)")

    # data
    s = step("phantom-dataset", cmd_phantom_dataset, "generate a phantom dataset from the ICBM152 template")
    s.add_argument("--dataset", type=_spec("DatasetSpec"), required=True, help="JSON of a 'datasets.<name>' entry")
    s.add_argument("--phantom", type=_spec("PhantomSpec"), default="{}", help="JSON of the config 'phantom' section")
    s.add_argument("--out", required=True, help="output dataset directory (NIfTI + manifest.parquet)")

    s = step("real-dataset", cmd_real_dataset, "check (and download) a real dataset and build its manifest")
    s.add_argument("--dataset", type=_spec("DatasetSpec"), required=True,
                   help="JSON of a 'datasets.<name>' entry (registry entry, path, source)")
    s.add_argument("--manifest", required=True)
    s.add_argument("--check", required=True, help="JSON report of what was found")

    s = step("union-dataset", cmd_union_dataset, "pool several datasets' manifests into one dataset")
    s.add_argument("--name", required=True)
    s.add_argument("--inputs", nargs="+", required=True)
    s.add_argument("--out", required=True)

    s = step("subset-dataset", cmd_subset_dataset, "the training subjects of a task's dataset (a pretraining corpus)")
    s.add_argument("--dataset", type=_spec("DatasetSpec"), required=True, help="JSON of the subset dataset entry")
    task_arg(s)
    s.add_argument("--manifest", required=True, help="the task dataset's manifest")
    s.add_argument("--out", required=True)

    s = step("user-weights", cmd_user_weights, "explain how to supply a missing baseline weights file (exit 2)")
    s.add_argument("--key", required=True, help="the config key naming the file (e.g. backbones.dinov3.weights)")
    s.add_argument("--encoder", required=True)
    s.add_argument("--path", required=True)

    s = step("preprocess", cmd_preprocess, "run the paper's preprocessing into sharded stores")
    s.add_argument("--manifest", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--preprocess", type=_spec("PreprocessSpec"), default="{}",
                   help="JSON of the config 'preprocess' section (protocol, skull stripping, n_jobs)")
    s.add_argument("--products", default="downstream,pretrain")
    s.add_argument("--n-jobs", type=int, default=0, help="worker processes (default: the section's n_jobs)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--perturbation", default="", help="KIND~SEVERITY applied to raw volumes first, e.g. gamma~2")
    s.add_argument("--device", default="auto", help="skull stripping device: auto | cpu | cuda")

    # models
    s = step("pretrain", cmd_pretrain, "self-supervised pretraining of one run (dino | simclr | brainfound)")
    s.add_argument("--spec", type=_spec("PretrainSpec"), required=True,
                   help="JSON of a 'pretrain.<name>' entry plus 'name' (init resolved to a file)")
    s.add_argument("--stores", nargs="+", required=True, help="slice (or volume) store directories")
    s.add_argument("--out", required=True, help="exported weights for the encoder registry")
    s.add_argument("--summary", required=True)
    s.add_argument("--work-dir", required=True, help="checkpoints for resuming (kept across failures)")
    s.add_argument("--rdzv-endpoint", default=None,
                   help="HOST:PORT of the c10d rendezvous: this process is one node's launcher (outside SLURM)")
    s.add_argument("--device", default="auto")
    s.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="auto: bf16 where the device computes it natively, else fp32")

    s = step("extract-features", cmd_extract_features, "frozen feature extraction into a feature store")
    s.add_argument("--backbone", type=_spec("BackboneSpec"), required=True,
                   help="JSON of a 'backbones.<name>' entry plus 'name' (weights resolved to a file or null)")
    s.add_argument("--features", type=_spec("FeaturesSpec"), default="{}",
                   help="JSON of the config 'features' section")
    s.add_argument("--store", required=True, help="downstream volume store directory")
    s.add_argument("--out", required=True)
    s.add_argument("--central-patches", action="store_true", help="also pool patch tokens of the central range")
    s.add_argument("--manifest", default=None, help="the dataset's manifest (table encoders, e.g. phantom_oracle)")
    s.add_argument("--no-layers", action="store_true", help="skip the layer-wise features of the backbone")
    s.add_argument("--device", default="auto")
    s.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="auto: bf16 where the device computes it natively, else fp32")

    s = step("list-encoders", cmd_list_encoders, "list registered encoders")

    # tasks
    s = step("fit-heads", cmd_fit_heads, "train task heads for one backbone over ratios x seeds x folds")
    task_arg(s)
    s.add_argument("--features", required=True)
    s.add_argument("--manifest", required=True)
    s.add_argument("--backbone", required=True, help="backbone name (for the outputs)")
    leakage_arg(s)
    s.add_argument("--out", required=True, help="directory receiving ratio~R/seed~S/{predictions.parquet,metrics.json}")

    s = step("scan-leakage", cmd_scan_leakage, "stop when a task's test scan is also a pretraining scan (fingerprints)")
    task_arg(s)
    s.add_argument("--manifest", required=True)
    s.add_argument("--fingerprints", required=True, help="the task dataset's preprocess report.json or fingerprints")
    s.add_argument("--pretrain-fingerprints", nargs="*", default=[],
                   help="every pretraining dataset's preprocess report.json (or fingerprints.parquet)")
    s.add_argument("--out", required=True, help="JSON record written when no test scan is a pretraining scan")

    s = step("finetune", cmd_finetune, "full fine-tuning of encoder + head over folds x ratios x seeds (Supp. Table 6)")
    task_arg(s)
    s.add_argument("--settings", type=_spec("FinetuneSpec"), default="{}", help="JSON of the config 'finetune' section")
    s.add_argument("--backbone", type=_spec("BackboneSpec"), required=True, help="JSON of the backbone")
    s.add_argument("--store", required=True, help="preprocessed downstream volume store")
    s.add_argument("--manifest", required=True)
    leakage_arg(s)
    s.add_argument("--device", default="auto")
    s.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                   help="auto: bf16 where the device computes it natively, else fp32")
    s.add_argument("--out", required=True)

    s = step("knn-probe", cmd_knn_probe, "kNN probing on frozen features")
    task_arg(s)
    s.add_argument("--features", required=True)
    s.add_argument("--manifest", required=True)
    s.add_argument("--backbone", required=True)
    leakage_arg(s)
    s.add_argument("--out", required=True)

    s = step("evaluate-perturbed", cmd_evaluate_perturbed, "evaluate full-data heads on perturbed features (§4.5)")
    task_arg(s)
    s.add_argument("--features", required=True, help="clean features (the heads train on these)")
    s.add_argument("--perturbed", nargs="+", required=True, help="KIND~SEVERITY=FEATURE_DIR items")
    s.add_argument("--manifest", required=True)
    s.add_argument("--backbone", required=True)
    stats_args(s)
    s.add_argument("--out", required=True)
    s.add_argument("--predictions", default="", help="per-item pooled predictions (input of the pairwise tests)")

    s = step("cka", cmd_cka, "layer-wise linear CKA of the reference backbone against the others")
    s.add_argument("--reference", required=True)
    s.add_argument("--backbones", nargs="+", required=True)
    s.add_argument("--features", nargs="+", required=True, help="feature dirs, same order as --backbones")
    s.add_argument("--modalities", nargs="*", default=[], help="default: every modality")
    s.add_argument("--depth-labels", nargs="+", default=["early", "mid", "late"])
    s.add_argument("--out", required=True)

    # segmentation
    s = step("prepare-segmentation", cmd_prepare_segmentation,
             "a segmentation benchmark for nnU-Net v2: raw dataset, plans, preprocessed data, fold split")
    s.add_argument("--dataset", type=_spec("DatasetSpec"), required=True, help="JSON of the benchmark's dataset entry")
    s.add_argument("--manifest", required=True)
    s.add_argument("--configurations", nargs="+", required=True, help="nnU-Net configurations, e.g. 2d_256 3d_128")
    s.add_argument("--settings", type=_json, default={},
                   help="JSON {batch_sizes, test_fraction, processes} (SegmentationSpec.prepare_json)")
    s.add_argument("--out", required=True, help="the benchmark's prepared.json (its folder is the benchmark root)")

    for name, func, help_ in (
            ("segment", cmd_segment, "one segmentation job: train on a ratio's subset, predict and score the "
                                     "test cases"),
            ("segment-finetune", cmd_segment_finetune, "one segmentation job with the encoder trained too (full "
                                                       "fine-tuning, Supplementary Table 6)")):
        s = step(name, func, help_)
        s.add_argument("--benchmark", required=True, help="the prepared benchmark's prepared.json")
        s.add_argument("--name", required=True, help="benchmark name (the 'task' column of the Dice table)")
        s.add_argument("--backbone", type=_spec("BackboneSpec"), required=True, help="JSON of the backbone")
        s.add_argument("--network", type=_json, required=True,
                       help="JSON of the backbone's segmentation entry {configuration, blocks, decoder}")
        s.add_argument("--ratio", type=float, required=True)
        s.add_argument("--seed", type=int, required=True)
        s.add_argument("--settings", type=_spec("SegmentationSpec"), default="{}",
                       help="JSON of the config 'segmentation' section (training keys)")
        leakage_arg(s)
        s.add_argument("--device", default="auto")
        s.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                       help="CPU only (nnU-Net autocasts CUDA to fp16 itself). auto: bf16 where the CPU computes "
                            "it natively and the network's bf16 gradients agree with fp32, else fp32")
        s.add_argument("--out", required=True, help="the job's folder")

    s = step("segment-perturbed", cmd_segment_perturbed,
             "a full-data segmentation model on perturbed test images (Fig. 5, Supp. Table 18 rows)")
    s.add_argument("--benchmark", required=True, help="the prepared benchmark's prepared.json")
    s.add_argument("--run", required=True, help="the job folder whose model is evaluated")
    s.add_argument("--name", required=True, help="benchmark name")
    s.add_argument("--backbone", required=True, help="backbone name")
    s.add_argument("--settings", nargs="+", required=True, help="KIND~SEVERITY items, e.g. gamma~2 gibbs~0.4")
    s.add_argument("--seed", type=int, default=0, help="seed of the random bias field")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--device", default="auto")
    s.add_argument("--out", required=True, help="parquet of Dice per region and setting")
    stats_args(s)

    s = step("segmentation-stats", cmd_segmentation_stats,
             "segmentation Dice vs ratio per benchmark x region (Fig. 3a) and its table (Supp. Table 7)")
    s.add_argument("--runs", nargs="+", required=True, help="segmentation job folders")
    s.add_argument("--settings", type=_spec("SegmentationSpec"), default="{}",
                   help="JSON of the config 'segmentation' section (all_background, adjust)")
    s.add_argument("--out", required=True, help="tidy comparison (parquet)")
    s.add_argument("--table", required=True)
    s.add_argument("--figure", required=True)
    stats_args(s)

    s = step("similarity-maps", cmd_similarity_maps,
             "reference-point similarity maps of one backbone and their tissue-separation AUC (Fig. 6a)")
    s.add_argument("--backbone", type=_spec("BackboneSpec"), required=True,
                   help="JSON of a 'backbones.<name>' entry plus 'name' (weights resolved to a file or null)")
    s.add_argument("--store", required=True, help="downstream volume store")
    s.add_argument("--masks", default="", help="downstream mask store (the tumour reference); absent: none")
    s.add_argument("--modality", default="T1")
    s.add_argument("--n-cases", type=int, default=8)
    s.add_argument("--references", nargs="+", default=["tumour", "csf", "white_matter"])
    s.add_argument("--device", default="auto")
    s.add_argument("--out", required=True, help="per-case AUCs (parquet); the maps go to the same name .npz")

    s = step("similarity-report", cmd_similarity_report,
             "Fig. 6a (backbones x references) and the separation-AUC table with bootstrap CIs over cases")
    s.add_argument("--inputs", nargs="+", required=True, help="similarity-maps parquet files (one per backbone)")
    s.add_argument("--tidy", required=True, help="mean AUC and CI per backbone x reference (parquet)")
    s.add_argument("--table", required=True)
    s.add_argument("--figure", required=True)
    stats_args(s)

    s = step("segmentation-labels", cmd_segmentation_labels, "label map of every benchmark (Supp. Table 5)")
    s.add_argument("--benchmarks", nargs="+", required=True, help="NAME=REGISTRY items")
    s.add_argument("--table", required=True)

    s = step("segmentation-figure", cmd_segmentation_figure, "qualitative segmentation figure (Fig. 2)")
    s.add_argument("--benchmarks", nargs="+", required=True, help="NAME=PREPARED_JSON items")
    s.add_argument("--runs", nargs="+", required=True, help="BENCHMARK:BACKBONE=JOB_DIR items")
    s.add_argument("--cases", type=int, default=1, help="test cases shown per benchmark")
    s.add_argument("--figure", required=True)
    stats_args(s)

    # statistics
    for name, func, help_ in (
            ("task-stats", cmd_task_stats, "comparison statistics, table and figure of one task"),
            ("strata-stats", cmd_strata_stats, "age-stratified comparison at full supervision (Holm within strata)"),
            ("km-stats", cmd_km_stats, "Kaplan-Meier risk stratification with log-rank p (survival tasks)")):
        s = step(name, func, help_)
        task_arg(s)
        s.add_argument("--runs", nargs="+", required=True, help="run directories (one per backbone)")
        outputs(s)
        stats_args(s)

    s = step("knn-stats", cmd_knn_stats, "kNN accuracy table and figure of one task")
    task_arg(s)
    s.add_argument("--inputs", nargs="+", required=True, help="knn.parquet files (one per backbone)")
    outputs(s)
    stats_args(s)

    s = step("perturbation-stats", cmd_perturbation_stats,
             "perturbation table and grouped bars (Fig. 5) with tests vs the reference per severity (Supp. Table 18)")
    s.add_argument("--inputs", nargs="+", required=True)
    s.add_argument("--predictions", nargs="*", default=[],
                   help="per-item predictions of evaluate-perturbed: adds the pairwise tests")
    s.add_argument("--comparison", default="", help="tidy pairwise tests (parquet)")
    outputs(s, out_dir=False)
    stats_args(s)

    s = step("finetune-table", cmd_finetune_table, "frozen vs fine-tuned table (Supplementary Table 6)")
    s.add_argument("--backbone", required=True)
    s.add_argument("--frozen", nargs="*", default=[], help="frozen run directories, one per task")
    s.add_argument("--finetuned", nargs="*", default=[], help="fine-tuned run directories, same order")
    s.add_argument("--segmentation-frozen", nargs="*", default=[],
                   help="frozen segmentation job folders (one per benchmark, ratio and seed)")
    s.add_argument("--segmentation-finetuned", nargs="*", default=[], help="their fine-tuned jobs, same order")
    s.add_argument("--table", required=True)
    stats_args(s)

    # report
    s = step("cka-figure", cmd_cka_figure, "CKA heatmaps")
    s.add_argument("--inputs", nargs="+", required=True)
    s.add_argument("--figure", required=True)
    stats_args(s)

    s = step("composite-figure", cmd_composite_figure, "Fig. 3 panels b-l in one figure (beside the per-task figures)")
    s.add_argument("--comparisons", nargs="+", required=True, help="comparison.parquet of each task")
    s.add_argument("--descriptions", type=_json, default={}, help="JSON {task: panel title}")
    s.add_argument("--figure", required=True)
    stats_args(s)

    s = step("summary-table", cmd_summary_table, "headline table over all tasks")
    s.add_argument("--comparisons", nargs="*", default=[])
    s.add_argument("--knn", nargs="*", default=[])
    s.add_argument("--controls", nargs="*", default=[],
                   help="controls.parquet of each task (pretrained backbones vs their random-init controls)")
    s.add_argument("--training-n", nargs="*", default=[],
                   help="training_n.parquet of each task (marks comparisons of heads that kept their first epoch)")
    s.add_argument("--out", required=True)
    stats_args(s)

    s = step("corpus-figure", cmd_corpus_figure,
             "pretraining corpus composition: volumes and slices per dataset and modality (Fig. 1a)")
    s.add_argument("--manifests", nargs="+", required=True, help="NAME=MANIFEST items, one per pretraining dataset")
    s.add_argument("--stores", nargs="*", default=[], help="NAME=SLICE_STORE items (datasets with a slice store)")
    s.add_argument("--table", required=True)
    s.add_argument("--figure", required=True)

    s = step("dataset-table", cmd_dataset_table, "the run's datasets: access, role, counts, splits (Supp. Table 2)")
    s.add_argument("--datasets", type=_json, required=True,
                   help="JSON list of the config's dataset entries, each with its 'name'")
    s.add_argument("--manifests", nargs="+", required=True, help="NAME=MANIFEST items")
    s.add_argument("--roles", type=_json, default={}, help="JSON {dataset: [role, ...]}")
    s.add_argument("--table", required=True)

    s = step("protocol-deviations", cmd_protocol_deviations,
             "where a config departs from the paper's stated protocol (results/tables/protocol_deviations.md)")
    s.add_argument("--config", required=True, help="a config file, or the validated config values as JSON")
    s.add_argument("--source", default="", help="the config's name in the document (default: --config)")
    s.add_argument("--out", required=True)

    s = step("pretrain-curves", cmd_pretrain_curves, "pretraining loss vs ln K and teacher entropy of every run")
    s.add_argument("--inputs", nargs="+", required=True, help="summary.json of each pretraining run")
    s.add_argument("--figure", required=True, help="figure path (.png; .pdf written beside it)")
    s.add_argument("--table", required=True, help="Markdown table of the final values")
    s.add_argument("--labels", type=_json, default={}, help="JSON {run or backbone: display name}")

    s = step("bench", cmd_bench, "benchmarks: extraction vs roofline, heads, statistics, SSL training, demo DAG")
    s.add_argument("--out", default="results/bench")
    s.add_argument("--only", nargs="*", default=[], help="subset of: extraction heads stats pretrain segmentation demo")
    s.add_argument("--benchmarks", default=None,
                   help="demo: Snakemake benchmark folder of a demo run to analyse (default: results/benchmarks "
                        "when it holds files, else the demo runs from scratch first)")
    s.add_argument("--fresh-processes", action="store_true",
                   help="demo: the run started every job in a fresh process (plain snakemake, not `make demo`'s "
                        "brainfm preload); fixed costs are counted accordingly")

    s = step("preload", cmd_preload, "run a command (e.g. snakemake) whose brainfm steps start warm: torch, timm, "
                                     "pandas... imported once, each step forked from that process (local runs)")
    s.add_argument("command_line", nargs=argparse.REMAINDER, metavar="-- COMMAND ...")

    s = step("plan", cmd_plan, "before a run: datasets and weights found or missing, jobs per rule, SLURM "
                               "submissions, projected disk and GPU-hours")
    s.add_argument("--config", default="config/paper.yaml")
    s.add_argument("-d", "--directory", default=None,
                   help="working directory the config's relative paths are read from (default: here)")
    s.add_argument("--snakefile", default=None, help="default: workflow/Snakefile here or in the brainfm checkout")
    s.add_argument("--profile", default=None,
                   help="SLURM profile whose group-components decide the submissions (default: profiles/slurm)")
    s.add_argument("--bench", default="results/bench", help="brainfm bench results to project GPU time from")
    s.add_argument("--no-dry-run", dest="dry_run", action="store_false",
                   help="skip Snakemake's dry run (no job or submission counts)")
    s.add_argument("--pretrain-slices", type=int, default=None,
                   help="slices in the pretraining corpus (default: the paper's, about 6.6 M)")
    s.add_argument("--json", action="store_true", help="the report as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] != ["preload"]:
        from brainfm.preload import delegate

        code = delegate(sys.argv[1:])  # run by a preloading process when one serves this run
        if code is not None:
            return code
    try:
        args = build_parser().parse_args(argv)
    except BrainfmError as exc:  # a spec argument that fails its checks
        print(f"brainfm: error: {exc}", file=sys.stderr)
        return 2
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
