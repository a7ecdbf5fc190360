"""The ``pretrain`` step: one pretraining run (a :class:`~brainfm.config.PretrainSpec`) -> weights + summary.

Rule ``pretrain`` -> ``brainfm pretrain`` -> :func:`pretrain`. The spec holds the recipe
(``dino`` | ``simclr`` | ``brainfound``), its ``params`` (recipe config keys, checked by
:mod:`brainfm.ssl.config`), DINO ``stages`` and an ``init`` weights file already resolved by the
config (BrainFound's starting point).

DINO stages run in order in ``work_dir/stage<i>``; stage ``i > 1`` starts from the final state
of stage ``i - 1``. Key precedence for a stage-2 config: ``params`` < the paper's stage-2
values (:data:`~brainfm.ssl.config.STAGE2_DEFAULTS`) < the stage's own keys. With ``nproc > 1``
processes per node or ``nodes > 1`` (the spec's ``resources``) the work is re-launched under
``torch.distributed.run`` (one launcher per node, c10d rendezvous across nodes); every step
resumes from its checkpoints when the job is restarted.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from brainfm.atomic import write_json
from brainfm.config import RECIPES, PretrainSpec
from brainfm.errors import BrainfmError, ConfigError
from brainfm.ssl.config import STAGE2_DEFAULTS, BrainFoundConfig, DinoConfig, SimCLRConfig
from brainfm.ssl.distributed import cleanup_distributed, init_distributed, launch_torchrun
from brainfm.ssl.export import encoder_args, sha256_file, timm_weights_path
from brainfm.ssl.monitor import read_curve

__all__ = ["pretrain", "dino_stage_configs"]

log = logging.getLogger("brainfm.ssl")


def dino_stage_configs(spec: PretrainSpec) -> list[DinoConfig]:
    params = dict(spec.params)
    stages = spec.stages or ({},)
    out = []
    for i, st in enumerate(stages):
        st = dict(st)
        stage = str(st.get("stage", params.get("stage", "1") if i == 0 else "2"))
        shared = {k: v for k, v in params.items() if not (stage == "2" and k in STAGE2_DEFAULTS)}
        merged = {**shared, **st, "stage": stage}  # from_dict fills the stage-2 values not given here
        out.append(DinoConfig.from_dict(merged))
    if out and out[0].stage == "2" and len(out) == 1 and not out[0].init:
        log.warning("a lone stage-2 run starts from random weights; set 'init' or run stage 1 first")
    return out


def _final_state(stage_dir: Path) -> Path:
    from brainfm.ssl.checkpointing import latest_checkpoint

    path = latest_checkpoint(stage_dir / "ckpt")
    if path is None:
        raise BrainfmError(f"{stage_dir}: previous stage left no checkpoint to continue from")
    return path


def run_local(spec: PretrainSpec, stores: list[Path], out: Path, summary: Path, work_dir: Path,
              device: str, precision: str = "fp32") -> dict[str, Any]:
    """This process's share of :func:`pretrain` (all of it, or one rank under torchrun)."""
    from brainfm.ssl import brainfound, dino, simclr
    from brainfm.ssl.data import SliceSource, StackedSliceSource, VolumeSource
    from brainfm.ssl.export import export_resnet3d, export_teacher

    recipe = spec.recipe
    env = init_distributed(device, precision)
    t0 = time.perf_counter()
    stages_info: list[dict[str, Any]] = []
    finished = False
    try:
        if recipe == "dino":
            cfgs = dino_stage_configs(spec)
            source = SliceSource(stores)
            prev: Path | None = None
            method = result = None
            for i, cfg in enumerate(cfgs):
                stage_dir = work_dir / f"stage{i + 1}"
                method, result = dino.run_dino_stage(cfg, source, stage_dir, env, init_state=prev)
                stages_info.append(_stage_info(cfg, result, stage_dir))
                if not result.finished:
                    break
                prev = _final_state(stage_dir)
            finished = bool(result and result.finished and len(stages_info) == len(cfgs))
            last_cfg = cfgs[-1]
            if finished and env.is_main:
                export_teacher(method, out, cfgs[-1], result)
        elif recipe == "brainfound":
            cfg = last_cfg = BrainFoundConfig.from_dict(dict(spec.params))
            if spec.init:
                cfg.init = spec.init
            source = StackedSliceSource(stores, stack=cfg.stack, modalities=cfg.modalities, step=cfg.slice_step)
            method, result = dino.run_dino_stage(cfg, source, work_dir, env, method_cls=brainfound.BrainFoundMethod)
            stages_info.append(_stage_info(cfg, result, work_dir))
            finished = result.finished
            if finished and env.is_main:
                export_teacher(method, out, cfg, result)
        elif recipe == "simclr":
            cfg = last_cfg = SimCLRConfig.from_dict(dict(spec.params))
            method, result = simclr.run_simclr(cfg, VolumeSource(stores), work_dir, env)
            stages_info.append(_stage_info(cfg, result, work_dir))
            finished = result.finished
            if finished and env.is_main:
                export_resnet3d(method.model.backbone, out, cfg)
        else:
            raise ConfigError(f"unknown pretraining recipe {recipe!r} (dino | simclr | brainfound)")
        info = {
            "recipe": recipe,
            "run": spec.name,
            "finished": finished,
            "stages": stages_info,
            "weights": str(out),
            "world_size": env.world_size,
            "device": str(env.device),
            "precision": env.precision,
            "seconds": time.perf_counter() - t0,
            "versions": {"torch": torch.__version__, "python": platform.python_version()},
        }
        if finished and env.is_main:
            info["weights_sha256"] = sha256_file(out)
            encoder = RECIPES[recipe].encoder
            if recipe in ("dino", "brainfound"):
                info["timm_weights"] = str(timm_weights_path(out))
                info["encoder"] = {"name": encoder, "args": encoder_args(last_cfg)}
            else:
                info["encoder"] = {"name": encoder, "args": {"arch": last_cfg.arch,
                                                             "conv1_stride": last_cfg.conv1_stride,
                                                             "img_size": last_cfg.input_size}}
            write_json(summary, info)
        return info
    finally:
        cleanup_distributed()


def _stage_info(cfg: Any, result: Any, work_dir: Path) -> dict[str, Any]:
    return {
        "stage": getattr(cfg, "stage", "1"),
        "config": cfg.to_dict(),
        "work_dir": str(work_dir),
        "start_iteration": result.start_iteration,
        "final_iteration": result.final_iteration,
        "total_iterations": result.total_iterations,
        "samples_seen": result.samples_seen,
        "seconds": result.seconds,
        "img_per_s": result.img_per_s,
        "last_metrics": result.last_metrics,
        # per logged step: loss terms, ln_k / uniform_loss (the loss of an uninformative prediction),
        # teacher entropies (DINO recipes), schedules; the report's pretraining-curve figure reads it
        "curve": read_curve(work_dir),
    }


def pretrain(spec: PretrainSpec, stores: list[Path], out: Path, summary: Path, work_dir: Path,
             device: str = "cpu", rdzv_endpoint: str | None = None, precision: str = "fp32") -> dict[str, Any]:
    """Run one pretraining spec end to end (resuming from ``work_dir``); returns the summary dict.

    ``rdzv_endpoint`` (HOST:PORT) makes this process one node's launcher of a multi-node run
    started by hand; inside a SLURM allocation the launchers are started with ``srun`` (see
    :func:`brainfm.ssl.distributed.launch_torchrun`).
    """
    out, summary, work_dir = Path(out), Path(summary), Path(work_dir)
    stores = [Path(s) for s in stores]
    work_dir.mkdir(parents=True, exist_ok=True)
    if spec.recipe == "dino":
        dino_stage_configs(spec)  # validate before launching anything
    if (spec.nproc > 1 or spec.nnodes > 1 or rdzv_endpoint) and "WORLD_SIZE" not in os.environ:
        error_file = work_dir / "launch-error.json"
        error_file.unlink(missing_ok=True)
        payload = {"spec": spec.to_dict() | {"name": spec.name}, "stores": [str(s) for s in stores], "out": str(out),
                   "summary": str(summary), "work_dir": str(work_dir), "device": device,
                   "precision": precision,
                   "error_file": str(error_file)}
        try:
            launch_torchrun(spec.nproc, payload, work_dir, nnodes=spec.nnodes, rdzv_endpoint=rdzv_endpoint)
        except RuntimeError as exc:
            if error_file.exists():
                err = json.loads(error_file.read_text())
                raise BrainfmError(err.get("message", str(exc))) from exc
            raise
        return json.loads(summary.read_text()) if summary.exists() else {}
    return run_local(spec, stores, out, summary, work_dir, device, precision)
