"""The jobs a config becomes and the SLURM submissions they make, from Snakemake's own DAG.

:func:`planned_jobs` runs a dry run of the workflow in a child process (this module's ``main``)
with the SLURM profile's ``group-components`` and ``rerun-triggers``, and reads back, per job, its rule, wildcards,
group and whether it runs on the submit host. The child builds the DAG exactly as
``snakemake -n --workflow-profile profiles/slurm`` does (same executor, same grouping of
connected components), then reads three things the command line does not print: which group
job each job landed in and which rules are local. Those live on Snakemake's workflow and DAG
objects (``WorkflowApi._workflow``, ``Workflow._localrules``); they are read in this one place,
against the Snakemake pinned in constraints.txt, and tests/plan compares the counts with the
command-line dry run so that a change in Snakemake fails a test instead of a plan.

A child process keeps Snakemake's global logger and working-directory handling out of the
caller, and lets the caller time the dry run as a user would see it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from brainfm.errors import ConfigError

__all__ = ["read_profile", "planned_jobs", "count_submissions", "main"]


def read_profile(profile: str | Path | None) -> dict[str, Any]:
    """What a dry run takes from a Snakemake profile file: group-components, rerun-triggers, default runtime.

    ``group_components`` maps a group to the jobs one allocation takes; ``rerun_triggers`` is None
    when the profile sets none (Snakemake's default: all); ``default_runtime`` is the minutes of a
    job whose rule sets no runtime (``default-resources: runtime``, else 60).
    """
    import yaml

    from brainfm.plan.cost import runtime_minutes

    if profile is None:
        return {"group_components": {}, "rerun_triggers": None, "default_runtime": 60.0}
    path = Path(profile)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the profile ({exc})") from exc
    raw = data.get("group-components", {}) or {}
    if isinstance(raw, list):  # the command-line form: ["heads=50", ...]
        raw = dict(item.split("=", 1) for item in raw)
    try:
        components = {str(k): int(v) for k, v in raw.items()}
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: group-components must map group names to integers ({exc})") from exc
    triggers = data.get("rerun-triggers")
    runtime = runtime_minutes((data.get("default-resources") or {}).get("runtime", 60))
    return {"group_components": components, "rerun_triggers": None if triggers is None else list(triggers),
            "default_runtime": runtime or 60.0}


def count_submissions(jobs: list[Mapping[str, Any]]) -> dict[str, Any]:
    """SLURM submissions of a job list: one per group job, one per other non-local job.

    ``jobs`` items carry ``rule``, ``group`` (the group job's id, or None), ``group_name`` and ``local``.
    """
    per_rule: dict[str, dict[str, Any]] = {}
    group_jobs: dict[str, set[str]] = {}
    members: Counter[str] = Counter()
    alone = local = 0
    for job in jobs:
        entry = per_rule.setdefault(job["rule"], {"jobs": 0, "local": bool(job["local"]), "group": None})
        entry["jobs"] += 1
        if job["group"] is not None:
            name = job["group_name"]
            entry["group"] = name
            group_jobs.setdefault(name, set()).add(job["group"])
            members[name] += 1
        elif job["local"]:
            local += 1
        else:
            alone += 1
    groups = {g: {"jobs": members[g], "allocations": len(ids)} for g, ids in sorted(group_jobs.items())}
    return {"per_rule": per_rule, "groups": groups, "jobs_alone": alone, "local_jobs": local,
            "total_jobs": len(jobs),
            "submissions": alone + sum(g["allocations"] for g in groups.values())}


def planned_jobs(configfile: str | Path, snakefile: str | Path, profile: Mapping[str, Any], *,
                 workdir: str | Path = ".", timeout: float = 600) -> dict[str, Any]:
    """Dry-run ``snakefile`` with ``configfile`` in ``workdir``; the jobs still to run and their submissions.

    ``profile`` is :func:`read_profile` of the SLURM profile (its grouping and rerun triggers).

    Returns ``count_submissions`` of the job list plus ``job_list`` (rule, wildcards, group, local and
    the resources gpu, gres, nodes, runtime, mem_mb as the rule sets them),
    ``seconds`` (wall time of the child) and ``command`` (the equivalent command line). Raises
    :class:`ConfigError` with Snakemake's message when the workflow does not plan.
    """
    components = profile["group_components"]
    triggers = profile["rerun_triggers"]
    cmd = [sys.executable, "-c", "import sys; from brainfm.plan.jobs import main; sys.exit(main())",
           "--configfile", str(configfile), "--snakefile", str(snakefile),
           "--group-components", json.dumps(dict(components))]
    if triggers is not None:
        cmd += ["--rerun-triggers", *triggers]
    with tempfile.TemporaryDirectory(prefix="brainfm-plan-") as tmp:
        out = Path(tmp) / "jobs.json"
        proc, seconds = _run_child([*cmd, "--out", str(out)], workdir, timeout)
        if proc.returncode != 0:
            raise ConfigError(f"snakemake dry run of {configfile} failed: "
                              f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
        jobs = json.loads(out.read_text())["jobs"]
    groups = " ".join(f"{g}={n}" for g, n in components.items())
    return {**count_submissions(jobs), "job_list": jobs, "seconds": round(seconds, 2),
            "command": f"snakemake -n --executor slurm --jobs 200 --snakefile {snakefile} --configfile {configfile}"
                       + (f" --group-components {groups}" if groups else "")
                       + (f" --rerun-triggers {' '.join(triggers)}" if triggers is not None else "")}


def _run_child(cmd: list[str], workdir: str | Path, timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    """Run the child with this same brainfm importable; its result and wall time."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env)
    return proc, time.perf_counter() - t0


#: the job resources a plan reads (GPUs, nodes, walltime in minutes, memory)
_RESOURCES = ("gpu", "gres", "nodes", "runtime", "mem_mb")


def _dry_run(configfile: str, snakefile: str, components: Mapping[str, int],
             rerun_triggers: list[str] | None) -> list[dict[str, Any]]:
    """In the child: the SLURM dry run through Snakemake's API, then its DAG read job by job."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.enums import Quietness, RerunTrigger
    from snakemake.settings.types import (ConfigSettings, DAGSettings, GroupSettings, OutputSettings,
                                          ResourceSettings)

    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        workflow_api = api.workflow(ResourceSettings(nodes=200), ConfigSettings(configfiles=[Path(configfile)]),
                                    snakefile=Path(snakefile))
        triggers = {} if rerun_triggers is None else {"rerun_triggers": RerunTrigger.parse_choices_set(rerun_triggers)}
        dag_api = workflow_api.dag(DAGSettings(**triggers))
        dag_api.execute_workflow(executor="slurm", pseudo_executor="dryrun",
                                 group_settings=GroupSettings(group_components=dict(components)))
        workflow = workflow_api._workflow
        dag = workflow.dag
        jobs = []
        for job in dag.needrun_jobs(exclude_finished=False):
            group = dag.get_job_group(job)
            rule = job.rule
            # Workflow.is_local without the dry-run executor's "everything is local"
            local = rule.group is None and (rule.name in workflow._localrules or rule.norun)
            resources = {k: v for k, v in job.resources.items()
                         if k in _RESOURCES and isinstance(v, (int, float, str))}
            jobs.append({"rule": rule.name, "wildcards": dict(job.wildcards_dict),
                         "group": None if group is None else str(group.jobid),
                         "group_name": None if group is None else group.groupid, "local": bool(local),
                         "resources": resources})
    return sorted(jobs, key=lambda j: (j["rule"], sorted(j["wildcards"].items())))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="dry-run the workflow under SLURM grouping; print its jobs as JSON")
    ap.add_argument("--configfile", required=True)
    ap.add_argument("--snakefile", required=True)
    ap.add_argument("--group-components", type=json.loads, default={})
    ap.add_argument("--rerun-triggers", nargs="*", default=None)
    ap.add_argument("--out", required=True, help="JSON file receiving the job list")
    a = ap.parse_args(argv)
    try:
        jobs = _dry_run(a.configfile, a.snakefile, a.group_components, a.rerun_triggers)
    except Exception as exc:  # Snakemake's own errors: the parent shows the message
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    Path(a.out).write_text(json.dumps({"jobs": jobs}))
    return 0

