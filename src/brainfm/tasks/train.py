"""Training a bank of heads on cached features, with per-head early stopping.

Every head has its own training and validation rows, its own random generator (data order,
initialisation, dropout) and its own early-stopping state. Heads step together; a head whose
epoch is over or that has stopped simply sits out (its parameters and optimiser state stay
bit-identical), so the result for one head never depends on which other heads share the bank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from brainfm.tasks.heads import BatchedAdam, HeadBank, init_head_params
from brainfm.tasks.losses import LOSSES

__all__ = ["HeadConfig", "HeadJob", "FitResult", "train_head_bank", "head_generator"]


@dataclass(frozen=True)
class HeadConfig:
    """Optimisation settings shared by the heads of one bank (paper defaults)."""

    loss: str = "ce"
    n_out: int = 2
    hidden: int | None = None  # None: same as the input dimension (as in the public heads)
    dropout: float = 0.0
    optimizer: str = "adam"  # "adam" (L2 in the gradient) or "adamw" (decoupled)
    lr: float = 1e-4
    weight_decay: float = 1e-5
    batch_size: int | None = 16  # None: full batch (used for the Cox head)
    # z-score each feature with the head's own training rows before the head (not in the paper's
    # text; frozen CLS features vary across subjects by a few percent of their magnitude, which
    # LayerNorm alone does not expose, so heads at lr 1e-4 would otherwise barely move)
    standardize_features: bool = True
    max_epochs: int = 200
    patience: int = 10
    loss_kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HeadConfig:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class HeadJob:
    """What one head trains on: row indices into the shared feature matrix and a seed."""

    train: np.ndarray
    val: np.ndarray
    seed: int


@dataclass
class FitResult:
    bank: HeadBank
    best_epoch: np.ndarray
    epochs_run: np.ndarray
    best_val_loss: np.ndarray
    n_params_per_head: int

    def predict(self, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """Outputs of every head on every row of ``x``: (H, N, K)."""
        with torch.no_grad():
            return torch.cat([self.bank.forward(x[i:i + chunk]) for i in range(0, len(x), chunk)], dim=1)


def head_generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(seed) % (2**63 - 1))
    return g


def _pad(rows: list[np.ndarray], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.zeros(len(rows), width, dtype=torch.long)
    w = torch.zeros(len(rows), width)
    for h, r in enumerate(rows):
        idx[h, : len(r)] = torch.as_tensor(r, dtype=torch.long)
        w[h, : len(r)] = 1.0
    return idx, w


def train_head_bank(x: torch.Tensor, y: torch.Tensor, jobs: list[HeadJob], cfg: HeadConfig) -> FitResult:
    """Train one head per job; return the bank holding each head's best-validation weights.

    ``x`` is (N, D) float32, ``y`` is (N,) or (N, 2) for survival (time, event). A head without
    validation rows trains for ``max_epochs`` and keeps its last weights.
    """
    if cfg.loss not in LOSSES:
        raise ValueError(f"unknown loss {cfg.loss!r}; known: {sorted(LOSSES)}")
    loss_fn = LOSSES[cfg.loss]
    n_heads, dim = len(jobs), x.shape[1]
    hidden = cfg.hidden or dim
    gens = [head_generator(j.seed) for j in jobs]
    params = init_head_params(n_heads, dim, hidden, cfg.n_out, gens)
    shift = scale = None
    if cfg.standardize_features:
        shift = torch.stack([x[torch.as_tensor(j.train)].mean(0) for j in jobs])
        scale = torch.stack([x[torch.as_tensor(j.train)].std(0, unbiased=False) for j in jobs]).clamp(min=1e-6)
    bank = HeadBank(params, dropout=cfg.dropout, shift=shift, scale=scale)
    opt = BatchedAdam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, decoupled=cfg.optimizer == "adamw")

    n_train = np.array([len(j.train) for j in jobs])
    if (n_train == 0).any():
        raise ValueError("a head has no training rows")
    bsz = np.array([cfg.batch_size or n for n in n_train])
    steps_per_epoch = np.ceil(n_train / bsz).astype(int)
    width = int(bsz.max())
    val_idx, val_w = _pad([j.val for j in jobs], max(1, max(len(j.val) for j in jobs)))
    has_val = torch.as_tensor([len(j.val) > 0 for j in jobs])

    best = bank.snapshot()
    best_loss = torch.full((n_heads,), math.inf)
    best_epoch = np.zeros(n_heads, dtype=int)
    epoch = np.zeros(n_heads, dtype=int)
    bad_epochs = np.zeros(n_heads, dtype=int)
    pointer = np.zeros(n_heads, dtype=int)
    running = np.ones(n_heads, dtype=bool)
    schedules: list[np.ndarray] = [np.empty((0, 0), dtype=int)] * n_heads

    def new_epoch(h: int) -> None:
        perm = torch.randperm(int(n_train[h]), generator=gens[h]).numpy()
        rows = jobs[h].train[perm]
        pad = steps_per_epoch[h] * bsz[h] - len(rows)
        schedules[h] = np.concatenate([rows, -np.ones(pad, dtype=int)]).reshape(steps_per_epoch[h], bsz[h])
        pointer[h] = 0

    for h in range(n_heads):
        new_epoch(h)

    live = np.arange(n_heads)  # the heads `bank` and `opt` hold, by original index
    slots = torch.arange(n_heads)  # their places in `bank` (all of them step)
    while running.any():
        heads = np.flatnonzero(running)
        if len(heads) < len(live):
            # some heads stopped: carry on with the running ones only, copied once (not every step)
            keep = torch.as_tensor(np.searchsorted(live, heads))
            bank = bank.select(keep)
            opt = opt.select(keep, bank.params)
            live, slots = heads, torch.arange(len(heads))
        rows = [schedules[h][pointer[h]] for h in heads]
        idx, w = _pad([r[r >= 0] for r in rows], width)
        for p in bank.params.values():
            p.requires_grad_(True)
        out = bank.forward(x[idx], train=True, generators=[gens[h] for h in heads] if cfg.dropout > 0 else None)
        total = loss_fn(out, y[idx], w, **cfg.loss_kwargs).sum()
        grads = torch.autograd.grad(total, list(bank.params.values()))
        for p in bank.params.values():
            p.requires_grad_(False)
        opt.step(dict(zip(bank.params.keys(), grads)), slots)

        pointer += running
        ended = running & (pointer >= steps_per_epoch)
        if not ended.any():
            continue
        epoch[ended] += 1
        done = np.flatnonzero(ended)
        at = np.searchsorted(live, done)  # their places in the bank
        with torch.no_grad():
            val_loss = loss_fn(bank.select(torch.as_tensor(at)).forward(x[val_idx[done]]), y[val_idx[done]],
                               val_w[done], **cfg.loss_kwargs)
        for i, h in enumerate(done):
            if not has_val[h] or val_loss[i] < best_loss[h]:
                if has_val[h]:
                    best_loss[h] = val_loss[i]
                    bad_epochs[h] = 0
                best_epoch[h] = epoch[h]
                for k in best:
                    best[k][h] = bank.params[k][at[i]]
            else:
                bad_epochs[h] += 1
            if epoch[h] >= cfg.max_epochs or (has_val[h] and bad_epochs[h] >= cfg.patience):
                running[h] = False
            else:
                new_epoch(h)

    final = HeadBank(best, dropout=cfg.dropout, shift=shift, scale=scale)
    return FitResult(final, best_epoch, epoch.copy(), best_loss.numpy(), bank.n_trainable_per_head())
