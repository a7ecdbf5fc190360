"""The Snakemake workflow: lint, planning, and the demo DAG in miniature end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
TINY = REPO / "tests" / "workflow" / "config.tiny.yaml"


def _copy_workflow(dest: Path) -> Path:
    for item in ("workflow", "config", "profiles", "envs"):
        shutil.copytree(REPO / item, dest / item)
    shutil.copy(TINY, dest / "config" / "tiny.yaml")
    return dest


# rules call the `brainfm` CLI, which lives next to this interpreter (the project venv)
ENV = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}


def _smk(cwd: Path, *args: str, timeout: int = 1500) -> subprocess.CompletedProcess:
    return subprocess.run([SNAKEMAKE, "--workflow-profile", "none", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=ENV)


@pytest.mark.xdist_group("workflow")
def test_lint_is_clean():
    proc = subprocess.run([SNAKEMAKE, "--lint", "--configfile", "config/config.yaml"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Lints for" not in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]


@pytest.mark.xdist_group("workflow")
def test_demo_config_plans_every_rule_family(tmp_path):
    wf = _copy_workflow(tmp_path)
    proc = _smk(wf, "-n", "--quiet", "rules", "--cores", "2", "--configfile", "config/config.yaml", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    for rule in ("phantom_dataset", "preprocess", "pretrain", "extract_features", "fit_heads", "knn_probe",
                 "task_stats", "knn_stats", "cka", "summary_table"):
        assert rule in out, f"{rule} missing from the demo plan"


@pytest.mark.xdist_group("workflow")
def test_bad_config_is_rejected_with_a_clear_message(tmp_path):
    wf = _copy_workflow(tmp_path)
    bad = (wf / "config" / "tiny.yaml").read_text().replace("dataset: phantom_brainage", "dataset: nowhere", 1)
    (wf / "config" / "bad.yaml").write_text(bad)
    proc = _smk(wf, "-n", "--cores", "1", "--configfile", "config/bad.yaml")
    assert proc.returncode != 0
    assert "tasks.brain_age: dataset 'nowhere' is not declared" in proc.stdout + proc.stderr


@pytest.mark.xdist_group("workflow")
def test_tiny_demo_dag_end_to_end(tmp_path):
    wf = _copy_workflow(tmp_path)
    proc = _smk(wf, "--cores", "2", "--configfile", "config/tiny.yaml")
    assert proc.returncode == 0, proc.stderr[-6000:]
    res = wf / "results"
    for task in ("brain_age", "adni_3class", "survival_cox", "knn_adni"):
        for ext in ("md", "csv", "tex"):
            assert (res / "tables" / f"{task}.{ext}").stat().st_size > 0
    for fig in ("ratio_brain_age", "ratio_adni_3class", "ratio_survival_cox", "knn_knn_adni", "cka", "perturbations"):
        assert (res / "figures" / f"{fig}.png").stat().st_size > 1000
        assert (res / "figures" / f"{fig}.pdf").exists()
    assert (res / "tables" / "summary.md").exists()

    # predictions follow the contract; every test subject of a CV task is predicted once per seed
    pred = pd.read_parquet(res / "tasks/adni_3class/braindino/runs/ratio~1/seed~0/predictions.parquet")
    assert {"task", "backbone", "ratio", "seed", "fold", "subject", "session", "y_true", "y_pred",
            "prob_0", "prob_1", "prob_2"} <= set(pred.columns)
    assert not pred.duplicated(["subject", "session"]).any()
    assert pred.groupby("subject")["fold"].nunique().max() == 1
    metrics = json.loads((res / "tasks/brain_age/vit_random/runs/ratio~0.5/seed~0/metrics.json").read_text())
    assert metrics["metrics"]["mae"] > 0 and metrics["n_train"] < 24
    surv = res / "tasks/survival_cox/braindino/runs/ratio~1/seed~0"
    assert (surv / "train_risk.parquet").exists()
    # the pretrained encoder was exported and its features cached once per dataset
    assert (res / "pretrain/braindino/weights.pth").exists()
    assert json.loads((res / "features/braindino/phantom_brainage/meta.json").read_text())["n_volumes"] > 0
    pert = pd.read_parquet(res / "perturbed/results/brain_age/braindino.parquet")
    assert set(pert["severity"]) == {1.0, 2.0}

    # a second run has nothing to do; forcing one task's heads reruns only that cell and its statistics
    again = _smk(wf, "-n", "--cores", "2", "--configfile", "config/tiny.yaml")
    assert "Nothing to be done" in again.stdout + again.stderr
    forced = _smk(wf, "-n", "--quiet", "rules", "--cores", "2", "--configfile", "config/tiny.yaml",
                  "-R", "results/tasks/brain_age/vit_random/runs")
    text = forced.stdout + forced.stderr
    assert "fit_heads" in text and "task_stats" in text and "pretrain" not in text and "extract_features" not in text


@pytest.mark.slow
def test_full_demo_config_runs(tmp_path):
    """The README's demo (config/config.yaml) end to end; minutes on 2 cores."""
    wf = _copy_workflow(tmp_path)
    proc = _smk(wf, "--cores", "2", "--configfile", "config/config.yaml", timeout=5400)
    assert proc.returncode == 0, proc.stderr[-6000:]
    summary = pd.read_csv(wf / "results/tables/summary.csv")
    assert len(summary) > 0
