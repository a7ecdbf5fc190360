# Config validation and the experiment grid -> target paths. Keep this cheap: it runs on every
# (remote) job start, so no globbing, no pandas, no imports of torch here.
import json
import os
import re

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml", set_default=True)


DATASETS = config["datasets"]
BACKBONES = config["backbones"]
PRETRAIN = config.get("pretrain", {})
TASKS = config.get("tasks", {})
PERTURB = config.get("perturbations", {})
FINETUNE = config.get("finetune", {})

PHANTOM_DATASETS = sorted(d for d, v in DATASETS.items() if v["source"] == "phantom")
UNION_DATASETS = sorted(d for d, v in DATASETS.items() if v["source"] == "union")
SUBSET_DATASETS = sorted(d for d, v in DATASETS.items() if v["source"] == "subset")
REAL_DATASETS = sorted(d for d, v in DATASETS.items() if v["source"] in ("local", "download"))
PERTURB_KINDS = sorted(PERTURB.get("grid", {}))


def _alt(names):
    return "|".join(re.escape(n) for n in names) if names else "(?!x)x"


wildcard_constraints:
    dataset=_alt(DATASETS),
    phantom=_alt(PHANTOM_DATASETS),
    real=_alt(REAL_DATASETS),
    union=_alt(UNION_DATASETS),
    subset=_alt(SUBSET_DATASETS),
    backbone=_alt(BACKBONES),
    task=_alt(TASKS),
    run=_alt(PRETRAIN),
    kind=_alt(PERTURB_KINDS),
    severity=r"[0-9.]+",


def fail(msg):
    raise WorkflowError(f"config error: {msg}")


def to_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def fmt_ratio(r):
    return f"{float(r):g}"


# ---------------------------------------------------------------- consistency checks
for _name, _run in PRETRAIN.items():
    for _d in _run["datasets"]:
        if _d not in DATASETS:
            fail(f"pretrain.{_name}: dataset '{_d}' is not declared under datasets")
for _name, _ds in DATASETS.items():
    for _p in _ds.get("parts", []):
        if _p not in DATASETS:
            fail(f"datasets.{_name}: part '{_p}' is not declared under datasets")
for _name in SUBSET_DATASETS:
    _ds = DATASETS[_name]
    if _ds.get("of") not in DATASETS or _ds.get("train_of") not in TASKS:
        fail(f"datasets.{_name}: a subset needs 'of' (a dataset) and 'train_of' (a task)")
    if TASKS[_ds["train_of"]]["dataset"] != _ds["of"]:
        fail(f"datasets.{_name}: task '{_ds['train_of']}' does not use dataset '{_ds['of']}'")
for _name, _task in TASKS.items():
    if _task["dataset"] not in DATASETS:
        fail(f"tasks.{_name}: dataset '{_task['dataset']}' is not declared under datasets")
    for _b in _task.get("backbones", []):
        if _b not in BACKBONES:
            fail(f"tasks.{_name}: backbone '{_b}' is not declared under backbones")
for _name, _bb in BACKBONES.items():
    _w = _bb.get("weights")
    if _w and _w.startswith("pretrain:") and _w.split(":", 1)[1] not in PRETRAIN:
        fail(f"backbones.{_name}: weights '{_w}' names no run under pretrain")
for _t in FINETUNE.get("tasks", []):
    if _t not in TASKS or TASKS[_t]["kind"] not in ("classification", "regression"):
        fail(f"finetune.tasks: '{_t}' is not a classification or regression task")
for _b in FINETUNE.get("backbones", []):
    if _b not in BACKBONES:
        fail(f"finetune.backbones: '{_b}' is not a backbone")
if config["stats"]["reference"] not in BACKBONES:
    fail(f"stats.reference '{config['stats']['reference']}' is not a backbone")


# ---------------------------------------------------------------- datasets
def dataset_cfg(name):
    return DATASETS[name]


def pretrain_datasets():
    return sorted({d for run in PRETRAIN.values() for d in run["datasets"]})


def task_datasets():
    return sorted({t["dataset"] for t in TASKS.values()})


# DINO streams the N(128, 50)-sampled slice store; SimCLR (3D volumes) and BrainFound (adjacent
# slices stacked as channels) read the uniformly resampled volume store.
RECIPE_PRODUCT = {"dino": "pretrain", "simclr": "downstream", "brainfound": "downstream"}


def products(dataset):
    out = set()
    if dataset in task_datasets():
        out.add("downstream")
    for run in PRETRAIN.values():
        if dataset in run["datasets"]:
            out.add(RECIPE_PRODUCT[run["recipe"]])
    return ",".join(sorted(out)) or "downstream"


def manifest(dataset):
    return f"results/data/{dataset}/manifest.parquet"


def preprocessed(dataset):
    return f"results/preprocessed/{dataset}/report.json"


def cohort(dataset):
    ds = DATASETS[dataset]
    return ds.get("cohort") or (cohort(ds["of"]) if ds["source"] == "subset" else dataset)


def pretrain_manifests_for(dataset):
    """Manifests of pretraining datasets from the same cohort: their subjects must not be test subjects."""
    return sorted({manifest(d) for d in pretrain_datasets() if cohort(d) == cohort(dataset)})


def protocol_json():
    keys = ("cube", "clip_percentiles", "pretrain_slices", "downstream_shape", "blank_threshold",
            "shard_size_volumes", "shard_size_slices")
    return to_json({k: config["preprocess"][k] for k in keys})


# ---------------------------------------------------------------- pretraining and backbones
def pretrain_weights(run):
    return f"results/pretrain/{run}/weights.pth"


def backbone_weights(backbone):
    w = BACKBONES[backbone].get("weights")
    if not w:
        return []
    if w.startswith("pretrain:"):
        return [pretrain_weights(w.split(":", 1)[1])]
    return [w]


def backbone_json(backbone):
    bb = BACKBONES[backbone]
    return to_json({"name": backbone, "encoder": bb["encoder"], "args": bb.get("args", {})})


def backbone_layers(backbone):
    return BACKBONES[backbone].get("layers", config["features"]["layers"])


def resources_of(section, key, default):
    return (section.get("resources") or {}).get(key, default)


def features_dir(backbone, dataset):
    return f"results/features/{backbone}/{dataset}"


def needs_central(dataset):
    return any(t["dataset"] == dataset and t.get("features") == "patch_central" for t in TASKS.values())


# ---------------------------------------------------------------- tasks
def task_backbones(task):
    return TASKS[task].get("backbones") or list(BACKBONES)


def task_ratios(task):
    return [fmt_ratio(r) for r in TASKS[task].get("ratios", config["ratios"])]


def task_seeds(task):
    return TASKS[task].get("seeds", config["seeds"])


def is_knn(task):
    return TASKS[task]["kind"] == "knn"


def head_tasks():
    return [t for t in TASKS if not is_knn(t)]


def knn_tasks():
    return [t for t in TASKS if is_knn(t)]


def strata_tasks():
    return [t for t in head_tasks() if TASKS[t].get("strata")]


def survival_tasks():
    return [t for t in head_tasks() if TASKS[t]["kind"] == "survival"]


def task_json(task):
    spec = dict(TASKS[task])
    spec.pop("backbones", None)
    spec.setdefault("ratios", config["ratios"])
    spec.setdefault("seeds", config["seeds"])
    return to_json(spec)


def run_dirs(task):
    return expand("results/tasks/{task}/{backbone}/runs", task=task, backbone=task_backbones(task))


def knn_outputs(task):
    return expand("results/tasks/{task}/{backbone}/knn.parquet", task=task, backbone=task_backbones(task))


def _is_file_ref(ref):
    return bool(ref) and ref != "none" and not ref.startswith("pretrain:")


def user_weight_owners():
    """Files the user must supply -> (config key, encoder): backbone weights and pretraining inits."""
    owners = {}
    for name, run in PRETRAIN.items():
        if _is_file_ref(run.get("init")):
            owners[run["init"]] = (f"pretrain.{name}.init", "brainfound" if run["recipe"] == "brainfound" else "braindino")
    for name, bb in BACKBONES.items():
        if _is_file_ref(bb.get("weights")):
            owners[bb["weights"]] = (f"backbones.{name}.weights", bb["encoder"])
    return owners


def user_weight_files():
    return sorted(user_weight_owners())


def backbone_labels():
    return {b: v.get("label", b) for b, v in BACKBONES.items()}


def perturb_settings():
    """Non-identity (kind, severity) pairs of the perturbation grid (the clean run is the identity)."""
    identity = {"gamma": 1.0, "gibbs": 0.0, "bias": 0.0}
    return [(k, float(s)) for k in PERTURB_KINDS for s in PERTURB["grid"][k] if float(s) != identity.get(k)]


def perturb_backbones():
    return PERTURB.get("backbones") or list(BACKBONES)


# ---------------------------------------------------------------- rule inputs
def pretrain_inputs(wc):
    run = PRETRAIN[wc.run]
    inputs = [preprocessed(d) for d in run["datasets"]]
    init = run.get("init")
    if init and init.startswith("pretrain:"):
        inputs.append(pretrain_weights(init.split(":", 1)[1]))
    elif _is_file_ref(init):
        inputs.append(init)
    return inputs


def pretrain_gpu(wc):
    return resources_of(PRETRAIN[wc.run], "gpu", 0)


def pretrain_nodes(wc):
    return resources_of(PRETRAIN[wc.run], "nodes", 1)


def pretrain_multinode(wc, value):
    """`value` for a multi-node pretraining job, unset (None) on one node (see rules/pretrain.smk)."""
    return value if pretrain_nodes(wc) > 1 else None


def task_inputs(wc):
    dataset = TASKS[wc.task]["dataset"]
    return {
        "features": features_dir(wc.backbone, dataset),
        "manifest": manifest(dataset),
        "pretrain": pretrain_manifests_for(dataset),
    }


def perturbed_inputs(wc):
    dataset = TASKS[wc.task]["dataset"]
    return {
        "features": features_dir(wc.backbone, dataset),
        "manifest": manifest(dataset),
        "perturbed": [
            f"results/perturbed/{k}~{fmt_ratio(s)}/features/{wc.backbone}/{dataset}" for k, s in perturb_settings()
        ],
    }


def cka_inputs(wc):
    return [features_dir(b, wc.dataset) for b in BACKBONES]


# ---------------------------------------------------------------- final targets
def finetune_json():
    return to_json({k: v for k, v in FINETUNE.items() if k not in ("tasks", "backbones", "resources")})


def finetune_backbones():
    return FINETUNE.get("backbones", []) if FINETUNE.get("tasks") else []


def finetune_inputs(wc):
    dataset = TASKS[wc.task]["dataset"]
    return {
        "store": preprocessed(dataset),
        "manifest": manifest(dataset),
        "weights": backbone_weights(wc.backbone),
        "pretrain": pretrain_manifests_for(dataset),
    }


def all_targets():
    targets = []
    for task in head_tasks():
        targets += [f"results/tables/{task}.md", f"results/figures/ratio_{task}.png"]
    for task in knn_tasks():
        targets += [f"results/tables/{task}.md", f"results/figures/knn_{task}.png"]
    targets += [f"results/figures/strata_{task}.png" for task in strata_tasks()]
    targets += [f"results/figures/km_{task}.png" for task in survival_tasks()]
    if config["analysis"].get("cka", {}).get("datasets"):
        targets.append("results/figures/cka.png")
    if PERTURB.get("tasks"):
        targets += ["results/tables/perturbations.md", "results/figures/perturbations.png"]
    targets += [f"results/tables/finetune_{b}.md" for b in finetune_backbones()]
    targets.append("results/tables/summary.md")
    return targets
