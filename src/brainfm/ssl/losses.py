"""Self-supervised losses: DINO, iBOT, KoLeo (BrainDINO / BrainFound) and NT-Xent (BrainIAC SimCLR).

Teacher targets are built either by Sinkhorn-Knopp normalisation (DINOv3's default: each
prototype gets equal mass over the global batch) or by the DINO softmax with an EMA centre
(DINOv2's default). Everything that needs statistics of the *global* batch (Sinkhorn sums,
centres, KoLeo nearest neighbours, NT-Xent negatives) reduces over processes, so a K-process
run matches a single process that sees the same global batch.

Formulas (q: teacher probabilities, p: student softmax at temperature ``student_temp``):

* DINO   ``-sum_k q_k log p_k`` averaged over (student crop, teacher crop, sample) pairs,
  optionally skipping pairs where the student and teacher see the same crop (paper eq. 1).
* iBOT   the same cross-entropy per masked patch, each patch weighted by 1/(#masked patches
  of its crop), summed and divided by the number of global crops (paper eq. 2).
* KoLeo  ``-mean_i log(d_i + eps)``, d_i the distance of the L2-normalised feature i to its
  nearest neighbour in the batch (Sablayrolles et al. 2019).
* NT-Xent  cross-entropy of each view against its partner among all other 2N-1 views at
  temperature tau (Chen et al. 2020).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from brainfm.ssl.distributed import all_reduce_sum, gather_with_grad, is_distributed, rank

__all__ = [
    "dino_cross_entropy",
    "sinkhorn_knopp",
    "SoftmaxCenter",
    "ibot_patch_loss",
    "koleo_loss",
    "nt_xent_loss",
]


F_ = TypeVar("F_", bound=Callable[..., torch.Tensor])


def _fp32(fn: F_) -> F_:
    """Compute a loss in float32 even inside a bf16 autocast region (the training step's).

    Autocast would run the einsum/matmul of a loss in bf16, rounding the loss (and its gradient)
    to 3 significant digits; the losses are cheap next to the network, so they stay in float32.
    """

    @functools.wraps(fn)
    def wrapper(first: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        with torch.autocast(device_type=first.device.type, enabled=False):
            return fn(first, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


@_fp32
def dino_cross_entropy(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    student_temp: float = 0.1,
    ignore_diagonal: bool = False,
) -> torch.Tensor:
    """Mean cross-entropy between every student crop and every teacher crop of the same sample.

    ``student_logits``: (S, B, K) raw head outputs; ``teacher_probs``: (T, B, K), rows sum to 1.
    With ``ignore_diagonal`` the pairs (s, t) with s == t (same crop) are skipped.
    """
    s_crops, batch, _ = student_logits.shape
    t_crops = teacher_probs.shape[0]
    log_p = F.log_softmax(student_logits.float() / student_temp, dim=-1)
    per_pair = -torch.einsum("sbk,tbk->st", log_p, teacher_probs.float())  # summed over the batch
    if ignore_diagonal:
        n_diag = min(s_crops, t_crops)
        keep = ~torch.eye(s_crops, t_crops, dtype=torch.bool, device=per_pair.device)
        return per_pair[keep].sum() / (batch * (s_crops * t_crops - n_diag))
    return per_pair.sum() / (batch * s_crops * t_crops)


@torch.no_grad()
def sinkhorn_knopp(
    teacher_logits: torch.Tensor, teacher_temp: float, n_iters: int = 3, n_total: int | None = None
) -> torch.Tensor:
    """Teacher assignments by Sinkhorn-Knopp over the global batch: (N, K) logits -> (N, K) probabilities.

    Alternates normalising prototype (column) mass to 1/K over all processes and sample (row)
    mass to 1/N_total; rows of the result sum to 1. ``n_total`` is the number of rows over all
    processes (computed if not given). A global shift of the logits does not change the result,
    so the global maximum is subtracted first for overflow safety.
    """
    logits = teacher_logits.float() / teacher_temp
    n_local, k = logits.shape
    if n_total is None:
        n_total = int(all_reduce_sum(torch.tensor([float(n_local)], device=logits.device)).item())
    if n_total == 0:
        return logits.new_zeros(logits.shape)
    gmax = logits.max() if n_local else logits.new_tensor(float("-inf"))
    if is_distributed():
        torch.distributed.all_reduce(gmax, op=torch.distributed.ReduceOp.MAX)
    q = torch.exp(logits - gmax).t()  # (K, N_local)
    total = all_reduce_sum(q.sum().reshape(1))
    q = q / total
    for _ in range(n_iters):
        row = all_reduce_sum(q.sum(dim=1, keepdim=True))  # mass per prototype over all processes
        q = torch.where(row > 0, q / row.clamp_min(torch.finfo(q.dtype).tiny), torch.zeros_like(q)) / k
        col = q.sum(dim=0, keepdim=True)  # mass per sample (local)
        q = torch.where(col > 0, q / col.clamp_min(torch.finfo(q.dtype).tiny), torch.zeros_like(q)) / n_total
    return (q * n_total).t()


class SoftmaxCenter(nn.Module):
    """DINO centering: teacher softmax of (logits - c) / T with an EMA centre c over global batches."""

    def __init__(self, dim: int, momentum: float = 0.9):
        super().__init__()
        self.momentum = float(momentum)
        self.register_buffer("center", torch.zeros(1, dim))

    @torch.no_grad()
    def probs(self, teacher_logits: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        return F.softmax((teacher_logits.float() - self.center) / teacher_temp, dim=-1)

    @torch.no_grad()
    def update(self, teacher_logits: torch.Tensor) -> None:
        """Move the centre toward the mean teacher logit of the global batch."""
        stats = torch.cat([teacher_logits.float().sum(dim=0), teacher_logits.new_tensor([teacher_logits.shape[0]],
                                                                                         dtype=torch.float32)])
        stats = all_reduce_sum(stats)
        count = stats[-1]
        if count > 0:
            batch_center = (stats[:-1] / count)[None]
            self.center.mul_(self.momentum).add_(batch_center, alpha=1.0 - self.momentum)


@_fp32
def ibot_patch_loss(
    student_logits: torch.Tensor,
    teacher_probs: torch.Tensor,
    weights: torch.Tensor,
    n_crops: int,
    student_temp: float = 0.1,
) -> torch.Tensor:
    """Masked-patch cross-entropy: (M, K) student logits and teacher probabilities of the M masked
    patches, each weighted by 1/(masked patches of its crop); normalised by the local crop count."""
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    log_p = F.log_softmax(student_logits.float() / student_temp, dim=-1)
    per_patch = -(teacher_probs.float() * log_p).sum(dim=-1)
    return (per_patch * weights.float()).sum() / max(int(n_crops), 1)


@_fp32
def koleo_loss(features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """KoLeo regulariser on (N, D) features; nearest neighbours are searched in the global batch."""
    x = F.normalize(features.float(), p=2, dim=-1, eps=eps)
    all_x = gather_with_grad(x)
    n = x.shape[0]
    offset = rank() * n if all_x.shape[0] != n else 0
    with torch.no_grad():
        dots = x @ all_x.t()
        idx = torch.arange(n, device=x.device)
        dots[idx, idx + offset] = -2.0  # exclude each vector itself
        nn_idx = dots.argmax(dim=1)
    dist = F.pairwise_distance(x, all_x[nn_idx], p=2, eps=eps)
    return -torch.log(dist + eps).mean()


@_fp32
def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SimCLR NT-Xent for N positive pairs (z1[i], z2[i]), with negatives from the global batch."""
    a = F.normalize(z1.float(), dim=-1)
    b = F.normalize(z2.float(), dim=-1)
    n = a.shape[0]
    all_a, all_b = gather_with_grad(a), gather_with_grad(b)
    g = all_a.shape[0]
    everything = torch.cat([all_a, all_b], dim=0)  # (2G, D): views 1 of all samples, then views 2
    local = torch.cat([a, b], dim=0)  # (2n, D)
    logits = local @ everything.t() / temperature
    off = rank() * n if g != n else 0
    i = torch.arange(n, device=a.device)
    self_cols = torch.cat([off + i, g + off + i])
    partner_cols = torch.cat([g + off + i, off + i])
    rows = torch.arange(2 * n, device=a.device)
    logits = logits.masked_fill(
        torch.zeros_like(logits, dtype=torch.bool).index_put_((rows, self_cols), torch.tensor(True)), float("-inf")
    )
    return F.cross_entropy(logits, partner_cols)
