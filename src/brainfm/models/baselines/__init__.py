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

from brainfm.models.baselines import bmmae, brainiac, brainmvp, medicalnet  # noqa: F401  (registrations)
from brainfm.models.baselines.bmmae import BMMAEEncoder, bmmae_key
from brainfm.models.baselines.brainiac import BrainIACViT, ResNetEncoder3D
from brainfm.models.baselines.brainmvp import BrainMVPEncoder, UniFormer3D
from brainfm.models.baselines.common import VolumeEncoder3D

__all__ = ["VolumeEncoder3D", "ResNetEncoder3D", "BrainIACViT", "BMMAEEncoder", "BrainMVPEncoder", "UniFormer3D",
           "bmmae_key"]
