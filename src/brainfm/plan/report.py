"""``brainfm plan``: what a config needs, what it becomes on a cluster, and what it will cost.

:func:`plan` gathers the parts (inventory, Snakemake's dry run, projections) into one JSON-able
report; :func:`format_plan` prints it for a person. Relative paths in the config are read from
the current directory, as Snakemake reads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from brainfm.plan.cost import PAPER_PRETRAIN_SLICES, disk_projection, gpu_projection, read_benchmarks
from brainfm.plan.inventory import dataset_inventory, weights_inventory
from brainfm.plan.jobs import planned_jobs, read_profile

__all__ = ["plan", "format_plan", "default_snakefile", "default_profile"]

_REPO = Path(__file__).resolve().parents[3]  # a source checkout: src/brainfm/plan/report.py


def default_snakefile() -> Path | None:
    """``workflow/Snakefile`` of the working directory, else of the checkout brainfm is imported from."""
    for base in (Path.cwd(), _REPO):
        if (base / "workflow" / "Snakefile").is_file():
            return base / "workflow" / "Snakefile"
    return None


def default_profile(snakefile: Path | None) -> Path | None:
    """The SLURM profile (``profiles/slurm/profile.yaml``) of the working directory or of the workflow."""
    bases = [Path.cwd()] + ([snakefile.resolve().parent.parent] if snakefile else [])
    for base in bases:
        if (base / "profiles" / "slurm" / "profile.yaml").is_file():
            return base / "profiles" / "slurm" / "profile.yaml"
    return None


def plan(config: str | Path = "config/paper.yaml", *, snakefile: str | Path | None = None,
         profile: str | Path | None = None, bench_dir: str | Path = "results/bench", dry_run: bool = True,
         pretrain_slices: int = PAPER_PRETRAIN_SLICES) -> dict[str, Any]:
    """The plan of ``config``: datasets and weights found or missing, jobs and SLURM submissions, disk, GPU time.

    ``dry_run=False`` skips Snakemake (no job counts; only pretraining's GPU time is projected).
    """
    from brainfm.config import load_config

    cfg = load_config(config)
    snakefile = Path(snakefile) if snakefile else default_snakefile()
    profile = Path(profile) if profile else default_profile(snakefile)
    report: dict[str, Any] = {"config": str(config), "run_name": cfg.run_name, "workdir": str(Path.cwd()),
                              "datasets": dataset_inventory(cfg), "weights": weights_inventory(cfg)}
    settings = read_profile(profile)
    jobs = None
    if not dry_run:
        report["jobs"] = {"available": False, "reason": "dry run skipped (--no-dry-run)"}
    elif snakefile is None:
        report["jobs"] = {"available": False, "reason": "no workflow/Snakefile here or in the brainfm checkout"}
    else:
        planned = planned_jobs(config, snakefile, settings)
        jobs = planned["job_list"]
        report["jobs"] = {"available": True, "profile": str(profile) if profile else None,
                          "group_components": settings["group_components"], **planned}
    bench = read_benchmarks(bench_dir)
    report["benchmarks"] = {k: v["path"] for k, v in bench.items()}
    report["disk"] = disk_projection(cfg, pretrain_slices)
    report["gpu"] = gpu_projection(cfg, jobs, bench, default_runtime=settings["default_runtime"])
    return report


# ----------------------------------------------------------------------------- text
def _size(n: float | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:,.2f} {unit}"
    return f"{n:,.0f} B"


def _indent(text: str, pad: str) -> str:
    return "\n".join(pad + line if line.strip() else "" for line in text.splitlines())


def _hours(h: float | None) -> str:
    return "?" if h is None else f"{h:,.0f}"


def format_plan(report: dict[str, Any]) -> str:
    """The report as text: sections for datasets, weights, jobs, disk and GPU time."""
    out = [f"brainfm plan of {report['config']} (run {report['run_name']}), paths relative to {report['workdir']}"]

    ds = report["datasets"]
    missing = [d for d in ds if not d["found"]]
    out += ["", f"DATASETS: {len(ds)} real sources, {len(ds) - len(missing)} found, {len(missing)} missing"
                + (" (how to get each: at the end)" if missing else "")]
    for d in ds:
        fetched = " (fetched by the workflow: source download)" if d["source"] == "download" and not d["found"] else ""
        out.append(f"  {'found  ' if d['found'] else 'MISSING'}  {d['dataset']:20s} {d['access']:13s} "
                   f"{d['path']}{fetched}")

    ws = report["weights"]
    out += ["", f"WEIGHTS FILES: {len(ws)}, {sum(w['found'] for w in ws)} found, "
                f"{sum(not w['found'] for w in ws)} missing"]
    width = max((len(w["path"]) for w in ws), default=0)
    for w in ws:
        out.append(f"  {'found  ' if w['found'] else 'MISSING'}  {w['path']:{width}s}  config key {w['key']} "
                   f"(encoder {w['encoder']})")
    if any(not w["found"] for w in ws):
        out.append("  Released weights are not downloaded by brainfm: get each file from its authors (README, "
                   "'Baseline weights') and place it at the path shown, or change the key.")

    jobs = report["jobs"]
    out += [""]
    if not jobs["available"]:
        out.append(f"JOBS: not counted ({jobs['reason']})")
    else:
        out += [f"JOBS still to run: {jobs['total_jobs']} (Snakemake dry run, {jobs['seconds']:.1f} s: "
                f"{jobs['command']})",
                f"  {'rule':22s} {'jobs':>5s}  runs as"]
        for rule, r in sorted(jobs["per_rule"].items(), key=lambda kv: -kv[1]["jobs"]):
            how = f"group {r['group']}" if r["group"] else "submit host (local rule)" if r["local"] else "own SLURM job"
            out.append(f"  {rule:22s} {r['jobs']:5d}  {how}")
        comp = ", ".join(f"{g}: {n} per allocation" for g, n in jobs["group_components"].items()) or "none"
        groups = "; ".join(f"{g}: {v['jobs']} jobs in {v['allocations']} allocation(s)"
                           for g, v in jobs["groups"].items())
        n_alloc = sum(v["allocations"] for v in jobs["groups"].values())
        where = (f"profile {jobs['profile']}, group-components {comp}" if jobs["profile"]
                 else "no profiles/slurm/profile.yaml found: no grouping")
        out += [f"SLURM SUBMISSIONS after grouping: {jobs['submissions']} ({where})",
                f"  {jobs['jobs_alone']} jobs submitted alone + {n_alloc} group allocations ({groups}); "
                f"{jobs['local_jobs']} jobs run on the submit host"]

    disk = report["disk"]
    ps = disk["pretrain_store"]
    out += ["", "DISK of the preprocessed float16 stores (projected, not measured)",
            f"  pretraining slice store: {ps['slices']:,} slices x {ps['bytes_per_slice']:,.0f} B = "
            f"{ps['tb']:.2f} TB ({ps['tib']:.2f} TiB); slice count: {ps['source']}"]
    for r in disk["rows"]:
        out.append(f"  {r['rule']:20s} {_size(r['bytes']):>10s}  {r['what']}")
        out.append(f"  {'':20s} {'':>10s}  basis: {r['basis']}")
    out.append(f"  total of the rows with a count: {_size(disk['known_bytes'])}"
               + (f"; not projected (no count): {len(disk['unknown'])} row(s)" if disk["unknown"] else ""))
    out.append(f"  features: {disk['features']}")

    out += ["", "GPU TIME (requested = what the config reserves; projected = work / throughput, source named)"]
    for g in report["gpu"]:
        name = g["rule"] + (f" {g['run']} ({g['recipe']}, {g['gpus']} GPU{'s' if g['gpus'] != 1 else ''})"
                            if "run" in g else "")
        out.append(f"  {name}: {g['jobs']} job(s)")
        out.append(f"      requested {_hours(g.get('requested_gpu_hours'))} GPU-h: {g.get('requested_basis', '')}")
        if g["projected_hours"] is not None:
            wall = f", {g['wall_hours']:,.0f} h wall" if g.get("wall_hours") else ""
            done = f" for {g['jobs_projected']} of {g['jobs']} jobs" if "jobs_projected" in g else ""
            out.append(f"      projected {_hours(g['projected_hours'])} {g['unit']}{wall}{done}")
            if g.get("work"):
                out.append(f"      work: {g['work']}")
        out.append(f"      source: {g['source']}")
        for item in g.get("not_projected", []):
            out.append(f"      not projected: {item}")
        if g.get("runtime_note"):
            out.append(f"      note: {g['runtime_note']}")
    if report["benchmarks"]:
        out.append("  benchmark files read: " + ", ".join(report["benchmarks"].values()))
    else:
        out.append("  no brainfm bench results found (results/bench/*.json): run `make bench` on the target "
                   "machine for measured throughputs")
    if missing:
        out += ["", "HOW TO GET THE MISSING DATASETS (from their registry entries)"]
        for d in missing:
            out += ["", f"{d['dataset']}: {d['title']}", f"  access: {d['access_text']}",
                    f"  homepage: {d['homepage']}", f"  registry entry: {d['registry']}",
                    f"  put it at: {d['path']} (config key datasets.{d['dataset']}.path)", "  steps:",
                    _indent(d["steps"], "    ")]
    return "\n".join(out) + "\n"
