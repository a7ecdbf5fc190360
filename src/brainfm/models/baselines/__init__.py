"""3D baseline encoders of the benchmark, registered on import (``brainfm.models`` imports this package).

Registry names (architecture; weights file; feature dimension):

* ``brainiac`` -- BrainIAC v2, MONAI ViT-B/16 at 96^3, first patch token (no CLS); ``BrainIAC.ckpt``; 768.
* ``brainiac_v1`` -- BrainIAC v1, MONAI 3D ResNet50 at 128^3; v1 Lightning checkpoint; 2048.
* ``brainiac_simclr`` -- the v1 ResNet trained by our SimCLR recipe; ``pretrain:<run>`` export; 2048.
* ``bmmae`` -- BM-MAE 3D ViT (MLP 1536, lowercase modality tokenizers) at 128^3; ``bmmae.pth``; 768.
* ``brainmvp`` -- BrainMVP UniFormer-S 3D at 128^3; ``BrainMVP_uniformer.pt``; 512.
* ``medicalnet`` -- MedicalNet 3D ResNet50 (optional row); ``resnet_50_23dataset.pth``; 2048.
* ``<name>_scratch`` for ``brainiac``, ``brainiac_v1``, ``bmmae``, ``brainmvp``, ``medicalnet``: the same
  architecture with a seeded random initialisation (controls, no weights).

Each module's docstring records where its layout was read, how the public code loads and feeds
it, and our axis order; :mod:`brainfm.models.baselines.common` holds what they share (axis
bookkeeping, MONAI-equivalent intensity recipes, layout-aware strict loading).
"""

import importlib

_MODULES = ("bmmae", "brainiac", "brainmvp", "medicalnet")
_EXPORTS = {
    "BMMAEEncoder": "bmmae", "bmmae_key": "bmmae", "BrainIACViT": "brainiac", "ResNetEncoder3D": "brainiac",
    "BrainMVPEncoder": "brainmvp", "UniFormer3D": "brainmvp", "VolumeEncoder3D": "common",
}
__all__ = sorted(_EXPORTS)


def register_all() -> None:
    """Import every baseline module (their decorators register the encoders)."""
    for mod in _MODULES:
        importlib.import_module(f"{__name__}.{mod}")


def __getattr__(name: str):
    # submodules (and MONAI) load on first use, so a process that needs one encoder imports one module
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


