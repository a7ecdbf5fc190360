"""Training curves: teacher entropies, the curve a pretraining summary records, and the report figure/table."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.stats import entropy

from brainfm.config import PretrainSpec
from brainfm.errors import InputError
from brainfm.report.pretrain_curves import final_values, load_curves, pretrain_curves
from brainfm.ssl.dino import teacher_entropies
from brainfm.ssl.entry import pretrain

TINY_DINO = {"arch_overrides": {"embed_dim": 32, "depth": 2, "num_heads": 2, "patch_size": 8},
             "global_size": 32, "local_size": 16, "n_local": 2, "n_prototypes": 32, "head_hidden": 32,
             "head_bottleneck": 16, "iters": 4, "warmup_iters": 1, "batch_size": 4, "lr": 1e-3,
             "lr_scaling": "none", "teacher_temp_warmup_iters": 2, "freeze_last_layer_iters": 1,
             "num_workers": 0, "checkpoint_every": 10, "log_every": 1, "centering": "softmax"}
TINY_SIMCLR = {"arch": "resnet10", "input_size": 16, "batch_size": 3, "iters": 3, "num_workers": 0,
               "checkpoint_every": 10, "log_every": 1, "proj_hidden": 32, "proj_dim": 8}


def test_teacher_entropies_match_scipy_and_bound_each_other():
    k = 16
    uniform = torch.full((5, k), 1.0 / k)
    assert [float(v) for v in teacher_entropies(uniform)] == pytest.approx([math.log(k)] * 2)
    same = torch.zeros(6, k)
    same[:, 3] = 1.0  # collapse: every sample on one prototype
    assert [float(v) for v in teacher_entropies(same)] == pytest.approx([0.0, 0.0], abs=1e-6)
    distinct = torch.eye(k)  # sharp and diverse
    assert [float(v) for v in teacher_entropies(distinct)] == pytest.approx([0.0, math.log(k)], abs=1e-6)
    p = torch.softmax(torch.randn(7, k, generator=torch.Generator().manual_seed(0)) * 3, dim=1)
    per, batch = teacher_entropies(p)
    assert float(per) == pytest.approx(np.mean([entropy(r) for r in p.numpy()]), rel=1e-5)
    assert float(batch) == pytest.approx(entropy(p.numpy().mean(0)), rel=1e-5)
    assert float(batch) >= float(per)  # entropy is concave


@pytest.fixture(scope="module")
def summaries(slice_store, volume_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("curves")
    out = {}
    for name, recipe, params, store in (("dino_run", "dino", TINY_DINO, slice_store),
                                        ("simclr_run", "simclr", TINY_SIMCLR, volume_store)):
        spec = PretrainSpec.from_dict({"name": name, "recipe": recipe, "datasets": ["synth"], "params": params})
        d = root / name
        pretrain(spec, [store], d / "weights.pth", d / "summary.json", d / "work", precision="fp32")
        out[name] = d / "summary.json"
    return out


def test_summary_records_the_curve_ln_k_and_teacher_entropy(summaries):
    s = json.loads(summaries["dino_run"].read_text())
    assert s["precision"] == "fp32"
    curve = s["stages"][0]["curve"]
    assert curve["iteration"] == [0, 1, 2, 3]
    for col in ("loss", "dino", "ln_k", "teacher_entropy", "teacher_batch_entropy", "teacher_temp"):
        assert len(curve[col]) == 4 and all(v is not None and math.isfinite(v) for v in curve[col]), col
    ln_k = math.log(TINY_DINO["n_prototypes"])
    assert curve["ln_k"] == pytest.approx([ln_k] * 4)
    for per, batch in zip(curve["teacher_entropy"], curve["teacher_batch_entropy"]):
        assert 0.0 <= per <= batch + 1e-4 and batch <= ln_k + 1e-4
    # the curve is the CSV log, not a separate record
    rows = (summaries["dino_run"].parent / "work" / "stage1" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 5
    simclr = json.loads(summaries["simclr_run"].read_text())["stages"][0]["curve"]
    n_views = 2 * TINY_SIMCLR["batch_size"]
    assert simclr["uniform_loss"] == pytest.approx([math.log(n_views - 1)] * 3) and len(simclr["nt_xent"]) == 3


def test_pretrain_curves_writes_figure_and_table(summaries, tmp_path):
    files = [summaries["dino_run"], summaries["simclr_run"]]
    rows = pretrain_curves(files, tmp_path / "curves.png", tmp_path / "curves.md", labels={"dino_run": "DINO demo"})
    assert (tmp_path / "curves.png").stat().st_size > 0 and (tmp_path / "curves.pdf").exists()
    dino, simclr = rows
    curve = json.loads(summaries["dino_run"].read_text())["stages"][0]["curve"]
    # the final loss averages the last logged values (here all four: fewer than FINAL_LOGS)
    assert dino["loss"] == pytest.approx(sum(curve["dino"]) / 4) and dino["uniform_loss"] == pytest.approx(math.log(32))
    assert dino["loss_over_uniform"] == pytest.approx(dino["loss"] / dino["uniform_loss"])
    assert dino["teacher_information"] == pytest.approx(dino["teacher_batch_entropy"] - dino["teacher_entropy"])
    assert dino["teacher_information"] >= -1e-4  # entropy is concave
    assert simclr["teacher_entropy"] is None and simclr["uniform_loss"] == pytest.approx(math.log(5))
    table = (tmp_path / "curves.md").read_text()
    assert "DINO demo" in table and "simclr_run" in table and len(table.strip().splitlines()) == 4
    assert final_values(load_curves([files[0]])[0]) == dino


def test_final_loss_is_the_mean_of_the_last_logs_and_skips_missing_values():
    from brainfm.report.pretrain_curves import FINAL_LOGS

    losses = [9.0, 8.0, None, 3.0, 2.0, float("nan"), 4.0, 1.0, 5.0]
    run = {"run": "r", "recipe": "simclr", "curve": {"iteration": list(range(len(losses))), "nt_xent": losses,
                                                     "uniform_loss": [3.4] * len(losses)}}
    got = final_values(run)
    tail = [3.0, 2.0, 4.0, 1.0, 5.0][-FINAL_LOGS:]
    assert got["loss"] == pytest.approx(sum(tail) / len(tail)) and got["uniform_loss"] == 3.4
    assert final_values({**run, "curve": {**run["curve"], "nt_xent": [None] * len(losses)}})["loss"] is None


def test_a_summary_without_curve_is_refused_with_its_path(tmp_path):
    bad = tmp_path / "summary.json"
    bad.write_text(json.dumps({"recipe": "dino", "run": "x", "stages": [{"stage": "1"}]}))
    with pytest.raises(InputError, match="no training curve") as err:
        load_curves([bad])
    assert str(bad) in str(err.value)
