"""Per-head losses for a :class:`~brainfm.tasks.heads.HeadBank`.

Each function takes outputs ``(H, B, K)``, targets ``(H, B, ...)`` and sample weights ``(H, B)``
(0 for padding) and returns one loss per head, the weighted mean over that head's samples, so
padding never changes a head's gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["LOSSES", "cross_entropy", "mse", "atlas_mixed", "cox_partial_likelihood"]


def _wmean(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (values * weight).sum(-1) / weight.sum(-1).clamp(min=1e-12)


def cross_entropy(out: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy, paper eq. (4)."""
    ce = F.cross_entropy(out.transpose(1, 2), target.long(), reduction="none")
    return _wmean(ce, weight)


def mse(out: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Squared error on a single regression output, paper eq. (5)."""
    return _wmean((out[..., 0] - target) ** 2, weight)


def atlas_mixed(out: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, alpha: float = 0.2,
                delta: float = 1.0) -> torch.Tensor:
    """ATLAS days-post-stroke loss, paper eq. (9): α·MSE + (1−α)(½·L1 + ½·Huber_δ) on log1p targets."""
    err = out[..., 0] - target
    huber = F.huber_loss(out[..., 0], target, reduction="none", delta=delta)
    per = alpha * err**2 + (1 - alpha) * (0.5 * err.abs() + 0.5 * huber)
    return _wmean(per, weight)


def cox_partial_likelihood(out: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Negative Cox partial log-likelihood per head, paper eq. (11), Breslow handling of ties.

    ``target[..., 0]`` is the time and ``target[..., 1]`` the event indicator. The risk set of
    subject ``i`` is every valid subject of the same head with ``T_j >= T_i``; the sum is divided
    by the number of events ``D`` of that head.
    """
    risk = out[..., 0]
    time, event = target[..., 0], target[..., 1] * (weight > 0)
    at_risk = (time.unsqueeze(-2) >= time.unsqueeze(-1)) & (weight.unsqueeze(-2) > 0)  # [h, i, j]
    masked = risk.unsqueeze(-2).expand_as(at_risk).masked_fill(~at_risk, float("-inf"))
    log_denominator = torch.logsumexp(masked, dim=-1)
    n_events = event.sum(-1).clamp(min=1.0)
    contrib = torch.where(event > 0, risk - log_denominator, torch.zeros_like(risk))
    return -contrib.sum(-1) / n_events


LOSSES = {
    "ce": cross_entropy,
    "mse": mse,
    "atlas_mixed": atlas_mixed,
    "cox": cox_partial_likelihood,
}
