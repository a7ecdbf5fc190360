"""Where the demo's time goes: per-rule wall and CPU time, and the fixed cost every job pays.

``brainfm bench --only demo`` reads the Snakemake benchmark files of a demo run (one TSV per job
under ``results/benchmarks/<rule>/``, written by every rule's ``benchmark:``) and sets each rule's
time against the fixed cost of one of its jobs, measured here in fresh processes the way a job
starts: the interpreter, ``import brainfm.cli``, the modules the step's subcommand imports
(torch, timm, MONAI, pandas, matplotlib...), and for extraction and fine-tuning the model build
and the store open. Everything else a job spends is work. With no benchmark files to read (no
demo run yet) it runs the demo DAG from scratch in a temporary directory first (minutes).

Writes ``<out_dir>/demo.json`` and ``<out_dir>/demo.md``. Job times come from a loaded or a quiet
machine alike; the report records the load average so two reports can be compared honestly.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from brainfm.atomic import write_json, write_text
from brainfm.errors import InputError

__all__ = ["STEP_IMPORTS", "read_benchmarks", "measure_fixed_costs", "analyse", "format_markdown", "logged_cores",
           "run", "headline"]

_STATS = ("brainfm.stats.runners",)
_FEATURES_READ = ("brainfm.features.store",)
#: rule -> the modules its ``brainfm`` subcommand imports before doing any work (cli.py's cmd_* and
#: the imports inside the step function), so that importing them costs what a job pays at start
STEP_IMPORTS: dict[str, tuple[str, ...]] = {
    "phantom_dataset": ("brainfm.data.phantom",),
    "real_dataset": ("brainfm.data.datasets",),
    "union_dataset": ("brainfm.data.manifest",),
    "subset_dataset": ("brainfm.tasks.runs",),
    "user_weights": ("brainfm.models.registry",),
    "preprocess": ("brainfm.preprocess.pipeline", "brainfm.data.manifest"),
    "preprocess_perturbed": ("brainfm.preprocess.pipeline", "brainfm.data.manifest", "brainfm.perturb"),
    "pretrain": ("brainfm.device", "brainfm.ssl.entry", "brainfm.ssl.dino", "brainfm.ssl.simclr",
                 "brainfm.ssl.brainfound", "brainfm.ssl.data", "brainfm.ssl.export"),
    "extract_features": ("torch", "brainfm.device", "brainfm.features.extract", "brainfm.models",
                         "brainfm.preprocess.store"),
    "extract_perturbed": ("torch", "brainfm.device", "brainfm.features.extract", "brainfm.models",
                          "brainfm.preprocess.store"),
    "fit_heads": ("brainfm.tasks.runner", "brainfm.data.manifest", "brainfm.tasks.data", "brainfm.tasks.runs",
                  *_FEATURES_READ),
    "finetune": ("brainfm.device", "brainfm.tasks.finetune", "brainfm.data.manifest", "brainfm.models",
                 "brainfm.preprocess.store", "brainfm.tasks.runs"),
    "knn_probe": ("brainfm.analysis.knn", "brainfm.data.manifest", "brainfm.tasks.data", "brainfm.tasks.runs",
                  "brainfm.data.splits", *_FEATURES_READ),
    "evaluate_perturbed": ("brainfm.tasks.perturbation", "brainfm.data.manifest", *_FEATURES_READ),
    "cka": ("brainfm.analysis.cka", *_FEATURES_READ),
    "task_stats": _STATS, "strata_stats": _STATS, "km_stats": _STATS, "knn_stats": _STATS,
    "perturbation_stats": _STATS, "finetune_table": _STATS,
    "cka_figure": ("brainfm.report.build",),
    "summary_table": ("brainfm.report.build",),
    "pretrain_curves": ("brainfm.report.pretrain_curves", "brainfm.report.style"),
    "scan_leakage": ("brainfm.tasks.runs",),
    "similarity_maps": ("brainfm.analysis.similarity", "brainfm.device", "brainfm.models"),
    "similarity_report": ("brainfm.analysis.similarity",),
    "protocol_deviations": ("brainfm.config", "brainfm.report.protocol"),
    "corpus_figure": ("brainfm.report.corpus",), "dataset_table": ("brainfm.report.corpus",),
    "composite_figure": ("brainfm.report.build",),
    "prepare_segmentation": ("brainfm.segmentation.steps",),
    "segment": ("brainfm.device", "brainfm.segmentation.steps"),
    "segment_finetune": ("brainfm.device", "brainfm.segmentation.steps"),
    "segment_perturbed": ("brainfm.config", "brainfm.device", "brainfm.segmentation.steps"),
    "segmentation_stats": _STATS,
    "segmentation_labels": ("brainfm.report.segmentation",), "segmentation_figure": ("brainfm.report.segmentation",),
}
#: rules whose jobs also build an encoder (and open a volume store) before working
BUILDS_MODEL = ("extract_features", "extract_perturbed", "finetune")

# A job's start, timed inside a fresh interpreter; stdlib only before the timed imports.
_PROBE = r"""
import importlib, json, sys, time
t0 = time.perf_counter()
import brainfm.cli
t1 = time.perf_counter()
for m in sys.argv[1].split(","):
    if m:
        importlib.import_module(m)
t2 = time.perf_counter()
build = json.loads(sys.argv[2])
if build:
    from brainfm.models import create_encoder
    create_encoder(build["encoder"], **build["args"])
t3 = time.perf_counter()
if build:  # again, libraries loaded: what a job forked from a preloading process pays
    create_encoder(build["encoder"], **build["args"])
t3w = time.perf_counter() - t3
t3 = time.perf_counter()
if sys.argv[3]:
    from brainfm.preprocess.store import ShardedStore
    s = ShardedStore(sys.argv[3]); s[0]
t4 = time.perf_counter()
heavy = sorted(k for k in ("torch", "timm", "monai", "pandas", "scipy", "sklearn", "matplotlib", "nibabel",
                           "lifelines", "statsmodels") if k in sys.modules)
print(json.dumps({"cli_import_s": t1 - t0, "step_import_s": t2 - t1, "model_build_s": t3 - t2 - t3w,
                  "model_build_warm_s": t3w,
                  "store_open_s": t4 - t3, "heavy_modules": heavy}))
"""


def _python_env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": src + (os.pathsep + path if path else ""), "PYTHONWARNINGS": "ignore"}


def _timed(cmd: Sequence[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(list(cmd), capture_output=True, text=True, env=_python_env())
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:3])}...: exit {proc.returncode}: {proc.stderr[-800:]}")
    return wall, proc.stdout


# ----------------------------------------------------------------------------- reading benchmark files
def read_benchmarks(bench_dir: str | Path) -> list[dict[str, Any]]:
    """One row per job: rule (first folder under ``bench_dir``), job (the rest of the path), seconds, CPU."""
    bench_dir = Path(bench_dir)
    rows = []
    for tsv in sorted(bench_dir.rglob("*.tsv")):
        rel = tsv.relative_to(bench_dir)
        lines = [ln for ln in tsv.read_text().splitlines() if ln.strip()]
        if len(lines) < 2:
            raise InputError(tsv, "a Snakemake benchmark file needs a header and one row per repeat")
        header = lines[0].split("\t")
        if "s" not in header:
            raise InputError(tsv, f"no 's' column (columns: {header})")
        values = [dict(zip(header, ln.split("\t"))) for ln in lines[1:]]

        def num(key: str) -> float | None:
            xs = []
            for v in values:
                try:
                    xs.append(float(v.get(key, "nan")))
                except ValueError:
                    continue
            xs = [x for x in xs if math.isfinite(x)]
            return statistics.fmean(xs) if xs else None

        wall = num("s")
        if wall is None:
            raise InputError(tsv, "the 's' column holds no number")
        rows.append({"rule": rel.parts[0], "job": "/".join(rel.parts[1:])[:-4] or rel.stem, "wall_s": wall,
                     "cpu_s": num("cpu_time"), "max_rss_mb": num("max_rss")})
    return rows


# ----------------------------------------------------------------------------- fixed costs
def _demo_builds(configfile: str | Path | None) -> tuple[list[dict[str, Any]], str]:
    """The encoders the config's extraction jobs build (without weights) and one existing volume store."""
    if configfile is None or not Path(configfile).exists():
        return [], ""
    from brainfm.config import load_config

    cfg = load_config(configfile)
    # an encoder that builds without a file (random init: same architecture as the pretrained ViT in the demo)
    builds = [{"encoder": b.encoder, "args": dict(b.args), "backbone": b.name} for b in cfg.backbones.values()
              if not b.weights and not b.weights_ref.run]
    store = ""
    for d in cfg.datasets:
        path = Path(cfg.layout.store(d))
        if (path / "meta.json").exists():
            store = str(path)
            break
    return builds, store


# Through a preloading process (brainfm.preload): the wall time of a trivial step, N times.
_PRELOADED = r"""
import json, statistics, subprocess, sys, time
walls = []
for _ in range(int(sys.argv[1])):
    t0 = time.perf_counter()
    subprocess.run([sys.argv[2], "--help"], check=True, capture_output=True)
    walls.append(time.perf_counter() - t0)
print(json.dumps({"step_start_s": statistics.median(walls)}))
"""


def measure_preloaded_start(repeats: int = 5) -> float:
    """Median seconds from starting a ``brainfm`` step to its end, forked from a preloading process
    (as ``make demo`` runs jobs): interpreter, hand-off, fork, and a step that only parses its
    arguments (``brainfm --help``)."""
    py = sys.executable
    brainfm = str(Path(py).with_name("brainfm"))
    _, out = _timed([brainfm, "preload", "--", py, "-c", _PRELOADED, str(repeats), brainfm])
    return float(json.loads(out.strip().splitlines()[-1])["step_start_s"])


def measure_fixed_costs(rules: Sequence[str], *, configfile: str | Path | None = None, repeats: int = 3,
                        libraries: Sequence[str] = ("torch", "timm"), preloaded: bool = True) -> dict[str, Any]:
    """Seconds a job of each rule spends before its work (medians).

    Each part timed in fresh processes: ``interpreter_s``: ``python -c pass``; ``cli_import_s``:
    ``import brainfm.cli``; ``step_import_s``: the rule's :data:`STEP_IMPORTS`; ``model_build_s`` /
    ``store_open_s``: an encoder of the config built without weights and a volume store opened
    (extraction and fine-tuning rules). ``fixed_s`` is their sum, a job's start in a fresh process;
    with ``preloaded`` (jobs started as ``make demo`` starts them, :mod:`brainfm.preload`) it is the
    start of a step forked from a preloading process (:func:`measure_preloaded_start`) plus the model
    build with its libraries loaded (``model_build_warm_s``) and the store open, which every job still pays.
    """
    py = sys.executable
    base = [_timed([py, "-c", "pass"])[0] for _ in range(repeats)]
    interpreter = statistics.median(base)
    libs = {}
    for lib in libraries:
        libs[lib] = statistics.median(_timed([py, "-c", f"import {lib}"])[0] for _ in range(repeats)) - interpreter
    builds, store = _demo_builds(configfile)
    start = measure_preloaded_start(max(repeats, 3)) if preloaded else None
    per_rule: dict[str, Any] = {}
    for rule in rules:
        mods = STEP_IMPORTS.get(rule)
        if mods is None:
            continue
        build = builds[0] if rule in BUILDS_MODEL and builds else None
        samples = []
        for _ in range(repeats):
            wall, out = _timed([py, "-c", _PROBE, ",".join(mods), json.dumps(build),
                                store if rule in BUILDS_MODEL else ""])
            inner = json.loads(out.strip().splitlines()[-1])
            inner["process_s"] = wall
            samples.append(inner)
        med = {k: statistics.median(s[k] for s in samples) for k in
               ("process_s", "cli_import_s", "step_import_s", "model_build_s", "model_build_warm_s", "store_open_s")}
        med["interpreter_s"] = max(med["process_s"] - med["cli_import_s"] - med["step_import_s"]
                                   - med["model_build_s"] - med["model_build_warm_s"] - med["store_open_s"], 0.0)
        med["process_s"] -= med["model_build_warm_s"]  # the probe's second build is not part of a job's start
        fixed_s = (start + med["model_build_warm_s"] + med["store_open_s"]) if preloaded else med["process_s"]
        per_rule[rule] = {**{k: round(v, 4) for k, v in med.items()}, "fixed_s": round(fixed_s, 4),
                          "modules": list(mods), "heavy_modules": samples[-1]["heavy_modules"],
                          "model_built": build["backbone"] if build else None,
                          "store_opened": bool(store) and rule in BUILDS_MODEL}
    return {"interpreter_s": round(interpreter, 4), "library_import_s": {k: round(v, 4) for k, v in libs.items()},
            "preloaded": preloaded, "preloaded_step_start_s": None if start is None else round(start, 4),
            "per_rule": per_rule, "repeats": repeats}


# ----------------------------------------------------------------------------- the report
def analyse(jobs: Sequence[Mapping[str, Any]], fixed: Mapping[str, Any]) -> dict[str, Any]:
    """Per-rule totals and the fixed-cost share: jobs x fixed seconds per job, against the rule's wall time."""
    by_rule: dict[str, list[Mapping[str, Any]]] = {}
    for j in jobs:
        by_rule.setdefault(j["rule"], []).append(j)
    per_fixed = fixed.get("per_rule", {})
    rows = []
    for rule, js in by_rule.items():
        wall = sum(j["wall_s"] for j in js)
        cpus = [j["cpu_s"] for j in js if j.get("cpu_s") is not None]
        f = per_fixed.get(rule, {}).get("fixed_s")
        fixed_total = None if f is None else min(f * len(js), wall)
        rows.append({"rule": rule, "jobs": len(js), "wall_s": round(wall, 3),
                     "cpu_s": round(sum(cpus), 3) if cpus else None,
                     "mean_job_s": round(wall / len(js), 3), "fixed_per_job_s": f,
                     "fixed_s": None if fixed_total is None else round(fixed_total, 3),
                     "work_s": None if fixed_total is None else round(wall - fixed_total, 3),
                     "fixed_share": None if fixed_total is None or wall <= 0 else round(fixed_total / wall, 4)})
    rows.sort(key=lambda r: -r["wall_s"])
    total = sum(r["wall_s"] for r in rows)
    fixed_total = sum(r["fixed_s"] or 0.0 for r in rows)
    cpu = [r["cpu_s"] for r in rows if r["cpu_s"] is not None]
    return {"rules": rows, "total": {"jobs": sum(r["jobs"] for r in rows), "job_wall_s": round(total, 3),
                                     "job_cpu_s": round(sum(cpu), 3) if cpu else None,
                                     "fixed_s": round(fixed_total, 3),
                                     "fixed_share": round(fixed_total / total, 4) if total > 0 else None}}


def format_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown: totals, the fixed-cost parts, one row per rule (slowest first)."""

    def f(v: Any, nd: int = 1) -> str:
        return "–" if v is None else f"{v:.{nd}f}"

    t, fx = report["total"], report["fixed_costs"]
    lines = [f"# Demo time by rule ({report['source']})", "",
             f"{t['jobs']} jobs, {f(t['job_wall_s'])} s of job wall time (sum over jobs; run with "
             f"{report.get('cores') or '?'} cores), {f(t['job_cpu_s'])} s CPU; fixed per-job cost "
             f"{f(t['fixed_s'])} s = {f(100 * (t['fixed_share'] or 0), 0)}% of it.", "",
             f"Fixed parts, fresh processes (median of {fx['repeats']}): interpreter {f(fx['interpreter_s'], 3)} s; "
             + ", ".join(f"import {k} {f(v, 2)} s" for k, v in fx["library_import_s"].items()) + ".", "",
             (f"Jobs started as `make demo` starts them (`brainfm preload`: forked from one process that imported "
              f"the libraries once): a step's start costs {f(fx['preloaded_step_start_s'], 3)} s; the fixed s/job "
              "below is that plus the model build and store open. Snakemake's CPU s and memory then count the "
              "hand-off process, not the step." if fx.get("preloaded") else
              "Jobs started in fresh processes: the fixed s/job below is the whole start (the last table)."), "",
             "| rule | jobs | wall s | CPU s | s/job | fixed s/job | fixed s | work s | fixed share |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in report["rules"]:
        lines.append(f"| {r['rule']} | {r['jobs']} | {f(r['wall_s'])} | {f(r['cpu_s'])} | {f(r['mean_job_s'], 2)} | "
                     f"{f(r['fixed_per_job_s'], 2)} | {f(r['fixed_s'])} | {f(r['work_s'])} | "
                     f"{f(None if r['fixed_share'] is None else 100 * r['fixed_share'], 0)}% |")
    lines += ["", "A job's start in a fresh process:", "",
              "| rule | s/job fixed | interpreter | import brainfm.cli | step imports | model build | "
                  "store open | heavy modules |", "|---|---|---|---|---|---|---|---|"]
    for rule, p in fx["per_rule"].items():
        lines.append(f"| {rule} | {f(p['process_s'], 2)} | {f(p['interpreter_s'], 2)} | {f(p['cli_import_s'], 2)} | "
                     f"{f(p['step_import_s'], 2)} | {f(p['model_build_s'], 2)} | {f(p['store_open_s'], 3)} | "
                     f"{', '.join(p['heavy_modules']) or '–'} |")
    return "\n".join(lines) + "\n"


def _fresh_demo(tmp: Path, cores: int, configfile: str, preloaded: bool = True) -> dict[str, Any]:
    """Run the demo DAG from scratch in ``tmp`` (a copy of the workflow); returns the run's facts."""
    repo = Path(__file__).resolve().parents[3]
    for item in ("workflow", "config", "profiles", "envs"):
        shutil.copytree(repo / item, tmp / item)
    snakemake = Path(sys.executable).with_name("snakemake")
    # as `make demo` runs it: every step forked from one preloading process (brainfm.preload)
    wrapper = [str(Path(sys.executable).with_name("brainfm")), "preload", "--"] if preloaded else []
    cmd = [*wrapper, str(snakemake), "--cores", str(cores), "--configfile", configfile, "--quiet", "rules"]
    env = {**_python_env(), "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, env=env)
    return {"command": " ".join(cmd[1:]), "returncode": proc.returncode, "wall_seconds": time.perf_counter() - t0,
            "stderr_tail": proc.stderr[-2000:] if proc.returncode else ""}


def logged_cores(benchmarks: str | Path) -> int | None:
    """The ``--cores`` of the newest Snakemake run logged beside ``benchmarks`` (None when no log says).

    Snakemake keeps its logs in ``.snakemake/log`` of the directory it ran in, an ancestor of the
    results folder; a ``--report`` run logs no cores and is skipped.
    """
    for folder in Path(benchmarks).resolve().parents:
        logs = sorted((folder / ".snakemake" / "log").glob("*.snakemake.log"), reverse=True)  # names are timestamps
        for log in logs:
            found = re.search(r"^Provided cores: (\d+)\s*$", log.read_text(errors="replace"), re.MULTILINE)
            if found:
                return int(found.group(1))
        if logs:
            return None
    return None


def run(out_dir: str | Path, *, benchmarks: str | Path | None = None, configfile: str = "config/config.yaml",
        cores: int = 2, repeats: int = 3, libraries: Sequence[str] = ("torch", "timm"),
        preloaded: bool = True) -> dict[str, Any]:
    """Write ``demo.json`` and ``demo.md``: per-rule time of a demo run and the fixed cost per job.

    ``benchmarks``: a Snakemake benchmark folder to read (default: the config's
    ``results/benchmarks`` when it holds files); with none, the demo runs from scratch first.
    ``preloaded``: the run started its jobs as ``make demo`` does (``brainfm preload``); False for a
    run of plain ``snakemake`` (every job a fresh process).
    """
    from brainfm.bench.measure import machine_info

    facts: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="brainfm-bench-") as tmp:
        if benchmarks is None and Path(configfile).exists():
            from brainfm.config import load_config

            default = Path(load_config(configfile).layout.benchmark("x", "y")).parents[1]
            benchmarks = default if any(default.rglob("*.tsv")) else None
        if benchmarks is None:
            facts = _fresh_demo(Path(tmp), cores, configfile, preloaded)
            benchmarks = Path(tmp) / "results" / "benchmarks"
            source, run_cores = f"fresh demo run, --cores {cores}", cores
        else:
            source = str(benchmarks)
            run_cores = logged_cores(benchmarks)
        jobs = read_benchmarks(benchmarks)
        if not jobs:
            raise InputError(benchmarks, "no Snakemake benchmark files (*.tsv): run the demo first")
    fixed = measure_fixed_costs(sorted({j["rule"] for j in jobs}), configfile=configfile, repeats=repeats,
                                preloaded=preloaded,
                                libraries=libraries)
    report = {"source": source, "cores": run_cores, **analyse(jobs, fixed), "fixed_costs": fixed,
              "jobs": list(jobs), "machine": machine_info(), **facts}
    out_dir = Path(out_dir)
    write_json(out_dir / "demo.json", report)
    write_text(out_dir / "demo.md", format_markdown(report))
    return report


def headline(report: dict[str, Any]) -> dict[str, Any]:
    t = report["total"]
    out = {"jobs": t["jobs"], "job_wall_s": round(t["job_wall_s"], 1), "fixed_share": t["fixed_share"]}
    if "wall_seconds" in report:
        out["wall_seconds"] = round(report["wall_seconds"], 1)
    return out
