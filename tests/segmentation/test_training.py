"""nnU-Net training on the frozen encoder: bit-identical encoder, optimiser, schedule, one job end to end."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from brainfm.errors import LeakageError
from brainfm.segmentation.job import DICE_TABLE_COLUMNS, job_configuration, run_segmentation_job
from brainfm.segmentation.nnunet_env import nnunet_environment
from brainfm.segmentation.trainer import PAPER_3D, FrozenEncoderTrainer, GroupPolyLR, TrainSettings

# one xdist worker builds the session's prepared benchmark once and runs all of these
pytestmark = pytest.mark.xdist_group("segmentation-benchmark")

QUICK = dict(num_epochs=1, iterations_per_epoch=3, val_iterations_per_epoch=1, plot_progress=False)


def _trainer(prepared, tmp_path, tiny_vit, settings, training_cases=None):
    plans, cfg = job_configuration(prepared.plans(), "2d_48", "tiny", encoder="vit_random", encoder_kwargs=tiny_vit)
    plans["continue_training"] = False
    trainer = FrozenEncoderTrainer(plans, cfg, 0, prepared.dataset_json(), device=torch.device("cpu"))
    trainer.configure(settings, training_cases)
    return trainer


def test_encoder_is_bit_identical_after_training_steps(prepared, tmp_path, tiny_vit):
    torch.set_num_threads(1)
    with nnunet_environment(prepared.tree.with_results(tmp_path)):
        trainer = _trainer(prepared, tmp_path, tiny_vit, TrainSettings(**QUICK))
        trainer.on_train_start()
        net = trainer.network
        before = {k: v.clone() for k, v in net.encoder.state_dict().items()}
        trainable = {n: p.detach().clone() for n, p in net.named_parameters() if p.requires_grad}
        trainer.on_train_epoch_start()
        losses = [trainer.train_step(next(trainer.dataloader_train))["loss"] for _ in range(3)]
        trainer.on_train_end()
    assert np.isfinite(losses).all()
    after = net.encoder.state_dict()
    assert before.keys() == after.keys()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k  # bit-identical, buffers included
    moved = [n for n, p in net.named_parameters() if p.requires_grad and not torch.equal(p, trainable[n])]
    assert "fuse.weight" in moved and any(n.startswith("decoder.") for n in moved)
    optimised = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert optimised == {id(p) for p in net.parameters() if p.requires_grad}
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    assert trainer.optimizer.param_groups[0]["betas"] == (0.9, 0.98)
    assert trainer.optimizer.param_groups[0]["weight_decay"] == 0.05
    assert not trainer.enable_deep_supervision


@pytest.mark.parametrize("settings,expected", [
    (TrainSettings(num_epochs=100), lambda e: 3e-4 * (1 - e / 100)),  # 2D: linear over the run
    (PAPER_3D, lambda e: 3e-4 * (1 - e / 1000) ** 0.9),  # 3D: nnU-Net poly over 1000, stopped at 100
])
def test_learning_rate_schedule(prepared, tmp_path, tiny_vit, settings, expected):
    with nnunet_environment(prepared.tree.with_results(tmp_path)):
        trainer = _trainer(prepared, tmp_path, tiny_vit, settings)
        trainer.initialize()
    assert trainer.num_epochs == 100 and trainer.num_iterations_per_epoch == 250
    assert trainer.num_val_iterations_per_epoch == 50
    for epoch in (0, 50, 99):
        trainer.lr_scheduler.step(epoch)
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(expected(epoch), rel=1e-12)


def test_training_subset_must_come_from_fold_0(prepared, tmp_path, tiny_vit):
    train, val = json.loads(prepared.splits_path.read_text())[0].values()
    with nnunet_environment(prepared.tree.with_results(tmp_path)):
        trainer = _trainer(prepared, tmp_path, tiny_vit, TrainSettings(**QUICK), training_cases=train[:2])
        assert trainer.do_split() == (sorted(train[:2]), val)
        bad = _trainer(prepared, tmp_path, tiny_vit, TrainSettings(**QUICK), training_cases=[*train[:1], val[0]])
        with pytest.raises(Exception, match="outside fold 0"):
            bad.do_split()
        plans, cfg = job_configuration(prepared.plans(), "2d_48", "t", encoder="vit_random", encoder_kwargs=tiny_vit)
        every = FrozenEncoderTrainer({**plans, "continue_training": False}, cfg, "all", prepared.dataset_json(),
                                     device=torch.device("cpu"))
        every.configure(TrainSettings(**QUICK), training_cases=val[:1])  # fold "all": any training case
        tr_all, val_all = every.do_split()
        assert tr_all == val[:1] and sorted(val_all) == sorted(train + val)


def test_one_job_end_to_end(prepared, tmp_path, tiny_vit):
    """Train one epoch, predict the held-out cases with nnU-Net's predictor, Dice per case and region."""
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics
    from nnunetv2.imageio.nibabel_reader_writer import NibabelIOWithReorient

    from brainfm.stats.comparison import compare_dice

    out = tmp_path / "job"
    info = run_segmentation_job(prepared, out, task="phantom_tumor", backbone="vit_random", encoder="vit_random",
                                encoder_kwargs=tiny_vit, ratio=0.5, seed=0, configuration="2d_48", settings=QUICK,
                                use_mirroring=False)
    test = prepared.dataset.case_ids("test")
    table = pd.read_parquet(out / "dice.parquet")
    assert list(table.columns) == DICE_TABLE_COLUMNS
    assert len(table) == 3 * len(test) and sorted(table.case_id.unique()) == test
    assert table.dice.between(0, 1).all() and (table.ratio == 0.5).all() and (table.task == "phantom_tumor").all()
    run = json.loads((out / "run.json").read_text())
    assert run["parameters"]["trainable"] + run["parameters"]["frozen"] == run["parameters"]["total"]
    assert run["n_cases"]["train"] == len(run["train_cases"]) < run["n_cases"]["fold_train"]
    assert not set(run["train_cases"]) & set(test) and not set(run["val_cases"]) & set(test)
    assert len(run["epoch_seconds"]) == 1 and info["mean_dice"] == run["mean_dice"]
    assert run["precision"] in ("bf16", "fp32")  # auto on a CPU (the reload below predicts in the same one)
    assert (out / "nnunet").is_dir() and not list(out.parent.glob(".job.*"))
    # Dice against nnU-Net's own metric on the nnU-Net-coded ground truth (NaN there when both are empty)
    regions = [tuple(r) if isinstance(r, list) else r for r in prepared.dataset_json()["labels"].values()][1:]
    for cid in test:
        ref = compute_metrics(str(prepared.dataset.path / "labelsTs" / f"{cid}.nii.gz"),
                              str(out / "predictions" / f"{cid}.nii.gz"), NibabelIOWithReorient(), regions)
        for region, key in zip(("WT", "TC", "ET"), regions):
            theirs = ref["metrics"][key]["Dice"]
            ours = table[(table.case_id == cid) & (table.region == region)].dice.item()
            assert ours == pytest.approx(1.0 if np.isnan(theirs) else theirs)
    # the saved model predicts the same labels again (e.g. for perturbed copies of the test images)
    from brainfm.segmentation.job import predict_with_job

    predict_with_job(out, prepared.dataset.test_inputs()[:1], [tmp_path / "again" / test[0]])
    first = nib.load(str(out / "predictions" / f"{test[0]}.nii.gz"))
    again = nib.load(str(tmp_path / "again" / f"{test[0]}.nii.gz"))
    np.testing.assert_array_equal(np.asanyarray(first.dataobj), np.asanyarray(again.dataobj))
    # tiles batched (the default, 32 per call) or one at a time as nnU-Net sends them: the same labels
    # (up to the rare voxel a bf16 kernel rounds differently at another batch size)
    from brainfm.segmentation.job import load_trained
    from brainfm.segmentation.predict import predict_cases

    with load_trained(out) as trainer:
        predict_cases(trainer, prepared.dataset.test_inputs()[:1], [tmp_path / "single" / test[0]],
                      use_mirroring=False, tile_batch=1)
    single = np.asanyarray(nib.load(str(tmp_path / "single" / f"{test[0]}.nii.gz")).dataobj)
    assert (single != np.asanyarray(first.dataobj)).mean() <= 1e-3
    # the same model on perturbed test images (Fig. 5 rows); the clean rows are the job's own Dice
    from brainfm.config import PerturbationSetting
    from brainfm.segmentation.steps import PERTURBED_COLUMNS, segment_perturbed

    pert = segment_perturbed(prepared.root / "prepared.json", out, tmp_path / "perturbed.parquet",
                             benchmark="phantom_tumor", backbone="vit_random",
                             settings=[PerturbationSetting("gamma", 2.0)], n_boot=20)
    assert list(pert.columns) == PERTURBED_COLUMNS and set(pert.perturbation) == {"gamma"}
    assert sorted(set(pert.severity)) == [1.0, 2.0] and pert["value"].between(0, 1).all()
    assert (pert["n_cases"] == len(test)).all() and set(pert.task) == {f"phantom_tumor {r}" for r in ("WT", "TC", "ET")}
    clean = pert[pert.severity == 1.0].set_index("metric")["value"]
    for region in ("WT", "TC", "ET"):
        assert clean[f"dice_{region}"] == pytest.approx(table[table.region == region].dice.mean())
    # the table is what the paired bootstrap takes
    both = pd.concat([table, table.assign(backbone="braindino", dice=table.dice.clip(upper=0.99) + 0.01)])
    res = compare_dice(both, n_boot=50)
    assert set(res.metric) == {"dice_WT", "dice_TC", "dice_ET"}


def test_full_fine_tuning_trains_the_encoder_at_its_own_rate_and_reloads(prepared, tmp_path, tiny_vit):
    """Supp. Table 6: the same cell with the encoder in its own AdamW group; the checkpoint carries it."""
    settings = TrainSettings(**QUICK, encoder_lr=3e-5)
    plans, cfg = job_configuration(prepared.plans(), "2d_48", "tiny", encoder="vit_random", encoder_kwargs=tiny_vit,
                                   train_encoder=True)
    assert cfg == "2d_48__tiny__finetune"
    torch.set_num_threads(1)
    with nnunet_environment(prepared.tree.with_results(tmp_path)):
        trainer = FrozenEncoderTrainer({**plans, "continue_training": False}, cfg, 0, prepared.dataset_json(),
                                       device=torch.device("cpu"))
        trainer.configure(settings)
        trainer.on_train_start()
        net = trainer.network
        before = {k: v.clone() for k, v in net.encoder.state_dict().items()}
        trainer.on_train_epoch_start()
        for _ in range(2):
            trainer.train_step(next(trainer.dataloader_train))
        trainer.on_train_end()
    decoder_group, encoder_group = trainer.optimizer.param_groups
    assert {id(p) for p in encoder_group["params"]} == {id(p) for p in net.encoder.parameters()}
    assert encoder_group["initial_lr"] == 3e-5 and decoder_group["initial_lr"] == 3e-4
    trainer.lr_scheduler.step(0)
    assert (encoder_group["lr"], decoder_group["lr"]) == (3e-5, 3e-4)
    # both groups decay on one schedule, each from its own rate
    groups = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)], "lr": 1.0},
                              {"params": [torch.zeros(1, requires_grad=True)], "lr": 0.1}])
    schedule = GroupPolyLR(groups, 1.0, 10, 0.9)
    schedule.step(5)
    assert [g["lr"] for g in groups.param_groups] == pytest.approx([0.5 ** 0.9, 0.1 * 0.5 ** 0.9], rel=1e-12)
    moved = [k for k, v in net.encoder.state_dict().items() if not torch.equal(v, before[k])]
    assert moved, "the fine-tuned encoder did not change"
    assert any(k.startswith("encoder.") for k in net.state_dict())  # checkpointed with the rest

    out = tmp_path / "job"
    run_segmentation_job(prepared, out, task="phantom_tumor", backbone="vit_random", encoder="vit_random",
                         encoder_kwargs=tiny_vit, ratio=1.0, seed=0, configuration="2d_48",
                         settings={**QUICK, "encoder_lr": 3e-5}, use_mirroring=False)
    run = json.loads((out / "run.json").read_text())
    assert run["train_encoder"] and run["parameters"]["frozen"] == 0
    from brainfm.segmentation.job import predict_with_job

    test = prepared.dataset.case_ids("test")
    predict_with_job(out, prepared.dataset.test_inputs()[:1], [tmp_path / "again" / test[0]])
    first = nib.load(str(out / "predictions" / f"{test[0]}.nii.gz"))
    again = nib.load(str(tmp_path / "again" / f"{test[0]}.nii.gz"))
    np.testing.assert_array_equal(np.asanyarray(first.dataobj), np.asanyarray(again.dataobj))


def test_a_3d_baseline_job_runs_through_nnunet(prepared, tmp_path, tiny_vit3d):
    """BrainIAC's architecture (tiny, random init) on the 3D configuration: poly LR over 1000 epochs by default."""
    out = tmp_path / "job3d"
    run_segmentation_job(prepared, out, task="phantom_tumor", backbone="brainiac_scratch", encoder="brainiac_scratch",
                         encoder_kwargs=tiny_vit3d, ratio=1.0, seed=0, configuration="3d_32",
                         settings={**QUICK, "iterations_per_epoch": 2}, use_mirroring=False)
    run = json.loads((out / "run.json").read_text())
    assert run["patch_size"] == [32, 32, 32] and run["batch_size"] == 2
    assert run["settings"]["lr_horizon_epochs"] == 1000 and run["settings"]["lr_exponent"] == 0.9
    assert run["encoder_info"]["name"] == "brainiac_scratch"
    table = pd.read_parquet(out / "dice.parquet")
    assert len(table) == 3 * len(prepared.dataset.case_ids("test")) and table.dice.between(0, 1).all()


def test_test_subjects_seen_in_pretraining_stop_the_job(prepared, tmp_path, tiny_vit):
    leaked = prepared.dataset.cases.query("split == 'test'").subject.iloc[:1].tolist()
    with pytest.raises(LeakageError, match="test subjects also in the pretraining corpus"):
        run_segmentation_job(prepared, tmp_path / "job", task="phantom_tumor", backbone="x", encoder="vit_random",
                             encoder_kwargs=tiny_vit, ratio=1.0, seed=0, configuration="2d_48", settings=QUICK,
                             pretrain_subjects=["someone-else", *leaked])
    assert not (tmp_path / "job").exists()
