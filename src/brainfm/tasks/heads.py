"""Many small task heads trained at once.

The paper's head is LayerNorm → Linear → GELU → Linear on a frozen feature vector. A benchmark
needs thousands of them (task × ratio × backbone × seed × fold), each tiny, so one head per
Python training loop would be dominated by interpreter overhead. :class:`HeadBank` stores ``H``
independent heads as stacked tensors and runs them with batched matrix products; each head
keeps its own data order, optimiser state, step count and early stopping, so a bank of ``H``
heads gives the same result as ``H`` separate runs (tested against ``torch.optim``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["HeadBank", "BatchedAdam", "init_head_params"]


def init_head_params(n_heads: int, in_dim: int, hidden: int, out_dim: int,
                     generators: list[torch.Generator]) -> dict[str, torch.Tensor]:
    """PyTorch-default initialisation (kaiming-uniform weights, uniform biases), one generator per head."""
    params = {
        "ln_w": torch.ones(n_heads, in_dim),
        "ln_b": torch.zeros(n_heads, in_dim),
        "w1": torch.empty(n_heads, in_dim, hidden),
        "b1": torch.empty(n_heads, hidden),
        "w2": torch.empty(n_heads, hidden, out_dim),
        "b2": torch.empty(n_heads, out_dim),
    }
    b_in, b_hid = 1.0 / math.sqrt(in_dim), 1.0 / math.sqrt(hidden)
    for h, g in enumerate(generators):
        # same draw order as nn.Linear(in, hidden) then nn.Linear(hidden, out): weight, bias, weight, bias
        params["w1"][h] = (torch.rand(hidden, in_dim, generator=g) * 2 - 1).mul_(b_in).T
        params["b1"][h] = (torch.rand(hidden, generator=g) * 2 - 1).mul_(b_in)
        params["w2"][h] = (torch.rand(out_dim, hidden, generator=g) * 2 - 1).mul_(b_hid).T
        params["b2"][h] = (torch.rand(out_dim, generator=g) * 2 - 1).mul_(b_hid)
    return params


@dataclass
class BatchedAdam:
    """Adam / AdamW over stacked per-head parameters with per-head step counts.

    ``torch.optim.Adam`` keeps one step counter per tensor, so heads that sit out a step (their
    epoch ended, or they stopped early) would still see their bias correction advance. Here
    each head advances only when it is active, which keeps a bank exactly equivalent to
    independent runs.
    """

    params: dict[str, torch.Tensor]
    lr: float
    weight_decay: float = 0.0
    decoupled: bool = False  # False: Adam with L2 added to the gradient (torch.optim.Adam); True: AdamW
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def __post_init__(self) -> None:
        n_heads = next(iter(self.params.values())).shape[0]
        self.m = {k: torch.zeros_like(v) for k, v in self.params.items()}
        self.v = {k: torch.zeros_like(v) for k, v in self.params.items()}
        fused = torch._fused_adamw_ if self.decoupled else torch._fused_adam_
        self._fused = fused if hasattr(torch, "_fused_adam_") else None
        # one step counter per head, shared by that head's tensors (what torch.optim keeps per tensor); both paths
        self._steps = torch.zeros(n_heads, dtype=torch.float32)
        # per-head views, made once: building them every step cost as much as the update of small heads
        step_views = self._steps.unbind(0)
        views = [list(zip(*(t.unbind(0) for t in group.values()))) for group in (self.params, self.m, self.v)]
        self._head_views = [(views[0][h], views[1][h], views[2][h], [step_views[h]] * len(self.params))
                            for h in range(n_heads)]

    def select(self, heads: torch.Tensor, params: dict[str, torch.Tensor]) -> BatchedAdam:
        """This optimiser's state (moments, step counts) for ``heads`` only, driving ``params``.

        ``params`` hold those heads' parameters in the same order (e.g. :meth:`HeadBank.select`):
        training drops the heads that stopped, so later steps neither copy nor skip them.
        """
        new = BatchedAdam(params, self.lr, self.weight_decay, self.decoupled, self.betas, self.eps)
        with torch.no_grad():  # in place: the new optimiser's per-head views stay valid
            for k in self.params:
                new.m[k].copy_(self.m[k][heads])
                new.v[k].copy_(self.v[k][heads])
            new._steps.copy_(self._steps[heads])
        return new

    @torch.no_grad()
    def step(self, grads: dict[str, torch.Tensor], heads: torch.Tensor) -> None:
        """Update the heads listed in ``heads`` (1-D indices); every other head stays bit-identical.

        ``grads[k]`` holds one gradient per listed head, in the order of ``heads``, so a caller
        computes gradients for the heads still training only. Uses PyTorch's fused Adam/AdamW
        kernel on per-head views of the stacked tensors, so each head follows exactly the
        ``torch.optim`` update with its own step count (one memory pass instead of a dozen
        element-wise passes).
        """
        heads_list = [int(h) for h in heads]
        if not heads_list:
            return
        if self._fused is None:
            return self._step_unfused(grads, heads_list)
        self._steps[heads_list] += 1
        params, ms, vs, steps = [], [], [], []
        for h in heads_list:
            p, m, v, st = self._head_views[h]
            params += p
            ms += m
            vs += v
            steps += st
        gs = [g for per_head in zip(*(grads[k].unbind(0) for k in self.params)) for g in per_head]
        self._fused(params, gs, ms, vs, [], steps, lr=self.lr, beta1=self.betas[0], beta2=self.betas[1],
                    weight_decay=self.weight_decay, eps=self.eps, amsgrad=False, maximize=False)

    @torch.no_grad()
    def _step_unfused(self, grads: dict[str, torch.Tensor], heads: list[int]) -> None:
        """Fallback without the fused kernels.

        Written with in-place operations and per-head scalars: an inactive head gets betas of 1
        and a step size of 0, so its moments and weights are untouched without a masked copy of
        every tensor (the optimiser step dominates for wide heads otherwise).
        """
        active = torch.zeros(self._steps.shape[0], dtype=torch.bool)
        active[heads] = True
        b1, b2 = self.betas
        act = active.to(torch.float32)
        self._steps += act
        t = self._steps.double().clamp(min=1)
        step_size = (self.lr / (1 - b1 ** t)).float() * act
        bc2_sqrt = (1 - b2 ** t).sqrt().float()
        b1v = 1 - (1 - b1) * act
        b2v = 1 - (1 - b2) * act
        decay = 1 - self.lr * self.weight_decay * act if (self.weight_decay and self.decoupled) else None
        for k, p in self.params.items():
            shape = (-1,) + (1,) * (p.dim() - 1)
            g = torch.zeros_like(p)
            g[heads] = grads[k]
            if self.weight_decay and not self.decoupled:
                g = (g + self.weight_decay * p) * act.view(shape)
            m, v = self.m[k], self.v[k]
            m.mul_(b1v.view(shape)).add_(g * (1 - b1v).view(shape))
            v.mul_(b2v.view(shape)).add_(g * g * (1 - b2v).view(shape))
            denom = (v.sqrt() / bc2_sqrt.view(shape)).add_(self.eps)
            if decay is not None:
                p.mul_(decay.view(shape))
            p.sub_(m / denom * step_size.view(shape))


class HeadBank:
    """``H`` independent LayerNorm–Linear–GELU–Linear heads evaluated together.

    Inputs are ``(H, B, D)`` (each head sees its own batch) or ``(B, D)`` (shared batch, e.g.
    for prediction). Dropout, when set, is applied after the GELU as in the public heads.
    """

    def __init__(self, params: dict[str, torch.Tensor], dropout: float = 0.0, ln_eps: float = 1e-5,
                 shift: torch.Tensor | None = None, scale: torch.Tensor | None = None):
        self.params = params
        self.dropout = dropout
        self.ln_eps = ln_eps
        # optional fixed per-head input standardisation (H, D): x -> (x - shift) / scale
        self.shift = shift
        self.scale = scale

    @property
    def n_heads(self) -> int:
        return self.params["w1"].shape[0]

    def forward(self, x: torch.Tensor, *, train: bool = False,
                generators: list[torch.Generator] | None = None) -> torch.Tensor:
        p = self.params
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.n_heads, -1, -1)
        if self.shift is not None:
            x = (x - self.shift.unsqueeze(1)) / self.scale.unsqueeze(1)
        h = F.layer_norm(x, x.shape[-1:], eps=self.ln_eps)
        h = h * p["ln_w"].unsqueeze(1) + p["ln_b"].unsqueeze(1)
        h = torch.baddbmm(p["b1"].unsqueeze(1), h, p["w1"])
        h = F.gelu(h)
        if train and self.dropout > 0:
            if generators is None or len(generators) != h.shape[0]:
                raise ValueError("dropout needs one generator per head")
            # one generator per head keeps a head's dropout masks independent of its bank-mates
            keep = torch.stack([torch.rand(h.shape[1:], generator=g) >= self.dropout for g in generators]).to(h.device)
            h = h * keep / (1 - self.dropout)
        return torch.baddbmm(p["b2"].unsqueeze(1), h, p["w2"])

    def select(self, heads: torch.Tensor) -> HeadBank:
        """The listed heads as a bank of their own, on copies of their parameters.

        Training continues with the heads still running only: heads stop early at different
        epochs, and a wide head's cost is its weights' memory traffic.
        """
        pick = (lambda t: None if t is None else t[heads])
        return HeadBank({k: v[heads] for k, v in self.params.items()}, dropout=self.dropout, ln_eps=self.ln_eps,
                        shift=pick(self.shift), scale=pick(self.scale))

    def snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.params.items()}

    def n_trainable_per_head(self) -> int:
        return sum(v[0].numel() for v in self.params.values())
