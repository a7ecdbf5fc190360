"""The `segmentation:` section: defaults, inherited ratios/seeds, the grid, errors naming file and key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from brainfm.config import SegmentationSpec, load_config
from brainfm.config.segmentation import JOB_KEYS
from brainfm.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

BASE = {
    "datasets": {"tumor": {"source": "phantom", "registry": "phantom_tumor"},
                 "glioma": {"source": "local", "registry": "brats2021", "path": "data/brats2021"},
                 "ixi": {"source": "local", "path": "data/ixi"}},
    "backbones": {"braindino": {"encoder": "vit_random"}, "bmmae": {"encoder": "bmmae"}},
    "ratios": [0.25, 1.0],
    "seeds": [3, 4],
    "segmentation": {"benchmarks": ["tumor", "glioma"],
                     "backbones": {"braindino": {"configuration": "2d_48"}, "bmmae": {"configuration": "3d_32"}}},
}


def _load(tmp_path: Path, cfg: dict):
    path = tmp_path / "seg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_config(path), str(path)


def test_defaults_grid_and_inherited_ratios_and_seeds(tmp_path):
    cfg, _ = _load(tmp_path, BASE)
    seg = cfg.segmentation
    assert seg.enabled and seg.ratios == (0.25, 1.0) and seg.seeds == (3, 4)
    assert (seg.epochs, seg.iterations_per_epoch, seg.val_iterations_per_epoch, seg.fold) == (100, 250, 50, 0)
    assert seg.adjust == "none" and seg.all_background
    assert seg.configurations() == ["2d_48", "3d_32"]
    assert len(seg.cells()) == 2 * 2 * 2 * 2
    assert cfg.segmentation_benchmarks() == ["tumor", "glioma"]
    assert cfg.layout.segmentation_run("tumor", "braindino", 0.25, 3) == \
        "results/segmentation/tumor/runs/braindino/ratio~0.25/seed~3"
    # own ratios and seeds replace the top-level ones
    own = copy.deepcopy(BASE)
    own["segmentation"].update(ratios=[0.5], seeds=[0])
    assert sorted(_load(tmp_path, own)[0].segmentation.cells()) == [
        ("glioma", "bmmae", 0.5, 0), ("glioma", "braindino", 0.5, 0), ("tumor", "bmmae", 0.5, 0),
        ("tumor", "braindino", 0.5, 0)]


def test_spec_round_trips_and_job_settings_rebuild_the_same_training_keys(tmp_path):
    seg = _load(tmp_path, BASE)[0].segmentation
    assert SegmentationSpec.from_json(seg.to_json()) == seg
    job = SegmentationSpec.from_json(seg.job_json())
    assert all(getattr(job, k) == getattr(seg, k) for k in JOB_KEYS)
    assert seg.train_settings() == {"num_epochs": 100, "iterations_per_epoch": 250, "val_iterations_per_epoch": 50,
                                    "plot_progress": True}


def test_shipped_configs_plan_the_paper_grid_and_the_demo():
    paper = load_config(REPO / "config" / "paper.yaml").segmentation
    assert paper.benchmarks == ("brats2021", "brats2023_men", "brats2023_mets", "brats2024_goat")
    assert set(paper.backbones) == {"braindino", "dinov3", "brainmvp", "bmmae", "brainiac"}
    assert paper.ratios == (0.1, 0.2, 0.4, 0.6, 0.8, 1.0) and len(paper.cells()) == 4 * 5 * 6 * len(paper.seeds)
    assert paper.backbones["braindino"].configuration == "2d_256" and paper.backbones["brainiac"].configuration == "3d_96"
    assert paper.resources["gpu"] == 1
    # MEN pretraining subjects (the sequence task's training subjects, pooled through a union) are checked
    full = load_config(REPO / "config" / "paper.yaml")
    assert full.segmentation_pretrain_manifests("brats2023_men") == ["results/data/brats2023_men_pretrain/manifest.parquet"]
    assert full.segmentation_perturbed() == [("brats2021", b) for b in ("braindino", "brainiac", "bmmae", "brainmvp")]
    demo = load_config(REPO / "config" / "config.yaml").segmentation
    assert demo.benchmarks == ("phantom_tumor",) and {"braindino", "vit_random"} <= set(demo.backbones)


@pytest.mark.parametrize("change,message", [
    (lambda s: s.update(epoch=3), "segmentation: unknown key(s) ('epoch' was unexpected)"),
    (lambda s: s["backbones"]["braindino"].update(configuration="256"),
     "segmentation.backbones.braindino.configuration: '256' does not match"),
    (lambda s: s.update(fold=7), "segmentation.fold: 7 is not valid"),
    (lambda s: s.update(benchmarks=["nowhere"]), "segmentation.benchmarks: 'nowhere' is not a dataset of this config"),
    (lambda s: s["backbones"].update(other={"configuration": "2d_48"}),
     "segmentation.backbones: 'other' is not a backbone of this config"),
    (lambda s: s.update(benchmarks=["ixi"]), "segmentation.benchmarks: 'ixi' has no tumour label map"),
    (lambda s: s.update(batch_sizes={"2d_256": 8}),
     "segmentation.batch_sizes: '2d_256' is not the configuration of any segmentation backbone"),
    (lambda s: s.update(backbones={}), "segmentation.backbones: none given"),
])
def test_bad_values_name_the_file_and_the_key(tmp_path, change, message):
    cfg = copy.deepcopy(BASE)
    change(cfg["segmentation"])
    path = tmp_path / "seg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value), str(err.value)
