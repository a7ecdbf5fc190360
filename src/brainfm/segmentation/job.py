"""One training job of the grid: (benchmark, backbone, ratio, seed) -> predictions, Dice, run info.

:func:`run_segmentation_job` is what a workflow rule or CLI command calls. It builds the job's
nnU-Net configuration (the prepared ``2d_<P>``/``3d_<P>`` entry plus this backbone's network
spec, added to the plans in memory only: the shared plans file is never rewritten by a job),
trains :class:`~.trainer.FrozenEncoderTrainer` on the ratio's nested subset of fold 0, predicts
every held-out test case with nnU-Net's sliding-window predictor and scores it per region.

Everything is written into a temporary sibling of ``out_dir`` and moved into place at the end::

    out_dir/
      dice.parquet        task, backbone, ratio, seed, subject, session, case_id, region, dice,
                          gt_voxels, pred_voxels (one row per test case and region; the input of
                          brainfm.stats.comparison.compare_dice)
      run.json            settings, case lists, parameter counts, epoch times (training + validation
                          iterations), loop iterations/s, inference cases/min, mean Dice per region
                          beside an all-background prediction's, versions
      predictions/        <case_id>.nii.gz, nnU-Net region coding, in each case's own geometry
      nnunet/             nnU-Net's results folder (training log, plans.json, dataset.json and,
                          unless keep_checkpoint=False, checkpoint_final.pth with the trainable
                          weights only)
"""

from __future__ import annotations

import contextlib
import copy
import logging
import random
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from brainfm.atomic import atomic_dir, write_json, write_parquet
from brainfm.device import cpu_attention, resolve_device, resolve_precision, torch_threads
from brainfm.errors import ConfigError
from brainfm.segmentation.benchmark import PreparedBenchmark, open_benchmark
from brainfm.segmentation.network import (
    NETWORK_CLASS,
    FrozenEncoderNetwork,
    bf16_gradients_agree,
    native_axes,
    parameter_counts,
)
from brainfm.segmentation.nnunet_env import nnunet_environment
from brainfm.segmentation.predict import all_background_dice, dice_table, predict_cases
from brainfm.segmentation.protocol import (
    check_pretraining_leakage,
    check_protocol,
    fold_cases,
    ratio_training_cases,
)
from brainfm.segmentation.trainer import PAPER_2D, PAPER_3D, FrozenEncoderTrainer, TrainSettings

__all__ = ["run_segmentation_job", "job_configuration", "load_trained", "predict_with_job",
           "DICE_TABLE_COLUMNS"]

log = logging.getLogger("brainfm.segmentation")

DICE_TABLE_COLUMNS = ["task", "backbone", "ratio", "seed", "subject", "session", "case_id", "region", "dice",
                      "gt_voxels", "pred_voxels"]


def _device(device: str | torch.device = "auto") -> torch.device:
    """The torch device of ``device`` (``auto`` resolved by :func:`brainfm.device.resolve_device`)."""
    return torch.device(resolve_device(str(device)))


def job_configuration(plans: dict[str, Any], configuration: str, backbone: str, *, encoder: str,
                      weights: str | None = None, encoder_kwargs: dict[str, Any] | None = None,
                      blocks: list[int] | None = None, decoder: dict[str, Any] | None = None,
                      train_encoder: bool = False) -> tuple[dict, str]:
    """A copy of ``plans`` with ``<configuration>__<backbone>``: the prepared entry plus this network spec.

    ``train_encoder`` (full fine-tuning) names the entry ``<configuration>__<backbone>__finetune``.
    """
    if configuration not in plans["configurations"]:
        raise ConfigError(f"configuration {configuration!r} was not prepared (prepared: "
                          f"{sorted(plans['configurations'])})")
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    parent = PlansManager(plans).get_configuration(configuration)
    dims = len(parent.patch_size)
    spec = {"encoder": encoder, "weights": str(Path(weights).resolve()) if weights else None,
            "encoder_kwargs": dict(encoder_kwargs or {}), "blocks": blocks,
            "axes": native_axes(plans["transpose_forward"], dims), "patch_size": list(parent.patch_size),
            "kind": "slices2d" if dims == 2 else "volume3d", "decoder": dict(decoder or {})}
    if train_encoder:
        spec["train_encoder"] = True
    out = copy.deepcopy(plans)
    name = f"{configuration}__{backbone}" + ("__finetune" if train_encoder else "")
    out["configurations"][name] = {"inherits_from": configuration,
                                   "architecture": {"network_class_name": NETWORK_CLASS, "arch_kwargs": spec,
                                                    "_kw_requires_import": []}}
    return out, name


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_segmentation_job(benchmark: str | Path | PreparedBenchmark, out_dir: str | Path, *, task: str, backbone: str,
                         encoder: str, ratio: float, seed: int, configuration: str,
                         weights: str | None = None, encoder_kwargs: dict[str, Any] | None = None,
                         settings: TrainSettings | dict[str, Any] | None = None, fold: int | str = 0,
                         pretrain_subjects: Iterable[str] | None = None, device: str = "auto",
                         threads: int | None = 1, augmentation_workers: int = 0, use_mirroring: bool = True,
                         blocks: list[int] | None = None, decoder: dict[str, Any] | None = None,
                         keep_checkpoint: bool = True, precision: str = "auto") -> dict[str, Any]:
    """Train and evaluate one grid cell; returns the run info also written to ``run.json``.

    ``benchmark`` is a prepared benchmark (or its root). ``fold``: 0 (the paper's nnU-Net fold 0 of
    the non-test cases) or ``"all"`` (all non-test cases train; see :mod:`.protocol` for why the
    paper's training-set sizes point there). ``settings`` is a :class:`TrainSettings`
    or a dict of fields over the paper's recipe (2D: linear decay; 3D: poly 0.9 over 1000 epochs).
    ``pretrain_subjects``: subjects of the backbone's pretraining corpus; a test subject among
    them stops the job (:class:`~brainfm.errors.LeakageError`). ``settings.encoder_lr`` set trains the
    encoder too (full fine-tuning, Supp. Table 6). ``threads``: torch CPU threads
    (default 1: the small demo ops run several times faster on one thread than on two contended
    ones, and two jobs share a 2-core laptop; ``None`` leaves torch's setting). ``precision``: see
    :func:`job_precision` (on CUDA nnU-Net's own fp16 autocast applies).
    """
    bench = benchmark if isinstance(benchmark, PreparedBenchmark) else open_benchmark(benchmark)
    if configuration not in bench.configurations:
        raise ConfigError(f"{bench.root}: configuration {configuration!r} not prepared ({list(bench.configurations)})")
    cases = bench.dataset.cases
    test = cases[cases["split"] == "test"].sort_values("case_id")
    check_pretraining_leakage(test["subject"], pretrain_subjects, task)
    fold_train, val = fold_cases(bench.splits_path, fold)
    subset = ratio_training_cases(cases, fold_train, [ratio], seed)[float(ratio)]
    check_protocol(cases, subset, val, separate_val=fold != "all")

    encoder_lr = settings.encoder_lr if isinstance(settings, TrainSettings) else (settings or {}).get("encoder_lr")
    plans, job_cfg = job_configuration(bench.plans(), configuration, backbone, encoder=encoder, weights=weights,
                                       encoder_kwargs=encoder_kwargs, blocks=blocks, decoder=decoder,
                                       train_encoder=encoder_lr is not None)
    dims = len(plans["configurations"][job_cfg]["architecture"]["arch_kwargs"]["patch_size"])
    if not isinstance(settings, TrainSettings):
        settings = TrainSettings.from_dict(settings, PAPER_2D if dims == 2 else PAPER_3D)
    dev = _device(device)
    _seed_everything(int(seed))
    plans["continue_training"] = False
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp, torch_threads(threads), \
            nnunet_environment(bench.tree.with_results(tmp / "nnunet"), augmentation_workers=augmentation_workers):
        trainer = FrozenEncoderTrainer(plans, job_cfg, fold, bench.dataset_json(), device=dev)
        trainer.configure(settings, subset)
        trainer.initialize()
        net = _bare(trainer.network)
        used_precision = job_precision(net, precision, dev, list(trainer.configuration_manager.patch_size),
                                       trainer.num_input_channels)
        net.cpu_autocast = torch.bfloat16 if used_precision == "bf16" else None
        cpu_attention([net], dev.type, used_precision)
        params = parameter_counts(trainer.network)
        t0 = time.perf_counter()
        trainer.run_training()
        train_seconds = time.perf_counter() - t0
        enc = trainer.network.encoder
        pred_dir = tmp / "predictions"
        t0 = time.perf_counter()
        predict_cases(trainer, bench.dataset.test_inputs(), [pred_dir / cid for cid in test["case_id"]],
                      use_mirroring=use_mirroring)
        predict_seconds = time.perf_counter() - t0
        preds = {cid: pred_dir / f"{cid}.nii.gz" for cid in test["case_id"]}
        table = dice_table(test, preds, bench.label_map)
        table.insert(0, "seed", int(seed))
        table.insert(0, "ratio", float(ratio))
        table.insert(0, "backbone", backbone)
        table.insert(0, "task", task)
        table = table[DICE_TABLE_COLUMNS]
        write_parquet(tmp / "dice.parquet", table)
        folder = Path(trainer.output_folder)
        for name in ("checkpoint_best.pth", "checkpoint_latest.pth"):
            (folder / name).unlink(missing_ok=True)
        if not keep_checkpoint:
            (folder / "checkpoint_final.pth").unlink(missing_ok=True)
        background = all_background_dice(table)
        info = {
            "task": task, "backbone": backbone, "encoder": encoder, "ratio": float(ratio), "seed": int(seed),
            "fold": fold, "configuration": configuration, "nnunet_configuration": job_cfg,
            "patch_size": list(trainer.configuration_manager.patch_size),
            "spacing": list(trainer.configuration_manager.spacing), "batch_size": int(trainer.batch_size),
            "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(settings).items()},
            "encoder_info": enc.describe(), "parameters": params,
            "train_encoder": settings.encoder_lr is not None,
            "n_cases": {"fold_train": len(fold_train), "train": len(subset), "val": len(val), "test": len(test),
                        "quarantined": len(bench.dataset.quarantined)},
            "train_cases": subset, "val_cases": val, "test_cases": list(test["case_id"]),
            "epoch_seconds": trainer.epoch_seconds(), "train_seconds": train_seconds,
            "predict_seconds": predict_seconds,
            "train_loop_iterations_per_second": settings.num_epochs * settings.iterations_per_epoch / train_seconds,
            "inference_cases_per_minute": 60.0 * len(test) / predict_seconds if predict_seconds > 0 else None,
            "mean_dice": table.groupby("region", sort=False)["dice"].mean().to_dict(),
            "all_background_mean_dice": background.groupby("region", sort=False)["dice"].mean().to_dict(),
            "use_mirroring": bool(use_mirroring), "device": str(dev), "threads": torch.get_num_threads(),
            "precision": used_precision,
            "versions": _versions(), "label_map": bench.label_map.table(),
        }
        write_json(tmp / "run.json", info)
    log.info("%s/%s ratio %g seed %d: mean Dice %s", task, backbone, ratio, seed,
             {k: round(v, 3) for k, v in info["mean_dice"].items()})
    return info


def _bare(network: torch.nn.Module) -> FrozenEncoderNetwork:
    """The network itself under nnU-Net's DDP or ``torch.compile`` wrappers."""
    net = getattr(network, "module", network)
    return getattr(net, "_orig_mod", net)


def job_precision(network: FrozenEncoderNetwork, precision: str, device: torch.device, patch_size: list[int],
                  in_channels: int) -> str:
    """The precision a job trains and predicts in: ``bf16``, ``fp32``, or ``nnunet_amp`` on CUDA.

    On CUDA nnU-Net autocasts to fp16 with a grad scaler itself (the paper's setting). On a CPU,
    ``auto`` is bf16 where the CPU runs it natively (:func:`brainfm.device.resolve_precision`) and
    the network's bf16 gradients agree with fp32 (:func:`bf16_gradients_agree`), else fp32.
    """
    if device.type != "cpu":
        return "nnunet_amp"
    resolved = resolve_precision(precision, "cpu")
    if precision == "auto" and resolved == "bf16" and not bf16_gradients_agree(network, patch_size, in_channels):
        log.warning("precision auto -> fp32: this network's bf16 gradients disagree with fp32 on this CPU")
        return "fp32"
    return resolved


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "timm", "nnunetv2", "dynamic_network_architectures"):
        try:
            out[pkg] = version(pkg.replace("_", "-"))
        except PackageNotFoundError:
            out[pkg] = "absent"
    out["cuda"] = str(torch.version.cuda) if torch.cuda.is_available() else "none"
    return out


@contextlib.contextmanager
def load_trained(job_dir: str | Path, device: str = "auto") -> Iterator[FrozenEncoderTrainer]:
    """The trained trainer of a finished job (its ``checkpoint_final.pth``), for new predictions.

    Used as a context manager (nnU-Net's folders point at a scratch directory while it is open;
    the job's directory is only read). The frozen encoder is rebuilt from its weights file (its
    sha256 must match the checkpoint's).
    """
    import json

    job_dir = Path(job_dir)
    run = json.loads((job_dir / "run.json").read_text())
    folders = sorted((job_dir / "nnunet").glob(f"*/*__{run['nnunet_configuration']}/fold_{run['fold']}"))
    if len(folders) != 1 or not (folders[0] / "checkpoint_final.pth").is_file():
        raise ConfigError(f"{job_dir}: no trained model (checkpoint_final.pth) in its nnunet folder")
    folder = folders[0]
    plans = json.loads((folder.parent / "plans.json").read_text())
    dataset_json = json.loads((folder.parent / "dataset.json").read_text())
    plans["continue_training"] = False
    import tempfile

    from brainfm.segmentation.nnunet_env import NnunetTree

    # the trainer writes a log where nnU-Net's results are: a scratch folder, not the finished job
    with tempfile.TemporaryDirectory(prefix="brainfm-seg-") as scratch, nnunet_environment(NnunetTree.under(scratch)):
        from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels

        dev = _device(device)
        trainer = FrozenEncoderTrainer(plans, run["nnunet_configuration"], run["fold"], dataset_json, device=dev)
        # what nnU-Net's predictor does for a trained model folder (trainer.initialize() would also want
        # the preprocessed training data): build the network from the plans, load the final weights
        checkpoint = torch.load(folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)
        n_in = determine_num_input_channels(trainer.plans_manager, trainer.configuration_manager, dataset_json)
        trainer.network = trainer.build_network_architecture(trainer.plans_manager, trainer.configuration_manager, n_in,
                                                             trainer.label_manager.num_segmentation_heads, False)
        trainer.network.load_state_dict(checkpoint["network_weights"])
        trainer.network.to(dev)
        # predict as the job evaluated its test cases (bf16 autocast only where it trained on a CPU in bf16)
        trainer.network.cpu_autocast = torch.bfloat16 if run.get("precision") == "bf16" else None
        cpu_attention([trainer.network], dev.type, run.get("precision", "fp32"))
        trainer.inference_allowed_mirroring_axes = checkpoint["inference_allowed_mirroring_axes"]
        yield trainer


def predict_with_job(job_dir: str | Path, inputs: list[list[str]], outputs: list[str | Path], *,
                     device: str = "auto", use_mirroring: bool | None = None, threads: int | None = 1) -> None:
    """Predict new cases (per case, its four channel files) with a finished job's model.

    ``use_mirroring`` defaults to the job's own setting, so e.g. perturbed test images are
    predicted exactly as the clean ones were.
    """
    import json

    run = json.loads((Path(job_dir) / "run.json").read_text())
    mirroring = run["use_mirroring"] if use_mirroring is None else bool(use_mirroring)
    with torch_threads(threads), load_trained(job_dir, device) as trainer:
        predict_cases(trainer, inputs, outputs, use_mirroring=mirroring)
