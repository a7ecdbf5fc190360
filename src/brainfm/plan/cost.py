"""Projected disk and GPU time of a config, every number with the source it comes from.

Disk is the float16 stores of :mod:`brainfm.preprocess` (bytes per volume from
:func:`~brainfm.preprocess.pipeline.projected_store_bytes`) times a number of volumes: for the
pretraining corpus the paper's slice count (about 6.6 M slices, §4.1.1; no per-dataset counts are
published), for other datasets the counts of their registry entries (``paper:``).

GPU time is work (slices to encode, images to train on) divided by a throughput: measured by
``brainfm bench`` (``results/bench/*.json``) when such a file exists, else a published figure named
as such, else not projected. A CPU benchmark projects hours on that CPU and says so. The GPU-hours
the config *requests* (GPUs x walltime of each job, from the dry run's job resources) are given
beside them: that is what a cluster reserves, whatever the jobs then use.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from brainfm.config import RECIPES, Config

__all__ = ["PAPER_PRETRAIN_SLICES", "PAPER_CORPUS_SOURCE", "PUBLISHED_DINO_IMG_PER_S", "store_bytes",
           "volumes_of", "dataset_volumes", "disk_projection", "read_benchmarks", "gpu_projection",
           "runtime_minutes"]

#: §4.1.1: "about 6.6 million 2D MRI slices extracted from over 51k 3D volumes"
PAPER_PRETRAIN_SLICES = 6_600_000
PAPER_CORPUS_SOURCE = "paper §4.1.1: about 6.6 M axial slices from over 51k volumes"
#: the DINO training throughput a projection falls back to without a CUDA benchmark
PUBLISHED_DINO_IMG_PER_S = (112.0, "published figure: DINOv3 ViT-L/16 pretraining, about 112 images/s per GPU "
                                   "(as quoted by brainfm bench; not measured here). A ViT-L figure: a ViT-B step "
                                   "costs less, so for a ViT-B run this overstates the time")


# ----------------------------------------------------------------------------- volumes and disk
def store_bytes(cfg: Config) -> dict[str, float]:
    """Bytes per volume of each store product, and per pretraining slice, under ``cfg``'s protocol."""
    from brainfm.preprocess.pipeline import projected_store_bytes

    protocol = cfg.preprocess.protocol.as_mapping()
    one = projected_store_bytes(1, protocol)
    n = protocol["pretrain_slices"]["n"]
    return {"downstream": one["downstream"], "pretrain": one["pretrain"], "pretrain_slice": one["pretrain"] / n,
            "pretrain_slices_per_volume": n, "downstream_slices_per_volume": protocol["downstream_shape"][0]}


def volumes_of(entry: Any) -> tuple[int | None, str]:
    """Images (volumes) of a registry entry from its ``paper:`` counts, and where the number comes from."""
    paper = entry.paper
    k = len(entry.modalities)
    if paper.get("n_images"):
        return int(paper["n_images"]), f"registry {entry.name}: paper n_images"
    if paper.get("modality_counts"):
        return int(sum(paper["modality_counts"].values())), f"registry {entry.name}: paper modality_counts"
    if paper.get("n_subjects"):
        return int(paper["n_subjects"]) * k, f"registry {entry.name}: paper n_subjects x {k} modalities"
    if paper.get("n_train") and paper.get("n_test"):
        return (int(paper["n_train"]) + int(paper["n_test"])) * k, \
            f"registry {entry.name}: paper n_train + n_test x {k} modalities"
    return None, f"registry {entry.name}: the paper gives no count for this dataset"


def dataset_volumes(cfg: Config, name: str) -> tuple[int | None, str]:
    """Volumes of a config dataset: a real one's registry counts, a union's parts summed, else unknown."""
    from brainfm.data.datasets import load_dataset_entry

    spec = cfg.datasets[name]
    if spec.is_real:
        return volumes_of(load_dataset_entry(spec.registry))
    if spec.source == "union":
        parts = [dataset_volumes(cfg, p) for p in spec.parts]
        unknown = [b for n, b in parts if n is None]
        if unknown:
            return None, "; ".join(unknown)
        return sum(n for n, _ in parts if n is not None), " + ".join(b for _, b in parts)
    if spec.source == "subset":
        return None, f"training subjects of {spec.of}: their number follows from the task's split"
    return None, f"{spec.source} dataset: no published count"


def _row(rule: str, what: str, n_bytes: float | None, basis: str) -> dict[str, Any]:
    return {"rule": rule, "what": what, "bytes": None if n_bytes is None else int(n_bytes), "basis": basis}


def disk_projection(cfg: Config, pretrain_slices: int = PAPER_PRETRAIN_SLICES) -> dict[str, Any]:
    """Disk of the preprocessed stores per rule: the pretraining corpus, task datasets, perturbed copies."""
    per = store_bytes(cfg)
    rows = []
    corpus = set(cfg.pretrain_datasets())
    products = {RECIPES[r.recipe].product for r in cfg.pretrain.values()}
    corpus_volumes = pretrain_slices / per["pretrain_slices_per_volume"]
    if corpus and "pretrain" in products:
        rows.append(_row("preprocess", f"pretraining slice store of the corpus ({len(corpus)} datasets)",
                         pretrain_slices * per["pretrain_slice"],
                         f"{pretrain_slices:,} slices ({PAPER_CORPUS_SOURCE}) x {per['pretrain_slice']:,.0f} B per "
                         "slice (projected_store_bytes)"))
    if corpus and "downstream" in products:
        rows.append(_row("preprocess", "volume store of the corpus (recipes that train on volumes)",
                         corpus_volumes * per["downstream"],
                         f"{pretrain_slices:,} slices / {per['pretrain_slices_per_volume']} per volume = "
                         f"{corpus_volumes:,.0f} volumes x {per['downstream']:,} B (projected_store_bytes)"))
    downstream = sorted((set(cfg.task_datasets()) | set(cfg.analysis.cka.datasets)) - corpus)
    for name in downstream:
        n, basis = dataset_volumes(cfg, name)
        rows.append(_row("preprocess", f"volume store of {name}", None if n is None else n * per["downstream"],
                         f"{n:,} volumes ({basis}) x {per['downstream']:,} B" if n is not None else basis))
    settings = cfg.perturbation_settings()
    for name in sorted({cfg.tasks[t].dataset for t in cfg.perturbations.tasks}):
        n, basis = dataset_volumes(cfg, name)
        rows.append(_row("preprocess_perturbed", f"{len(settings)} perturbed volume stores of {name}",
                         None if n is None else len(settings) * n * per["downstream"],
                         f"{len(settings)} settings x {n:,} volumes ({basis}) x {per['downstream']:,} B"
                         if n is not None else basis))
    known = sum(r["bytes"] for r in rows if r["bytes"] is not None)
    pretrain_store = pretrain_slices * per["pretrain_slice"]
    return {"rows": rows, "known_bytes": int(known), "unknown": [r["what"] for r in rows if r["bytes"] is None],
            "per_volume_bytes": {"downstream": per["downstream"], "pretrain": per["pretrain"]},
            "pretrain_store": {"slices": int(pretrain_slices), "bytes_per_slice": per["pretrain_slice"],
                               "bytes": int(pretrain_store), "tb": pretrain_store / 1e12,
                               "tib": pretrain_store / 2 ** 40, "source": PAPER_CORPUS_SOURCE},
            "features": "extract_features/extract_perturbed write (volumes, dim) float32 arrays per layer: "
                        "kilobytes per volume, negligible next to the stores"}


# ----------------------------------------------------------------------------- benchmarks
def read_benchmarks(bench_dir: str | Path) -> dict[str, Any]:
    """The ``brainfm bench`` reports in ``bench_dir`` this plan can use (absent or unreadable: left out)."""
    out: dict[str, Any] = {}
    for name in ("extraction", "pretrain"):
        path = Path(bench_dir) / f"{name}.json"
        try:
            out[name] = {"path": str(path), **json.loads(path.read_text())}
        except (OSError, ValueError):
            continue
    return out


def _extraction_rate(bench: Mapping[str, Any], arch: str | None, dtype: str) -> tuple[float, str, str] | None:
    """(slices/s, unit, source) of ``arch`` at ``dtype`` in an extraction benchmark, or None."""
    ext = bench.get("extraction")
    if not ext or not arch:
        return None
    for r in ext.get("results", []):
        if r.get("arch") == arch and r.get("dtype") == dtype and r.get("slices_per_s"):
            device = ext.get("device", "?")
            name = ext.get("device_name", device)
            cpu = not str(device).startswith("cuda")
            unit = f"hours on {name} (CPU figure: no CUDA figure)" if cpu else "GPU-hours"
            src = (f"measured: {ext['path']} ({arch} {dtype}, {r['slices_per_s']} slices/s on {name}, "
                   f"{ext.get('img_size', '?')} px, bare forward)")
            return float(r["slices_per_s"]), unit, src
    return None


def _dino_rate(bench: Mapping[str, Any]) -> tuple[float, str]:
    """(images/s per GPU, source) for DINO training: a CUDA benchmark of the paper model, else published."""
    pre = bench.get("pretrain")
    for r in (pre or {}).get("runs", []):
        if r.get("device") == "cuda" and r.get("img_per_s"):
            return float(r["img_per_s"]), (f"measured: {pre['path']} ({r.get('what', 'CUDA run')}, "
                                           f"{r['img_per_s']:.1f} images/s on one GPU)")
    note = " (results/bench/pretrain.json has only a CPU run of the demo model, not used)" if pre else ""
    return PUBLISHED_DINO_IMG_PER_S[0], PUBLISHED_DINO_IMG_PER_S[1] + note


# ----------------------------------------------------------------------------- GPU time
def runtime_minutes(value: Any) -> float | None:
    """A Snakemake ``runtime`` (minutes, or a string like ``"2d"``, ``"12h"``, ``"90m"``) in minutes."""
    if isinstance(value, (int, float)):
        return float(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)?\s*", str(value))
    if not m:
        return None
    scale = {"s": 1 / 60, "m": 1, "min": 1, None: 1, "h": 60, "d": 1440, "w": 10080}[m.group(2)]
    return float(m.group(1)) * scale


def _gpus(resources: Mapping[str, Any]) -> int:
    """GPUs of a job: ``gpu`` on one node, or ``gres: gpu:N`` per node on several (rules/pretrain.smk)."""
    if resources.get("gpu"):
        return int(resources["gpu"])
    m = re.fullmatch(r"gpu(?::[^:]+)?:(\d+)", str(resources.get("gres", "")))
    return int(m.group(1)) * int(resources.get("nodes", 1) or 1) if m else 0


def _requested(jobs: Sequence[Mapping[str, Any]], default_runtime: float) -> tuple[float, str]:
    hours = 0.0
    defaulted = 0
    for job in jobs:
        minutes = runtime_minutes(job["resources"].get("runtime")) if "runtime" in job["resources"] else None
        if minutes is None:
            minutes, defaulted = default_runtime, defaulted + 1
        hours += _gpus(job["resources"]) * minutes / 60
    basis = "GPUs x runtime of each job (the rules' resources from the config)"
    if defaulted:
        basis += f"; {defaulted} job(s) set no runtime: the profile's default {default_runtime:g} min"
    return hours, basis


def gpu_projection(cfg: Config, jobs: Sequence[Mapping[str, Any]] | None, bench: Mapping[str, Any], *,
                   default_runtime: float = 60.0) -> list[dict[str, Any]]:
    """Per GPU rule (per run for pretraining): requested and projected hours, each with its source.

    ``jobs`` is the dry run's job list (:func:`brainfm.plan.jobs.planned_jobs`); without it only
    pretraining, whose work follows from the config alone, is projected.
    """
    rows = []
    by_rule: dict[str, list[Mapping[str, Any]]] = {}
    for job in jobs or ():
        if _gpus(job["resources"]):
            by_rule.setdefault(job["rule"], []).append(job)
    for name, run in cfg.pretrain.items():
        run_jobs = [j for j in by_rule.get("pretrain", []) if j["wildcards"].get("run") == name]
        rows.append(_pretrain_row(name, run, run_jobs, bench, default_runtime, jobs is not None))
    per = store_bytes(cfg)
    dtype = "fp32" if cfg.precision == "fp32" else "bf16"  # auto: bf16 on the GPUs a plan is for
    for rule in ("extract_features", "extract_perturbed"):
        if rule in by_rule:
            rows.append(_extraction_row(cfg, rule, by_rule[rule], bench, dtype, per, default_runtime))
    for rule in sorted(set(by_rule) - {"pretrain", "extract_features", "extract_perturbed"}):
        hours, basis = _requested(by_rule[rule], default_runtime)
        rows.append({"rule": rule, "jobs": len(by_rule[rule]), "requested_gpu_hours": hours, "requested_basis": basis,
                     "projected_hours": None, "unit": None,
                     "source": "not projected: brainfm bench has no figure for this step"})
    return rows


def _pretrain_row(name: str, run: Any, run_jobs: Sequence[Mapping[str, Any]], bench: Mapping[str, Any],
                  default_runtime: float, have_jobs: bool) -> dict[str, Any]:
    gpus = int(run.resources.get("gpu", 0)) * run.nnodes
    row: dict[str, Any] = {"rule": "pretrain", "run": name, "recipe": run.recipe, "jobs": len(run_jobs),
                           "gpus": gpus}
    if have_jobs:
        row["requested_gpu_hours"], row["requested_basis"] = _requested(run_jobs, default_runtime)
    else:
        minutes = runtime_minutes(run.resources.get("runtime")) or default_runtime
        row["requested_gpu_hours"] = gpus * minutes / 60
        row["requested_basis"] = "GPUs x runtime of the run (its config resources)"
    row.update(projected_hours=None, unit=None, source=f"not projected: brainfm bench has no {run.recipe} figure")
    if run.recipe != "dino" or not gpus:
        return row
    from brainfm.ssl.entry import dino_stage_configs

    rate, source = _dino_rate(bench)
    stages = dino_stage_configs(run)
    world = run.nproc * run.nnodes
    first = stages[0]
    images = first.iters * first.batch_size * world
    hours = images / rate / 3600
    later = [f"stage {s.stage}: {s.iters:,} iterations x {s.batch_size} x {world} processes, "
             f"{s.upsample_to or s.global_size} px (no throughput figure at that size: not projected)"
             for s in stages[1:]]
    wall = hours / gpus
    row.update(projected_hours=hours, unit="GPU-hours",
               work=f"stage {first.stage}: {first.iters:,} iterations x {first.batch_size} images x {world} "
                    f"processes = {images:,} images", source=source, not_projected=later, wall_hours=wall)
    minutes = runtime_minutes(run.resources.get("runtime"))
    if minutes:
        over = wall > minutes / 60
        row["runtime_note"] = (f"projected wall time of stage {first.stage} ({wall:,.0f} h) "
                               f"{'exceeds' if over else 'fits in'} the job's runtime ({minutes / 60:,.0f} h)"
                               + ("; a job stopped at its walltime resumes from its checkpoint when rerun"
                                  if over else ""))
    return row


def _extraction_row(cfg: Config, rule: str, rule_jobs: Sequence[Mapping[str, Any]], bench: Mapping[str, Any],
                    dtype: str, per: Mapping[str, float], default_runtime: float) -> dict[str, Any]:
    requested, basis = _requested(rule_jobs, default_runtime)
    hours = 0.0
    projected = 0
    units, sources, missing = set(), set(), set()
    volumes: dict[str, tuple[int | None, str]] = {}
    for job in rule_jobs:
        backbone, dataset = job["wildcards"]["backbone"], job["wildcards"]["dataset"]
        arch = cfg.backbones[backbone].args.get("arch")
        rate = _extraction_rate(bench, arch, dtype)
        if dataset not in volumes:
            volumes[dataset] = dataset_volumes(cfg, dataset)
        n, _ = volumes[dataset]
        if rate is None:
            missing.add(f"{backbone} (no {arch or cfg.backbones[backbone].encoder} {dtype} figure)")
            continue
        if n is None:
            missing.add(f"{dataset} (no volume count)")
            continue
        slices = n * per["downstream_slices_per_volume"]
        hours += slices / rate[0] / 3600
        units.add(rate[1])
        sources.add(rate[2])
        projected += 1
    if not bench.get("extraction"):
        source = "not projected: no results/bench/extraction.json (run `make bench` on the target GPU)"
        missing = set()
    else:
        source = "; ".join(sorted(sources)) or "not projected"
    return {"rule": rule, "jobs": len(rule_jobs), "requested_gpu_hours": requested, "requested_basis": basis,
            "projected_hours": hours if projected else None, "unit": " / ".join(sorted(units)) or None,
            "jobs_projected": projected, "source": source,
            "work": f"volumes (registry counts) x {per['downstream_slices_per_volume']} slices per volume",
            "not_projected": sorted(missing)}
