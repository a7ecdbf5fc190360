"""The configuration model: schema defaults, cross-checks, JSON round trips, errors naming file and key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from brainfm.config import (
    BackboneSpec,
    PerturbationSetting,
    PretrainSpec,
    ProtocolSpec,
    StatsSpec,
    TaskSpec,
    WeightsRef,
    load_config,
)
from brainfm.config.schema import defaults_of, load_schema
from brainfm.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
CONFIGS = [REPO / "config" / "config.yaml", REPO / "config" / "paper.yaml", REPO / "tests" / "workflow" / "config.tiny.yaml"]

MINIMAL = {
    "datasets": {"d": {"source": "phantom"}},
    "backbones": {"braindino": {"encoder": "vit_random"}},
    "tasks": {"age": {"dataset": "d", "kind": "regression", "target": "age"}},
}


def _write(tmp_path: Path, cfg: dict) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load_and_every_spec_round_trips(path):
    cfg = load_config(path)
    for group in (cfg.datasets, cfg.backbones, cfg.tasks, cfg.pretrain):
        for spec in group.values():
            again = type(spec).from_json(spec.to_json())
            # json=False fields (DAG-only provenance) are not in the JSON; everything else survives
            assert again.to_json() == spec.to_json()
    for spec in (cfg.phantom, cfg.preprocess, cfg.features, cfg.head, cfg.finetune, cfg.perturbations, cfg.stats):
        assert type(spec).from_json(spec.to_json()) == spec


def test_importing_the_config_model_does_not_import_torch_or_pandas():
    code = ("import sys; import brainfm.config as c; c.load_config('config/config.yaml'); "
            "print(sorted(m for m in ('torch', 'pandas', 'numpy', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_defaults_come_from_the_schema_only(tmp_path):
    cfg = load_config(_write(tmp_path, MINIMAL))
    schema = load_schema()
    head_defaults = {k: v["default"] for k, v in schema["definitions"]["head"]["properties"].items()}
    assert cfg.head.to_dict() == head_defaults == defaults_of("head")
    task = cfg.tasks["age"]
    assert task.head == cfg.head  # a task without overrides inherits the run's head
    assert list(task.ratios) == schema["properties"]["ratios"]["default"]
    assert task.backbones == ("braindino",) and task.loss == "mse" and task.unit == "session"
    assert cfg.preprocess.protocol.cube == 256 and cfg.preprocess.protocol.pretrain_slices == {
        "n": 128, "mu": 128.0, "sigma": 50.0}
    assert cfg.datasets["d"].n_subjects == 20 and cfg.datasets["d"].registry == "d"
    assert cfg.stats == StatsSpec.from_json("{}")


def test_pretraining_and_fine_tuning_threads_default_to_two_and_the_demo_runs_one():
    """The rules' Snakemake threads: two by default, one in the demo (two 1-thread jobs share 2 cores)."""
    paper, demo = load_config(CONFIGS[1]), load_config(CONFIGS[0])
    assert {spec.threads for spec in paper.pretrain.values()} == {2} and paper.finetune.threads == 2
    assert {spec.threads for spec in demo.pretrain.values()} == {1} and demo.finetune.threads == 1


def test_task_head_overrides_merge_with_the_run_head(tmp_path):
    raw = {**MINIMAL, "head": {"lr": 3e-4, "patience": 7},
           "tasks": {"age": {**MINIMAL["tasks"]["age"], "head": {"lr": 1e-3}}}}
    task = load_config(_write(tmp_path, raw)).tasks["age"]
    assert (task.head.lr, task.head.patience, task.head.optimizer) == (1e-3, 7, "adam")
    # the spec handed to a command is complete on its own
    assert TaskSpec.from_json(task.to_json()) == task


def test_unit_can_be_set_and_has_a_derived_default(tmp_path):
    raw = {**MINIMAL, "tasks": {"seq": {"dataset": "d", "kind": "classification", "target": "modality",
                                        "classes": ["T1", "T2"]},
                                "seq2": {"dataset": "d", "kind": "classification", "target": "modality",
                                         "classes": ["T1", "T2"], "unit": "session"}}}
    cfg = load_config(_write(tmp_path, raw))
    assert cfg.tasks["seq"].unit == "image" and cfg.tasks["seq2"].unit == "session"


@pytest.mark.parametrize("edit, key", [
    (lambda c: c["tasks"]["age"].update(dataset="nowhere"), "tasks.age.dataset: 'nowhere' is not declared"),
    (lambda c: c["tasks"]["age"].update(kind="ranking"), "tasks.age.kind: 'ranking' is not one of"),
    (lambda c: c["tasks"]["age"].update(splitt={}), "tasks.age: unknown key(s) ('splitt' was unexpected)"),
    (lambda c: c["tasks"]["age"].update(head={"learning_rate": 1}), "tasks.age.head: unknown key 'learning_rate'"),
    (lambda c: c["backbones"]["braindino"].update(weights="pretrain:nope"),
     "backbones.braindino.weights: 'pretrain:nope' names no run"),
    (lambda c: c["backbones"]["braindino"].update(weights="none"), "backbones.braindino.weights: write null"),
    (lambda c: c.update(stats={"reference": "ghost"}), "stats.reference: 'ghost' is not a backbone"),
    (lambda c: c.update(stats={"controls": {"braindino": "ghost"}}), "stats.controls: 'ghost' is not a backbone"),
    (lambda c: c.update(stats={"controls": {"braindino": "braindino"}}), "cannot be its own control"),
    (lambda c: (c["backbones"].update(p={"encoder": "prior"}), c.update(stats={"controls": {"braindino": "p"}})),
     "stats.controls.braindino: reference rows ('braindino' -> 'p') have no random initialisation"),
    (lambda c: (c["backbones"].update(w={"encoder": "braindino", "weights": "w.pth"}),
                c.update(stats={"controls": {"braindino": "w"}})),
     "stats.controls.braindino: the control 'w' loads weights"),
    (lambda c: c.update(preprocess={"cube": 64}), "preprocess: pretrain_slices.n=128 must be in [1, cube=64]"),
    (lambda c: c.update(perturbations={"grid": {"blur": [1]}}), "perturbations.grid: unknown key 'blur'"),
    (lambda c: c.update(finetune={"tasks": ["age"], "backbones": ["x"]}), "finetune.backbones: 'x' is not a backbone"),
    (lambda c: c["datasets"].update(s={"source": "subset", "of": "d", "train_of": "nope"}),
     "datasets.s.train_of: 'nope' is not a task"),
    (lambda c: c.update(precision="fp16"), "precision: 'fp16' is not one of"),
    (lambda c: c.update(features={"amp_bf16": True}), "features: unknown key(s) ('amp_bf16' was unexpected)"),
    (lambda c: c.update(features={"volume_batch": 0}), "features.volume_batch: 0 is less than the minimum of 1"),
])
def test_config_errors_name_the_file_and_the_key(tmp_path, edit, key):
    raw = json.loads(json.dumps(MINIMAL))
    edit(raw)
    path = _write(tmp_path, raw)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and key in msg, msg


def test_weights_references_are_parsed_and_resolved_in_one_place(tmp_path):
    assert WeightsRef.parse(None) == WeightsRef()
    assert WeightsRef.parse("pretrain:run1").run == "run1"
    assert WeightsRef.parse("w/file.pth").file == "w/file.pth"
    raw = {**MINIMAL, "results": "out",
           "pretrain": {"run1": {"recipe": "brainfound", "datasets": ["d"], "init": "pretrain:run0"},
                        "run0": {"recipe": "dino", "datasets": ["d"]}},
           "backbones": {"braindino": {"encoder": "braindino", "weights": "pretrain:run1"},
                         "c": {"encoder": "dinov3", "weights": "w/dinov3.pth"}}}
    cfg = load_config(_write(tmp_path, raw))
    b = cfg.backbones["braindino"]
    assert b.weights == "out/pretrain/run1/weights.pth" and b.pretrain_run == "run1"
    assert cfg.pretrain["run1"].init == "out/pretrain/run0/weights.pth"
    assert list(cfg.user_weights()) == ["w/dinov3.pth"] and cfg.user_weights()["w/dinov3.pth"].encoder == "dinov3"
    # a command rebuilds the backbone from JSON with a concrete file, no layout knowledge needed
    assert BackboneSpec.from_json(b.to_json()).weights == "out/pretrain/run1/weights.pth"
    assert PretrainSpec.from_json(cfg.pretrain["run1"].to_json()).recipe_info.encoder == "brainfound"


def test_perturbation_settings_skip_the_identity_and_parse_their_tags(tmp_path):
    raw = {**MINIMAL, "perturbations": {"tasks": ["age"], "grid": {"gamma": [0.5, 1.0, 2.0], "bias": [0.0, 0.4]}}}
    cfg = load_config(_write(tmp_path, raw))
    assert [s.tag for s in cfg.perturbation_settings()] == ["bias~0.4", "gamma~0.5", "gamma~2"]
    assert cfg.perturbations.backbones == ("braindino",)
    assert PerturbationSetting.parse("gamma~2") == PerturbationSetting("gamma", 2.0)
    assert PerturbationSetting.parse("contrast:0.5") == PerturbationSetting("gamma", 0.5)
    with pytest.raises(ConfigError, match="KIND~SEVERITY"):
        PerturbationSetting.parse("gamma")


def test_protocol_spec_rejects_unknown_keys_and_inconsistent_values():
    with pytest.raises(ConfigError, match="unknown key"):
        ProtocolSpec.from_dict({"cubes": 3})
    with pytest.raises(ConfigError, match="clip_percentiles"):
        ProtocolSpec.from_dict({"clip_percentiles": [99, 1]})
    assert ProtocolSpec.from_dict({"cube": 48, "pretrain_slices": {"n": 24, "mu": 24, "sigma": 9.4}}).cube == 48


def test_subsets_share_their_parents_cohort_for_leakage_checks(tmp_path):
    raw = {**MINIMAL, "datasets": {"d": {"source": "phantom"},
                                   "d_pre": {"source": "subset", "of": "d", "train_of": "age"}},
           "pretrain": {"r": {"recipe": "dino", "datasets": ["d_pre"]}}}
    cfg = load_config(_write(tmp_path, raw))
    assert cfg.datasets["d_pre"].cohort == "d"
    assert cfg.pretrain_manifests_for("d") == ["results/data/d_pre/manifest.parquet"]
    assert cfg.products("d_pre") == ("pretrain",) and cfg.products("d") == ("downstream",)


def test_similarity_maps_skip_reference_rows_and_refuse_them_by_name(tmp_path):
    """Reference rows (prior, image statistics, oracle) have no patch tokens: off by default, an error by name."""
    demo = load_config(REPO / "config" / "config.yaml")
    assert demo.similarity_backbones() and not {"prior", "image_stats", "phantom_oracle"} & set(
        demo.similarity_backbones())
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    raw["analysis"]["similarity"]["backbones"] = ["braindino", "image_stats"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=r"bad.yaml: analysis.similarity.backbones: 'image_stats' is a reference row"):
        load_config(bad)


def test_segmentation_fine_tuning_cells_pair_the_finetune_grid_with_the_segmentation_grid(tmp_path):
    """Supp. Table 6's segmentation rows: finetune backbones x its ratios that the segmentation grid also runs."""
    paper = load_config(REPO / "config" / "paper.yaml")
    cells = paper.segmentation_finetune_cells()
    assert {(b, r) for _, b, r, _ in cells} == {("braindino", 0.1), ("braindino", 1.0)}
    assert len(cells) == 2 * len(paper.segmentation.benchmarks) * len(paper.segmentation.seeds)
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert load_config(REPO / "config" / "config.yaml").segmentation_finetune_cells() == []  # finetune: false
    raw["segmentation"].update(finetune=True, ratios=[0.2, 1.0])  # finetune ratios 0.1, 1.0: only 100% pairs
    demo = load_config(_write(tmp_path, raw))
    assert demo.segmentation_finetune_cells() == [("phantom_tumor", "braindino", 1.0, 0)]
    assert json.loads(demo.segmentation.finetune_job_json())["encoder_lr"] == 3e-5
