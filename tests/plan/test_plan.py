"""``brainfm plan`` on the paper config: what is missing, the cost of the pretraining store, jobs and submissions."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from brainfm.cli import main
from brainfm.config import load_config
from brainfm.data.datasets import BUILTIN_ENTRIES
from brainfm.plan import format_plan, plan
from brainfm.plan.cost import volumes_of
from brainfm.preprocess.pipeline import projected_store_bytes

REPO = Path(__file__).resolve().parents[2]
PAPER = REPO / "config" / "paper.yaml"
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def _entry_yaml(name: str) -> dict:
    return yaml.safe_load((BUILTIN_ENTRIES / f"{name}.yaml").read_text())


@pytest.fixture
def paper_cfg():
    return load_config(PAPER)


def test_paper_plan_in_an_empty_directory_reports_everything_missing(tmp_path, monkeypatch, paper_cfg):
    monkeypatch.chdir(tmp_path)
    report = plan(PAPER, dry_run=False)
    text = format_plan(report)

    real = sorted(n for n, d in paper_cfg.datasets.items() if d.source in ("local", "download"))
    assert [d["dataset"] for d in report["datasets"]] == real and len(real) == 31  # BraTS-MET and BraTS-GoAT only for segmentation
    for d in report["datasets"]:
        entry = _entry_yaml(paper_cfg.datasets[d["dataset"]].registry)
        assert not d["found"] and d["access"] == entry["access"] in ("open", "registration", "dua")
        assert d["steps"] == entry["how_to_get"].strip()
        assert re.search(rf"MISSING  {d['dataset']} +{entry['access']} ", text)
        assert entry["how_to_get"].strip().splitlines()[0].strip() in text  # the steps are printed
    assert {d["access"] for d in report["datasets"]} == {"open", "registration", "dua"}

    keys = {w.path: w.key for w in paper_cfg.user_weights().values()}
    assert {w["path"]: w["key"] for w in report["weights"]} == keys and len(keys) == 5
    for w in report["weights"]:
        assert not w["found"]
        assert re.search(rf"MISSING  {re.escape(w['path'])} +config key {re.escape(w['key'])} ", text)

    # 6.6 M slices at 256 x 256 in float16, by hand and by projected_store_bytes' bytes per slice
    store = report["disk"]["pretrain_store"]
    assert store["bytes"] == 6_600_000 * 256 * 256 * 2
    assert store["bytes"] == 6_600_000 * projected_store_bytes(1)["pretrain"] // 128
    assert store["tb"] == pytest.approx(0.8650752)
    assert "6,600,000 slices x 131,072 B = 0.87 TB (0.79 TiB)" in text
    assert report["jobs"] == {"available": False, "reason": "dry run skipped (--no-dry-run)"}


def test_a_dataset_root_and_a_weights_file_on_disk_are_found(tmp_path, monkeypatch, paper_cfg):
    monkeypatch.chdir(tmp_path)
    (tmp_path / paper_cfg.datasets["adni"].path).mkdir(parents=True)
    weights = Path(paper_cfg.backbones["brainiac"].weights)
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"\0")
    report = plan(PAPER, dry_run=False)
    found = {d["dataset"] for d in report["datasets"] if d["found"]}
    assert found == {"adni"}
    assert {w["key"] for w in report["weights"] if w["found"]} == {"backbones.brainiac.weights"}
    text = format_plan(report)
    assert re.search(r"found    adni +dua +data/adni", text) and "\nadni: " not in text  # no steps for it
    assert re.search(r"found    weights/BrainIAC.ckpt +config key backbones.brainiac.weights", text)
    assert "30 missing" in text and "4 missing" in text


def test_volumes_and_pretraining_gpu_hours_follow_the_stated_sources(tmp_path, monkeypatch, paper_cfg):
    from brainfm.data.datasets import load_dataset_entry

    monkeypatch.chdir(tmp_path)
    assert volumes_of(load_dataset_entry("adni"))[0] == _entry_yaml("adni")["paper"]["n_images"] == 2182
    upenn = _entry_yaml("upenn_gbm")
    assert volumes_of(load_dataset_entry("upenn_gbm"))[0] == upenn["paper"]["n_subjects"] * len(upenn["modalities"])
    assert volumes_of(load_dataset_entry("icbm"))[0] is None  # the paper gives no count: not invented

    report = plan(PAPER, dry_run=False)
    rows = {g["run"]: g for g in report["gpu"] if g["rule"] == "pretrain"}
    dino = rows["braindino"]
    # stage 1 of §4.2: 500k iterations x 256 images per GPU x 4 GPUs at the published ~112 images/s/GPU
    assert dino["projected_hours"] == pytest.approx(500_000 * 256 * 4 / 112 / 3600)
    assert dino["wall_hours"] == pytest.approx(dino["projected_hours"] / 4)
    assert dino["source"].startswith("published figure") and "not measured" in dino["source"]
    assert dino["requested_gpu_hours"] == 4 * 20160 / 60
    assert rows["brainiac_simclr"]["projected_hours"] is None and "not projected" in rows["brainiac_simclr"]["source"]
    # a corpus of twice the slices needs twice the store
    double = plan(PAPER, dry_run=False, pretrain_slices=13_200_000)
    assert double["disk"]["pretrain_store"]["bytes"] == 2 * report["disk"]["pretrain_store"]["bytes"]


def test_plan_command_prints_text_and_json(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["plan", "--config", str(PAPER), "--no-dry-run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["datasets"]) == 31 and report["disk"]["pretrain_store"]["slices"] == 6_600_000
    assert main(["plan", "--config", str(PAPER), "--no-dry-run"]) == 0
    text = capsys.readouterr().out
    for section in ("DATASETS:", "WEIGHTS FILES:", "JOBS: not counted", "DISK", "GPU TIME",
                    "HOW TO GET THE MISSING DATASETS"):
        assert section in text
    assert main(["plan", "--config", str(tmp_path / "nowhere.yaml"), "--no-dry-run"]) == 2


def _job_stats(output: str) -> dict[str, int]:
    """The 'Job stats' table of a Snakemake dry run."""
    block = output.split("Job stats:", 1)[1]
    counts = {}
    for line in block.splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


@pytest.mark.slow
def test_dry_run_counts_match_the_snakemake_command_line(tmp_path, monkeypatch):
    """Jobs per rule and group allocations equal those of `snakemake -n` with the SLURM profile; CPU bench used."""
    from brainfm.bench.extraction import run as extraction_run

    monkeypatch.chdir(tmp_path)
    bench = extraction_run(tmp_path / "bench", device="cpu", threads=1, archs=("vit_base_patch16_dinov3",),
                           dtypes=("bf16",), batch_size=2, warmup=0, iters=1, roofline_n=128, roofline_iters=1,
                           overrides={"embed_dim": 64, "depth": 1, "num_heads": 2}, pipeline_volumes=0)
    report = plan(PAPER, snakefile=REPO / "workflow" / "Snakefile",
                  profile=REPO / "profiles" / "slurm" / "profile.yaml", bench_dir=tmp_path / "bench")
    jobs = report["jobs"]
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    base = [SNAKEMAKE, "-n", "--snakefile", str(REPO / "workflow" / "Snakefile"), "--configfile", str(PAPER)]
    quiet = subprocess.run([*base, "--workflow-profile", "none", "--cores", "2", "--quiet", "rules"],
                           capture_output=True, text=True, env=env, timeout=600)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert {r: v["jobs"] for r, v in jobs["per_rule"].items()} == _job_stats(quiet.stdout + quiet.stderr)
    slurm = subprocess.run([*base, "--workflow-profile", str(REPO / "profiles" / "slurm")],
                           capture_output=True, text=True, env=env, timeout=600)
    assert slurm.returncode == 0, slurm.stderr[-2000:]
    printed = re.findall(r"Group job (\w+)", slurm.stdout + slurm.stderr)
    assert {g: v["allocations"] for g, v in jobs["groups"].items()} == {g: printed.count(g) for g in set(printed)}
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "profile.yaml").read_text())["group-components"]
    for g, v in jobs["groups"].items():
        assert v["allocations"] == -(-v["jobs"] // profile[g])  # each group's jobs are independent components
    local = {r for r, v in jobs["per_rule"].items() if v["local"]}
    assert local == {"all", "cka_figure", "finetune_table", "perturbation_stats", "summary_table", "similarity_report",
                     "protocol_deviations", "corpus_figure", "dataset_table", "composite_figure",
                     "segmentation_stats", "segmentation_labels", "segmentation_figure", "pretrain_curves"}
    assert jobs["submissions"] == jobs["total_jobs"] - sum(v["jobs"] for v in jobs["groups"].values()) \
        - jobs["local_jobs"] + sum(v["allocations"] for v in jobs["groups"].values())
    assert 100 <= jobs["submissions"] <= 1000

    # extraction of the ViT-B backbones on the datasets with a published count, at the CPU figure
    rate = bench["results"][0]["slices_per_s"]
    cfg = load_config(PAPER)
    counted = {"abide": 1196, "adni": 2182, "oasis1": 235, "ppmi": 1441, "ucsf_pdgm": 452 * 4, "upenn_gbm": 603 * 4}
    vit_b = {b for b, s in cfg.backbones.items() if s.args.get("arch") == "vit_base_patch16_dinov3"}
    row = next(g for g in report["gpu"] if g["rule"] == "extract_features")
    planned = [(j["wildcards"]["backbone"], j["wildcards"]["dataset"]) for j in jobs["job_list"]
               if j["rule"] == "extract_features"]
    assert len(planned) == jobs["per_rule"]["extract_features"]["jobs"]
    expected = sum(counted[d] * 128 / rate / 3600 for b, d in planned if b in vit_b and d in counted)
    assert expected > 0 and row["projected_hours"] == pytest.approx(expected)
    assert "CPU figure" in row["unit"] and str(tmp_path / "bench" / "extraction.json") in row["source"]

