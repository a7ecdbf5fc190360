"""The Snakemake workflow: lint, planning, and the demo DAG in miniature end to end."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
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


def _smk(cwd: Path, *args: str, timeout: int = 1500, preload: bool = False) -> subprocess.CompletedProcess:
    """Snakemake in ``cwd``; with ``preload``, as `make demo` runs it (brainfm steps forked from one process)."""
    wrapper = [str(Path(sys.executable).with_name("brainfm")), "preload", "--"] if preload else []
    return subprocess.run([*wrapper, SNAKEMAKE, "--workflow-profile", "none", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=ENV)


@pytest.mark.xdist_group("workflow")
def test_lint_is_clean():
    proc = subprocess.run([SNAKEMAKE, "--lint", "--configfile", "config/config.yaml"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Lints for" not in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-3000:]


@pytest.mark.parametrize("caption", sorted((REPO / "workflow" / "report").glob("*.rst")), ids=lambda p: p.name)
def test_report_captions_render_without_warnings(caption):
    """Snakemake renders each caption as reStructuredText: stray ``**`` or bad markup shows broken in the report."""
    import io

    from docutils.core import publish_parts

    warnings = io.StringIO()
    publish_parts(caption.read_text(), writer="html", settings_overrides={"warning_stream": warnings})
    assert warnings.getvalue() == "", f"{caption.name}: {warnings.getvalue()}"


def _planned_rules(wf: Path, configfile: str) -> str:
    """Output of a dry run listing the rules that would run (fails the test if planning fails)."""
    proc = _smk(wf, "-n", "--quiet", "rules", "--cores", "2", "--configfile", configfile, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.mark.xdist_group("workflow")
def test_demo_config_plans_every_rule_family(tmp_path):
    out = _planned_rules(_copy_workflow(tmp_path), "config/config.yaml")
    for rule in ("phantom_dataset", "preprocess", "pretrain", "extract_features", "fit_heads", "knn_probe",
                 "task_stats", "knn_stats", "cka", "summary_table", "prepare_segmentation", "segment",
                 "segmentation_stats", "segmentation_labels", "segmentation_figure"):
        assert rule in out, f"{rule} missing from the demo plan"


@pytest.mark.xdist_group("workflow")
def test_paper_config_plans_and_missing_inputs_stop_with_instructions(tmp_path):
    """config/paper.yaml plans the whole grid; absent real data and weights fail with what to fetch."""
    wf = _copy_workflow(tmp_path)
    out = _planned_rules(wf, "config/paper.yaml")
    for rule in ("real_dataset", "union_dataset", "subset_dataset", "user_weights", "pretrain", "fit_heads",
                 "knn_probe", "preprocess_perturbed", "cka", "task_stats", "summary_table", "segmentation_stats",
                 "segmentation_labels", "segmentation_figure"):
        assert rule in out, f"{rule} missing from the paper plan"
    # segmentation: 4 BraTS benchmarks prepared once each; 4 benchmarks x 5 backbones x 6 ratios training jobs
    counts = dict(re.findall(r"^(prepare_segmentation|segment|segment_finetune)\s+(\d+)$", out, flags=re.M))
    # and Supp. Table 6: BrainDINO fine-tuned at 10% and 100% on each benchmark
    assert counts == {"prepare_segmentation": "4", "segment": "120", "segment_finetune": "8"}, out
    proc = _smk(wf, "results/data/adni/manifest.parquet", "weights/bmmae.pth", "--keep-going", "--cores", "1",
                "--retries", "0", "--configfile", "config/paper.yaml", timeout=600)
    assert proc.returncode != 0
    adni = (wf / "results/logs/data/adni.log").read_text()
    assert "adni.loni.usc.edu" in adni and "config/datasets/adni.yaml" in adni and "Traceback" not in adni
    weights = (wf / "results/logs/weights/weights/bmmae.pth.log").read_text()
    assert "weights/bmmae.pth: backbones.bmmae.weights names this weights file, which does not exist" in weights
    assert not (wf / "results/data/adni/manifest.parquet").exists()


@pytest.mark.xdist_group("workflow")
def test_bad_config_is_rejected_with_a_clear_message(tmp_path):
    wf = _copy_workflow(tmp_path)
    bad = (wf / "config" / "tiny.yaml").read_text().replace("dataset: phantom_brainage", "dataset: nowhere", 1)
    (wf / "config" / "bad.yaml").write_text(bad)
    proc = _smk(wf, "-n", "--cores", "1", "--configfile", "config/bad.yaml")
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    # one line naming the file and the key, once
    assert out.count("config/bad.yaml: tasks.brain_age.dataset: 'nowhere' is not declared under datasets") == 1, out


@pytest.mark.xdist_group("workflow")
def test_tiny_demo_dag_end_to_end(tmp_path):
    wf = _copy_workflow(tmp_path)
    proc = _smk(wf, "--cores", "2", "--configfile", "config/tiny.yaml", preload=True)
    assert proc.returncode == 0, proc.stderr[-6000:]
    res = wf / "results"
    for task in ("brain_age", "adni_3class", "survival_cox", "knn_adni", "brain_age_strata", "survival_cox_km"):
        for ext in ("md", "csv", "tex"):
            assert (res / "tables" / f"{task}.{ext}").stat().st_size > 0
    for fig in ("ratio_brain_age", "ratio_adni_3class", "ratio_survival_cox", "knn_knn_adni", "cka", "perturbations",
                "strata_brain_age", "km_survival_cox", "similarity", "pretrain_curves"):
        assert (res / "figures" / f"{fig}.png").stat().st_size > 1000
        assert (res / "figures" / f"{fig}.pdf").exists()
    # each pretrained backbone against its configured random-init control, stated in the summary
    controls = pd.read_parquet(res / "stats/brain_age/controls.parquet")
    assert set(zip(controls["reference"], controls["backbone"])) == {("braindino", "vit_random")}
    assert "vs vit_random at 50%: " in (res / "tables" / "summary.md").read_text()  # the tiny grid's fewest labels
    # every rule left a benchmark file under its own name; brainfm bench --only demo reads them
    assert {"phantom_dataset", "pretrain", "extract_features", "fit_heads", "task_stats"} <= {
        p.name for p in (res / "benchmarks").iterdir()}
    assert "| dino |" in (res / "tables" / "pretrain_curves.md").read_text()
    # Supplementary Table 6: frozen vs fine-tuned on the same test subjects
    tuned = pd.read_parquet(res / "tasks/brain_age/braindino/finetune/ratio~1/seed~0/predictions.parquet")
    frozen = pd.read_parquet(res / "tasks/brain_age/braindino/runs/ratio~1/seed~0/predictions.parquet")
    assert sorted(tuned["subject"]) == sorted(frozen["subject"])
    table = (res / "tables" / "finetune_braindino.md").read_text()
    assert "braindino (fine-tuned)" in table and "braindino (frozen)" in table
    tidy = pd.read_parquet(res / "tables" / "finetune_braindino.parquet")  # with its segmentation rows
    assert {"dice_WT", "dice_TC", "dice_ET", "mae"} <= set(tidy["metric"])

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
    # segmentation: per-case Dice of each job, Supp. Tables 5/7, Figs. 2/3a, rows in the summary
    for name in ("segmentation_dice", "segmentation_labels"):
        assert (res / "tables" / f"{name}.md").stat().st_size > 0
    for name in ("segmentation_dice", "segmentation_examples"):
        assert (res / "figures" / f"{name}.png").stat().st_size > 1000
    dice = pd.read_parquet(res / "segmentation/phantom_tumor/runs/vit_random/ratio~1/seed~0/dice.parquet")
    assert set(dice["region"]) == {"WT", "TC", "ET"} and dice["dice"].between(0, 1).all()
    assert "All background" in (res / "tables/segmentation_dice.md").read_text()
    assert "dice_WT" in (res / "tables/summary.md").read_text()
    # Supp. Table 18: vit_random tested against braindino at each severity
    tests = pd.read_parquet(res / "stats/perturbations/comparison.parquet")
    assert tests.loc[tests.backbone == "vit_random", "p_value"].between(0, 1).all()
    # Fig. 6a: every backbone has a separation AUC for every reference
    sim = pd.read_parquet(res / "analysis/similarity_auc.parquet")
    assert set(sim["backbone"]) == {"braindino", "brainiac_simclr", "vit_random"} and len(sim) == 9
    # Fig. 1a, Supp. Table 2, the composite Fig. 3 and the protocol deviations
    assert (res / "figures" / "corpus.png").stat().st_size > 1000 and (res / "figures" / "fig3.pdf").exists()
    corpus = pd.read_csv(res / "tables" / "corpus.csv")
    manifest = pd.read_parquet(res / "data/phantom_pretrain/manifest.parquet")
    assert corpus.loc[corpus.dataset == "phantom_pretrain", "volumes"].sum() == len(manifest)
    datasets = pd.read_csv(res / "tables" / "datasets.csv").set_index("dataset")
    assert datasets.loc["phantom_adni", "subjects"] == 12 and "task adni_3class" in datasets.loc["phantom_adni", "role"]
    assert "deviation(s) from the paper's stated protocol" in (res / "tables" / "protocol_deviations.md").read_text()

    # a second run has nothing to do; forcing one task's heads reruns only that cell and its statistics
    again = _smk(wf, "-n", "--cores", "2", "--configfile", "config/tiny.yaml")
    assert "Nothing to be done" in again.stdout + again.stderr
    forced = _smk(wf, "-n", "--quiet", "rules", "--cores", "2", "--configfile", "config/tiny.yaml",
                  "-R", "results/tasks/brain_age/vit_random/runs")
    text = forced.stdout + forced.stderr
    assert "fit_heads" in text and "task_stats" in text and "pretrain" not in text and "extract_features" not in text
    # one segmentation cell reruns alone: no new benchmark preparation, the statistics follow
    forced = _smk(wf, "-n", "--quiet", "rules", "--cores", "2", "--configfile", "config/tiny.yaml",
                  "-R", "results/segmentation/phantom_tumor/runs/vit_random/ratio~1/seed~0")
    text = forced.stdout + forced.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", text, flags=re.M))
    assert counts.get("segment") == "1" and "segmentation_stats" in counts and "prepare_segmentation" not in counts

    # the jobs above were forked from one preloading process; in fresh processes two of them give the same numbers
    features, runs = "results/features/braindino/phantom_brainage", "results/tasks/brain_age/braindino/runs"
    arrays = {p.name: np.load(p) for p in sorted((wf / features).glob("*.npy"))}
    predictions = pd.read_parquet(wf / runs / "ratio~1/seed~0/predictions.parquet")
    fresh = _smk(wf, "--cores", "2", "--configfile", "config/tiny.yaml", "--forcerun", features, "--", runs)
    assert fresh.returncode == 0 and "extract_features" in fresh.stderr, fresh.stderr[-3000:]
    assert arrays and all(np.array_equal(np.load(wf / features / name), a) for name, a in arrays.items())
    pd.testing.assert_frame_equal(pd.read_parquet(wf / runs / "ratio~1/seed~0/predictions.parquet"), predictions,
                                  check_exact=True)


@pytest.mark.slow
def test_full_demo_config_runs(tmp_path):
    """The README's demo (config/config.yaml) end to end; minutes on 2 cores."""
    wf = _copy_workflow(tmp_path)
    proc = _smk(wf, "--cores", "2", "--configfile", "config/config.yaml", timeout=5400)
    assert proc.returncode == 0, proc.stderr[-6000:]
    summary = pd.read_csv(wf / "results/tables/summary.csv")
    assert len(summary) > 0
    res = wf / "results"
    for name in ("finetune_braindino", "perturbations", "knn_adni", "brain_age", "survival_cox"):
        assert (res / "tables" / f"{name}.md").stat().st_size > 0, name
    assert (res / "figures/km_survival_cox.png").exists() and (res / "figures/strata_brain_age.png").exists()
    # every encoder beats predicting the training mean age on the phantom brain-age task
    manifest = pd.read_parquet(res / "data/phantom_brainage/manifest.parquet")
    for run in sorted(res.glob("tasks/brain_age/*/runs/ratio~1/seed~0/predictions.parquet")):
        pred = pd.read_parquet(run)
        mean_age = manifest.loc[~manifest["subject"].isin(pred["subject"]), "age"].mean()
        assert (pred["y_true"] - pred["y_pred"]).abs().mean() < (pred["y_true"] - mean_age).abs().mean(), run


def test_paper_config_values_pass_the_package_validators():
    """Every pretraining recipe, stage and task of config/paper.yaml is accepted by the code that runs it."""
    from brainfm.config import load_config
    from brainfm.ssl.config import BrainFoundConfig, SimCLRConfig
    from brainfm.ssl.entry import dino_stage_configs

    cfg = load_config(REPO / "config" / "paper.yaml")
    stage1, stage2 = dino_stage_configs(cfg.pretrain["braindino"])
    assert (stage1.global_size, stage1.local_size, stage1.n_local, stage1.n_prototypes) == (256, 112, 8, 65536)
    assert (stage1.momentum, stage1.koleo_weight, stage1.layer_decay, stage1.clip_grad) == (0.994, 0.1, 0.9, 3.0)
    assert (stage1.iters, stage1.warmup_iters, stage1.batch_size, stage1.lr) == (500_000, 10_000, 256, 1e-4)
    assert stage2.upsample_to == 1024 and stage2.batch_size == 56 and stage2.iters == 10_000
    assert [list(p) for p in stage2.crop_pairs] == [[512, 112], [768, 112], [768, 168], [768, 224], [768, 336]]
    simclr = SimCLRConfig.from_dict(dict(cfg.pretrain["brainiac_simclr"].params))
    assert (simclr.arch, simclr.input_size, simclr.batch_size) == ("resnet50", 128, 32)
    BrainFoundConfig.from_dict(dict(cfg.pretrain["brainfound"].params))
    assert cfg.pretrain["brainfound"].init == "weights/dinov2_vitl14_pretrain.pth"
    assert cfg.backbones["braindino"].weights == "results/pretrain/braindino/weights.pth"
