"""Projection heads for self-distillation (DINO on the CLS token, iBOT on patch tokens).

Paper §4.2: separate DINO and iBOT heads, each a three-layer MLP (hidden 2048, bottleneck 256)
followed by an L2-normalised bottleneck and a bias-free linear layer onto K = 65536 prototypes.
Names follow the DINOv3 layout (``mlp.0``, ``mlp.2``, ``mlp.4``, ``last_layer``) so the heads
can be saved next to the backbone in a ``{"teacher": {"dino_head.*", "ibot_head.*"}}`` file.
``norm_last_layer`` (off in the paper) normalises each prototype vector, as DINOv1/v2 could.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.init import trunc_normal_

__all__ = ["DINOHead"]


class DINOHead(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 n_layers: int = 3, norm_last_layer: bool = False):
        super().__init__()
        # DINOv1/v2 option: unit-norm prototypes (logits are cosines, sharp at teacher temperature from
        # the first iteration). DINOv3 and the paper use a plain linear layer (False).
        self.norm_last_layer = bool(norm_last_layer)
        n_layers = max(int(n_layers), 1)
        if n_layers == 1:
            layers: list[nn.Module] = [nn.Linear(in_dim, bottleneck_dim)]
        else:
            layers = [nn.Linear(in_dim, hidden_dim), nn.GELU()]
            for _ in range(n_layers - 2):
                layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        self.last_layer = nn.Linear(bottleneck_dim, out_dim, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mlp(x)
        x = F.normalize(x, dim=-1, p=2, eps=1e-6 if x.dtype in (torch.float16, torch.bfloat16) else 1e-12)
        if self.norm_last_layer:
            return F.linear(x, F.normalize(self.last_layer.weight, dim=1))
        return self.last_layer(x)
