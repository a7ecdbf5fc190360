"""The ``Encoder`` interface every backbone of the benchmark implements.

The benchmark freezes every encoder and reads it through one narrow interface, so that the
extractor (:mod:`brainfm.features.extract`) treats a 2D slice ViT and a 3D volume network the
same way:

* ``preprocess(volume)`` turns one canonical volume from the downstream store, a (D, H, W)
  float32 tensor (D = axial index), into the encoder's input: ``(S, C, h, w)`` slices for
  ``input_kind == "slices2d"`` or a ``(1, C, d, h, w)`` batch for ``"volume3d"``.
* ``forward_features(x, layers=(), return_patch=False)`` returns ``{"cls": (B, embed_dim)}``,
  plus ``"layers"`` (one pooled (B, dim_l) tensor per requested block/stage, in the order asked)
  and ``"patch"`` ((B, *grid, dim), grid axes in the order of the input's spatial axes; for 3D
  encoders the first grid axis must follow the volume's axial axis D).

Adding an encoder is one file plus one registry line::

    from brainfm.models import Encoder, register_encoder

    class MyNet3D(Encoder):
        input_kind = "volume3d"

        def __init__(self):
            super().__init__()
            self.net = ...                       # the module whose state dict checkpoints hold
            self.embed_dim = 512
            self.layer_names = ["stage0", "stage1", "stage2", "stage3"]

        def weight_module(self):
            return self.net

        def preprocess(self, volume):  ...      # (D, H, W) -> (1, 1, d, h, w)
        def forward_features(self, x, layers=(), return_patch=False): ...

    @register_encoder("mynet")
    def mynet(weights=None, **kw):
        enc = MyNet3D(**kw)
        if weights:
            enc.load_weights(weights, expected_missing=(...))   # strict; see brainfm.models.checkpoint
        return enc

Frozen means frozen: :meth:`Encoder.freeze` turns off gradients and puts the module in eval
mode, and a frozen encoder refuses to go back to train mode (``train(True)`` is a no-op). The
public BrainDINO code calls ``model.train()`` on the whole classifier, which leaves drop-path
(rate 0.2) active inside its "frozen" ViT; we deliberately do not reproduce that.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from brainfm.errors import ConfigError

if TYPE_CHECKING:
    from brainfm.models.checkpoint import Layout

__all__ = ["Encoder", "INPUT_KINDS"]

INPUT_KINDS = ("slices2d", "volume3d", "table")  # table: per-scan values (reference encoders)


class Encoder(nn.Module):
    """Base class of all registry encoders (see the module docstring for the contract).

    Subclasses set ``input_kind``, ``embed_dim`` and ``layer_names`` and implement
    :meth:`preprocess` and :meth:`forward_features`. ``name`` is filled in by
    :func:`brainfm.models.create_encoder`; ``config`` holds the constructor arguments that define
    the features (architecture, resolution, stacking), recorded in feature-store metadata.
    """

    name: str = ""
    input_kind: str = "slices2d"
    embed_dim: int = 0
    layer_names: list[str]

    def __init__(self) -> None:
        super().__init__()
        self.layer_names = []
        self.config: dict[str, Any] = {}
        self.weights_info: dict[str, Any] | None = None  # set by load_weights
        self._frozen = False

    # ------------------------------------------------------------------ to implement
    def preprocess(self, volume: torch.Tensor) -> torch.Tensor:
        """Canonical (D, H, W) float32 volume -> model input (see module docstring)."""
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor, layers: Sequence[int] = (),
                         return_patch: bool = False) -> dict[str, Any]:
        """Model input -> {"cls": (B, embed_dim), ["layers": [...]], ["patch": (B, *grid, dim)]}."""
        raise NotImplementedError

    # ------------------------------------------------------------------ weights
    def weight_module(self) -> nn.Module:
        """The module whose ``state_dict`` a checkpoint file holds (default: the encoder itself)."""
        return self

    def convert_state_dict(self, state: dict[str, torch.Tensor], path: Path,
                           layout: Layout | None = None) -> dict[str, torch.Tensor]:
        """Hook for encoder-specific key renames before the strict key check (default: none).

        ``layout`` (:class:`~brainfm.models.checkpoint.Layout`) is what the loader recognised in
        the file; a hook that knows its authors' layouts names the one it found
        (``layout.recognise``) and lists the keys it drops outside the backbone in ``layout.outside``.
        """
        return state

    def load_weights(self, path: str | Path, **kwargs: Any) -> dict[str, Any]:
        """Strictly load a checkpoint file; see :func:`brainfm.models.checkpoint.load_encoder_weights`."""
        from brainfm.models.checkpoint import load_encoder_weights

        self.weights_info = load_encoder_weights(self, path, **kwargs)
        return self.weights_info

    # ------------------------------------------------------------------ frozen use
    def freeze(self) -> Encoder:
        """No gradients, eval mode (no dropout / drop-path), and stay that way."""
        self.requires_grad_(False)
        self._frozen = True
        return super().train(False)

    @property
    def frozen(self) -> bool:
        return self._frozen

    def train(self, mode: bool = True) -> Encoder:
        # A frozen encoder inside a trainable head module must not switch drop-path back on.
        if self._frozen:
            return super().train(False)
        return super().train(mode)

    def layer_index(self, layer: int | str) -> int:
        """Block/stage number of ``layer`` (an int index or one of ``layer_names``)."""
        n = len(self.layer_names)
        if isinstance(layer, str):
            if layer not in self.layer_names:
                raise ConfigError(f"encoder {self.name!r} has no layer {layer!r}; known: {self.layer_names}")
            return self.layer_names.index(layer)
        idx = int(layer)
        if not -n <= idx < n:
            raise ConfigError(f"encoder {self.name!r}: layer {idx} out of range (it has {n}: {self.layer_names})")
        return idx % n

    def describe(self) -> dict[str, Any]:
        """JSON-able summary recorded with extracted features."""
        return {
            "name": self.name,
            "class": type(self).__name__,
            "input_kind": self.input_kind,
            "embed_dim": int(self.embed_dim),
            "layer_names": list(self.layer_names),
            "n_params": int(sum(p.numel() for p in self.parameters())),
            "config": dict(self.config),
            "weights": dict(self.weights_info) if self.weights_info else None,
        }

    def extra_repr(self) -> str:
        return f"name={self.name!r}, input_kind={self.input_kind!r}, embed_dim={self.embed_dim}"
