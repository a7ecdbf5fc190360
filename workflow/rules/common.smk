# The config -> typed specs (brainfm.config, where every value is validated and defaulted once)
# -> target paths (brainfm.config.ResultsLayout). Keep this cheap: it runs on every (remote) job
# start, so no globbing, no pandas, no torch here; brainfm.config imports neither.
import os
import re

from snakemake.exceptions import WorkflowError

from brainfm.config import as_json, load_config
from brainfm.errors import ConfigError


def _config_source():
    files = list(workflow.overwrite_configfiles or workflow.configfiles)
    return str(files[-1]) if files else "config"


try:
    CFG = load_config(config, source=_config_source())
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None
config.update(CFG.values)  # report templates read defaulted values from snakemake.config
L = CFG.layout


def _alt(names):
    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"


wildcard_constraints:
    dataset=_alt(CFG.datasets),
    phantom=_alt(CFG.datasets_of("phantom")),
    real=_alt(CFG.datasets_of("local") + CFG.datasets_of("download")),
    union=_alt(CFG.datasets_of("union")),
    subset=_alt(CFG.datasets_of("subset")),
    backbone=_alt(CFG.backbones),
    task=_alt(CFG.tasks),
    run=_alt(CFG.pretrain),
    perturbation=_alt(s.tag for s in CFG.perturbation_settings()),


# Order among ready jobs (higher first): long jobs start as soon as their inputs exist, so that the
# many short head and statistics jobs fill the other cores around them; with equal priorities the
# demo ended on its two fine-tuning jobs running one after the other, alone, for two minutes.
PRIORITY = {"pretrain": 50, "prepare_segmentation": 40, "finetune": 30, "segment": 30, "segment_finetune": 30,
            "segment_perturbed": 20, "phantom_dataset": 10, "preprocess": 10, "extract_features": 5,
            "extract_perturbed": 5}

STATS = CFG.stats.to_json()
LABELS = as_json(CFG.labels())


def resources_of(section, key):
    """A resource of a config section (its defaults come from the schema)."""
    return section.resources[key]


def pretrain_multinode(wc, value):
    """``value`` for a multi-node pretraining job, unset (None) on one node (see rules/pretrain.smk)."""
    return value if CFG.pretrain[wc.run].nnodes > 1 else None


# ---------------------------------------------------------------- rule inputs
def task_inputs(wc):
    dataset = CFG.tasks[wc.task].dataset
    return {
        "features": L.features(wc.backbone, dataset),
        "manifest": L.manifest(dataset),
        "pretrain": CFG.pretrain_manifests_for(dataset),
        "scan_leakage": L.scan_leakage(wc.task),
    }


def scan_leakage_inputs(wc):
    dataset = CFG.tasks[wc.task].dataset
    return {
        "manifest": L.manifest(dataset),
        "fingerprints": L.preprocess_report(dataset),
        "pretrain": [L.preprocess_report(d) for d in CFG.pretrain_datasets()],
    }


def pretrain_inputs(wc):
    run = CFG.pretrain[wc.run]
    return [L.preprocess_report(d) for d in run.datasets] + ([run.init] if run.init else [])


def perturbed_inputs(wc):
    dataset = CFG.tasks[wc.task].dataset
    return {
        "features": L.features(wc.backbone, dataset),
        "manifest": L.manifest(dataset),
        "perturbed": [L.features(wc.backbone, dataset, s.tag) for s in CFG.perturbation_settings()],
    }


def finetune_inputs(wc):
    dataset = CFG.tasks[wc.task].dataset
    return {
        "store": L.preprocess_report(dataset),
        "manifest": L.manifest(dataset),
        "weights": CFG.backbone_weights(wc.backbone),
        "pretrain": CFG.pretrain_manifests_for(dataset),
    }


def dataset_roles():
    """What each dataset is used for (Supp. Table 2's role column)."""
    roles = {n: [] for n in CFG.datasets}
    for r, run in CFG.pretrain.items():
        for d in run.datasets:
            roles[d].append(f"pretraining ({r})")
    for t, spec in CFG.tasks.items():
        roles[spec.dataset].append(f"task {t}")
    for n, d in CFG.datasets.items():
        for part in d.parts:
            roles[part].append(f"part of {n}")
    return roles


def run_dirs(task):
    return [L.runs(task, b) for b in CFG.tasks[task].backbones]


# ---------------------------------------------------------------- segmentation (rules/segmentation.smk)
SEG = CFG.segmentation
SEG_RATIOS = [f"{r:g}" for r in SEG.ratios]


def segmentation_runs():
    """Job folders of the whole grid (benchmarks x backbones x ratios x seeds)."""
    return [L.segmentation_run(bm, b, r, s) for bm, b, r, s in SEG.cells()]


def segmentation_finetune_pairs(backbone):
    """Supp. Table 6's segmentation rows of ``backbone``: (frozen job, fine-tuned job) folders."""
    return [(L.segmentation_run(bm, b, r, s), L.segmentation_finetune_run(bm, b, r, s))
            for bm, b, r, s in CFG.segmentation_finetune_cells() if b == backbone]


def segment_inputs(wc):
    return {
        "benchmark": L.segmentation_prepared(wc.benchmark),
        "weights": CFG.backbone_weights(wc.backbone),
        "pretrain": CFG.segmentation_pretrain_manifests(wc.benchmark),
    }


def segmentation_figure_runs():
    """BENCHMARK:BACKBONE=JOB_DIR of the full-data, first-seed jobs shown in Fig. 2."""
    top, seed = max(SEG.ratios), min(SEG.seeds)
    return {
        f"{bm}:{b}": L.segmentation_run(bm, b, top, seed)
        for bm in CFG.segmentation_benchmarks()
        for b in SEG.backbones
    }


# ---------------------------------------------------------------- final targets
def all_targets():
    targets = []
    for task in CFG.head_tasks():
        targets += [L.table(task), L.figure(f"ratio_{task}")]
    for task in CFG.knn_tasks():
        targets += [L.table(task), L.figure(f"knn_{task}")]
    targets += [L.figure(f"strata_{task}") for task in CFG.strata_tasks()]
    targets += [L.figure(f"km_{task}") for task in CFG.survival_tasks()]
    if CFG.analysis.cka.datasets:
        targets.append(L.figure("cka"))
    if CFG.similarity_backbones():
        targets += [L.figure("similarity"), L.table("similarity")]
    if CFG.perturbations.tasks or CFG.segmentation_perturbed():
        targets += [L.table("perturbations"), L.figure("perturbations")]
    targets += [L.table(f"finetune_{b}") for b in CFG.finetune_backbones()]
    if CFG.segmentation.enabled:
        targets += [L.table("segmentation_dice"), L.figure("segmentation_dice"), L.table("segmentation_labels"),
                    L.figure("segmentation_examples")]
    targets.append(L.table("summary"))
    if CFG.head_tasks():
        targets.append(L.figure("fig3"))
    targets.append(L.table("protocol_deviations"))
    targets.append(L.table("datasets"))
    if CFG.pretrain_datasets():
        targets.append(L.figure("corpus"))

    if CFG.pretrain:
        targets.append(L.figure("pretrain_curves"))
    return targets
