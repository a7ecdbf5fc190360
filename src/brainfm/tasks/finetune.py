"""Full fine-tuning of an encoder with its task head (paper §4.4, Supplementary Table 6).

The comparison only means something if everything except "is the encoder trained?" matches
the frozen protocol, so this module reuses the frozen pipeline's pieces rather than its own:
the same folds (:func:`~brainfm.tasks.runs.plan_folds`), nested label-ratio subsets and validation subjects, the
same head (LayerNorm-Linear-GELU-Linear, initialised from the same seed), the same loss,
target standardisation and feature z-scoring (computed once from the *initial* encoder's
features of the training rows, then fixed), the same slice-mean pooling and modality
averaging, and the same prediction/metric writers. The encoder and head are then optimised
jointly, the encoder at its own (smaller) learning rate, with early stopping on the
validation loss; the weights of the best epoch predict the test set.

Only classification and regression heads are supported (the paper fine-tunes ADNI staging and
brain age; segmentation has its own decoder).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm import tqdm

from brainfm.errors import ConfigError, InputError
from brainfm.device import cpu_attention, resolve_precision
from brainfm.features.extract import autocast_context
from brainfm.models.base import Encoder
from brainfm.tasks.data import TaskData, assemble
from brainfm.tasks.heads import HeadBank, init_head_params
from brainfm.tasks.losses import LOSSES
from brainfm.tasks.runner import fold_metrics, frozen_training_rows, head_config_for, prediction_frame, training_targets
from brainfm.tasks.runs import RunKey, checked_folds, head_seed, ratio_subsets, subject_rows, summarize_run
from brainfm.config import FinetuneSpec, TaskSpec
from brainfm.tasks.train import HeadJob, head_generator

__all__ = ["finetune", "finetune_grid", "volume_rows"]

log = logging.getLogger("brainfm.tasks")


def volume_rows(spec: TaskSpec, store_index: pd.DataFrame, manifest: pd.DataFrame) -> tuple[TaskData, list[list[int]]]:
    """The task's samples (as the frozen protocol selects them) and, per sample, its store rows.

    A sample is a session whose modalities are averaged, or one image for image-level tasks.
    """
    index = store_index.reset_index(drop=True)
    key_cols = ["subject", "session", "modality"]
    index[key_cols] = index[key_cols].astype(str)
    pos = {tuple(k): i for i, k in enumerate(index[key_cols].itertuples(index=False, name=None))}
    if spec.unit == "image":
        keys = index.loc[index["modality"].isin(spec.modalities), key_cols].reset_index(drop=True)
    else:
        have = index[index["modality"].isin(spec.modalities)].groupby(["subject", "session"], sort=False)["modality"]
        complete = have.nunique() == len(set(spec.modalities))
        keys = complete[complete].reset_index()[["subject", "session"]]
    data = assemble(spec, keys, np.zeros((len(keys), 1), np.float32), manifest, source="preprocessed store")
    rows = []
    for rec in data.table.itertuples(index=False):
        mods = [rec.modality] if spec.unit == "image" else list(spec.modalities)
        rows.append([pos[(str(rec.subject), str(rec.session), str(m))] for m in mods])
    return data, rows


class _Head(nn.Module):
    """One LayerNorm-Linear-GELU-Linear head with the frozen bank's initialisation and input z-scoring."""

    def __init__(self, in_dim: int, hidden: int, n_out: int, seed: int, dropout: float,
                 shift: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        self.generator = head_generator(seed)
        params = init_head_params(1, in_dim, hidden, n_out, [self.generator])
        self.params_ = nn.ParameterDict({k: nn.Parameter(v) for k, v in params.items()})
        self.register_buffer("shift", shift.reshape(1, -1))
        self.register_buffer("scale", scale.reshape(1, -1))
        self.dropout = dropout

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        bank = HeadBank(dict(self.params_), dropout=self.dropout, shift=self.shift, scale=self.scale)
        train = self.training and self.dropout > 0
        return bank.forward(feats, train=train, generators=[self.generator] if train else None)[0]


def _features(encoder: Encoder, volumes: Sequence[Sequence[torch.Tensor]], device: torch.device, precision: str,
              train_slices: int | None, gen: torch.Generator | None, slice_chunk: int | None = None) -> torch.Tensor:
    """(B, D) sample features: slice-CLS mean per volume, then mean over the sample's modalities.

    With ``slice_chunk`` the slices pass through the encoder in chunks of that many; while
    gradients are on, each chunk is gradient-checkpointed (its activations are recomputed in the
    backward pass), so every slice contributes at the memory cost of one chunk. The result and
    its gradients equal those of one pass over all slices.
    """
    chunks, owners = [], []
    for b, vols in enumerate(volumes):
        for vol in vols:
            x = encoder.preprocess(vol)
            if encoder.input_kind == "slices2d" and train_slices is not None and x.shape[0] > train_slices:
                keep = torch.randperm(x.shape[0], generator=gen)[:train_slices].sort().values
                x = x[keep]
            chunks.append(x)
            owners.append((b, x.shape[0]))
    xb = torch.cat(chunks).to(device)

    def cls_of(x: torch.Tensor) -> torch.Tensor:
        with autocast_context(device, precision):
            return encoder.forward_features(x)["cls"].float()

    if slice_chunk is None or xb.shape[0] <= slice_chunk:
        cls = cls_of(xb)
    elif torch.is_grad_enabled():
        from torch.utils.checkpoint import checkpoint

        cls = torch.cat([checkpoint(cls_of, xb[i:i + slice_chunk], use_reentrant=False)
                         for i in range(0, xb.shape[0], slice_chunk)])
    else:
        cls = torch.cat([cls_of(xb[i:i + slice_chunk]) for i in range(0, xb.shape[0], slice_chunk)])
    out, start = [], 0
    per_sample: dict[int, list[torch.Tensor]] = {}
    for b, n in owners:
        per_sample.setdefault(b, []).append(cls[start:start + n].mean(0))
        start += n
    for b in range(len(volumes)):
        out.append(torch.stack(per_sample[b]).mean(0))
    return torch.stack(out)


def finetune_grid(spec: TaskSpec, store: Any, manifest: pd.DataFrame, make_encoder: Callable[[], Encoder], *,
                  backbone: str, cfg: FinetuneSpec,
                  pretrain_subjects: Iterable[str] | None = None, device: str = "cpu",
                  precision: str = "fp32", progress: bool = True) -> dict[RunKey, dict[str, Any]]:
    """Fine-tune ``make_encoder()`` + head for every (fold, ratio, seed); same outputs as :func:`run_grid`."""
    if spec.kind not in ("classification", "regression"):
        raise ConfigError(f"task {spec.name}: full fine-tuning supports classification and regression, not {spec.kind}")
    dev = torch.device(device)
    trains_conv3d = any(isinstance(m, nn.Conv3d) for m in make_encoder().modules())  # volumetric encoders
    precision = resolve_precision(precision, str(dev), conv3d_training=trains_conv3d)
    data, sample_rows = volume_rows(spec, store.index, manifest)
    folds = checked_folds(data, pretrain_subjects)
    head_cfg, standardize = head_config_for(data)
    loss_fn = LOSSES[head_cfg.loss]
    rows_of = subject_rows(data)
    labels = data.subject_labels
    # the frozen heads' target scaling: log1p, then (if on) one z-score from their whole training plan
    y, mean, std = training_targets(data.y.astype(np.float32), spec.target_transform, standardize,
                                    [HeadJob(frozen_training_rows(data, folds), np.empty(0, int), 0)])

    def load(i: int) -> list[torch.Tensor]:
        vols = []
        for r in sample_rows[i]:
            v = np.asarray(store[r], dtype=np.float32)
            if not np.isfinite(v).all():
                raise InputError(str(getattr(store, "dir", "store")), f"item {r} has non-finite voxels")
            vols.append(torch.from_numpy(v))
        return vols

    results: dict[RunKey, dict[str, Any]] = {}
    all_ratios = sorted(set(spec.ratios) | set(cfg.ratios))
    plan = []  # (fold, seed, ratio, training subjects); one nested draw per (fold, seed), as in run_grid
    for fold in folds:
        for seed in cfg.seeds:
            subsets = ratio_subsets(fold, labels, all_ratios, seed)
            plan += [(fold, seed, float(r), subsets[float(r)]) for r in cfg.ratios]
    bar = tqdm(total=len(plan), desc=f"finetune {spec.name}/{backbone}", unit="run", disable=None if progress else True)
    for fold, seed, ratio, subset in plan:
        train_rows = np.concatenate([rows_of[s] for s in subset])
        val_rows = np.concatenate([rows_of[s] for s in fold.val]) if fold.val else np.empty(0, int)
        test_rows = np.concatenate([rows_of[s] for s in fold.test])
        t0 = time.perf_counter()
        out, info = _fit_one(spec, make_encoder, load, y, train_rows, val_rows, test_rows, head_cfg, loss_fn,
                             cfg, head_seed(seed, fold.fold), dev, precision)
        pred = prediction_frame(data, test_rows, out, mean, std)
        pred.insert(0, "fold", fold.fold)
        entry = results.setdefault(RunKey(ratio, seed), {"frames": [], "folds": []})
        entry["frames"].append(pred)
        entry["folds"].append({"fold": fold.fold, "n_train": int(len(train_rows)), "n_train_subjects": len(subset),
                               "n_test_subjects": len(fold.test), "n_train_synthetic": 0,
                               "n_val": int(len(val_rows)), "n_test": int(len(test_rows)),
                               "seconds": round(time.perf_counter() - t0, 2), **info,
                               "metrics": fold_metrics(data, pred)})
        log.info("%s/%s fold %d ratio %g seed %d: best epoch %d of %d, %s", spec.name, backbone, fold.fold, ratio,
                 seed, info["best_epoch"], info["epochs_run"], entry["folds"][-1]["metrics"])
        bar.update(1)
    bar.close()
    for key, entry in results.items():
        settings = {k: v for k, v in cfg.to_dict().items() if k not in ("tasks", "backbones", "resources")}
        settings["precision"] = precision
        summarize_run(entry, key, data, backbone, mode="finetune",
                      head=head_cfg.__dict__ | {"standardize_target": standardize}, finetune=settings,
                      target_scale={"mean": mean, "std": std})
    return results


def _fit_one(spec: TaskSpec, make_encoder: Callable[[], Encoder], load: Callable[[int], list[torch.Tensor]],
             y: torch.Tensor, train_rows: np.ndarray, val_rows: np.ndarray, test_rows: np.ndarray, head_cfg: Any,
             loss_fn: Callable, cfg: FinetuneSpec, seed: int, dev: torch.device,
             precision: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Train one encoder + head; return test outputs (N_test, K) from the best-validation epoch."""
    encoder = make_encoder().to(dev)
    cpu_attention([encoder], dev.type, precision)
    for p in encoder.parameters():  # registry encoders come frozen
        p.requires_grad_(True)
    gen = head_generator(seed + 1)

    def feats(rows: np.ndarray, train: bool) -> torch.Tensor:
        return _features(encoder, [load(int(i)) for i in rows], dev, precision,
                         cfg.train_slices if train else None, gen, cfg.slice_chunk)

    def predict(rows: np.ndarray) -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            outs = [head(feats(rows[i:i + cfg.batch_size], False)) for i in range(0, len(rows), cfg.batch_size)]
        return torch.cat(outs) if outs else torch.empty(0, head_cfg.n_out)

    # the head's input z-scoring is fixed from the *initial* encoder, as the frozen head's would be
    encoder.eval()
    with torch.no_grad():
        init = torch.cat([feats(train_rows[i:i + cfg.batch_size], False)
                          for i in range(0, len(train_rows), cfg.batch_size)])
    dim = init.shape[1]
    if head_cfg.standardize_features:
        shift, scale = init.mean(0), init.std(0, unbiased=False).clamp(min=1e-6)
    else:
        shift, scale = torch.zeros(dim), torch.ones(dim)
    head = _Head(dim, head_cfg.hidden or dim, head_cfg.n_out, seed, head_cfg.dropout, shift, scale).to(dev)
    model = nn.ModuleDict({"encoder": encoder, "head": head})
    opt_cls = torch.optim.AdamW if head_cfg.optimizer == "adamw" else torch.optim.Adam
    opt = opt_cls([{"params": [p for p in encoder.parameters() if p.requires_grad], "lr": cfg.encoder_lr},
                   {"params": list(head.parameters()), "lr": head_cfg.lr}], weight_decay=head_cfg.weight_decay)

    def loss_of(out: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        target = y[torch.as_tensor(rows)].to(dev)
        return loss_fn(out.unsqueeze(0), target.unsqueeze(0), torch.ones(1, len(rows), device=dev),
                       **head_cfg.loss_kwargs)[0]

    best_state = copy.deepcopy(model.state_dict())
    best_loss, best_epoch, bad, epoch = math.inf, 0, 0, 0
    n_steps = 0
    while epoch < cfg.max_epochs:
        model.train()
        order = train_rows[torch.randperm(len(train_rows), generator=gen).numpy()]
        for i in range(0, len(order), cfg.batch_size):
            rows = order[i:i + cfg.batch_size]
            loss = loss_of(head(feats(rows, True)), rows)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{spec.name}: non-finite fine-tuning loss at epoch {epoch + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            n_steps += 1
        epoch += 1
        if len(val_rows):
            val_loss = float(loss_of(predict(val_rows), val_rows))
            if val_loss < best_loss:
                best_loss, best_epoch, bad = val_loss, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad += 1
                if bad >= cfg.patience:
                    break
        else:
            best_epoch, best_state = epoch, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    out = predict(test_rows).float().cpu().numpy()
    n_params = sum(p.numel() for p in model.parameters())
    return out, {"best_epoch": int(best_epoch), "epochs_run": int(epoch), "steps": int(n_steps),
                 "best_val_loss": float(best_loss), "trainable_params": int(n_params)}


def finetune(task: TaskSpec, settings: FinetuneSpec, backbone: Any, store: str | Path, manifest: str | Path,
             out: str | Path, *, pretrain_manifests: Sequence[str | Path] = (), device: str = "cpu",
             precision: str = "auto") -> dict[RunKey, dict[str, Any]]:
    """The ``finetune`` step: encoder + head of one (task, backbone) cell trained jointly -> ``out``.

    ``backbone`` is a :class:`brainfm.config.BackboneSpec` (encoder, arguments, weights file); a
    fresh copy of it is built for every run. The run folders have the frozen protocol's layout.
    """
    from brainfm.data.manifest import read_manifest
    from brainfm.models import create_encoder
    from brainfm.preprocess.store import ShardedStore
    from brainfm.tasks.runs import pretraining_subjects, write_runs

    results = finetune_grid(task, ShardedStore(store), read_manifest(manifest, check_files=False),
                            lambda: create_encoder(backbone.encoder, weights=backbone.weights, **backbone.args),
                            backbone=backbone.name, cfg=settings,
                            pretrain_subjects=pretraining_subjects(pretrain_manifests), device=device,
                            precision=precision)
    write_runs(out, results)
    return results
