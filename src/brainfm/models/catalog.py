"""The built-in encoders: where each is registered, its display name and colour (torch-free).

This is the one list of encoder names. The registry uses it to import only the module that
registers a requested encoder (a 3D baseline pulls in MONAI, seconds per process); figures and
tables use it for the paper's spelling and a fixed colour per encoder. Encoders registered by a
plugin need no entry here: they are shown under their own name with a colour derived from it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EncoderInfo", "ENCODERS", "encoder_info", "is_reference", "REFERENCE_KINDS"]

_VIT = "brainfm.models.vit"
_REF = "brainfm.models.reference"
#: kinds of reference rows: a crude baseline, chance (no information), and the ground truth (upper bound)
REFERENCE_KINDS = ("baseline", "prior", "oracle")
_BASELINES = "brainfm.models.baselines."


@dataclass(frozen=True)
class EncoderInfo:
    name: str
    module: str  # the module whose import registers it
    label: str  # display name in figures and tables
    color: str | None = None  # fixed colour in figures (None: derived from the name)
    reference: str | None = None  # one of REFERENCE_KINDS for the reference rows (shown grey, after encoders)


#: In the paper's order of backbones (the reference first); figures and tables keep this order.
ENCODERS: dict[str, EncoderInfo] = {e.name: e for e in (
    EncoderInfo("braindino", _VIT, "BrainDINO", "#d62728"),
    EncoderInfo("dinov3", _VIT, "DINOv3", "#1f77b4"),
    EncoderInfo("brainiac", _BASELINES + "brainiac", "BrainIAC", "#2ca02c"),
    EncoderInfo("brainiac_simclr", _BASELINES + "brainiac", "BrainIAC (SimCLR)", "#98df8a"),
    EncoderInfo("bmmae", _BASELINES + "bmmae", "BM-MAE", "#ff7f0e"),
    EncoderInfo("brainmvp", _BASELINES + "brainmvp", "BrainMVP", "#9467bd"),
    EncoderInfo("brainfound", _VIT, "BrainFound", "#8c564b"),
    EncoderInfo("vit_random", _VIT, "ViT (random init)", "#17becf"),
    EncoderInfo("medicalnet", _BASELINES + "medicalnet", "MedicalNet", "#e377c2"),
    EncoderInfo("vit_dinov3", _VIT, "ViT (DINOv3 architecture)"),
    EncoderInfo("brainiac_v1", _BASELINES + "brainiac", "BrainIAC v1"),
    EncoderInfo("brainiac_scratch", _BASELINES + "brainiac", "BrainIAC (random init)"),
    EncoderInfo("brainiac_v1_scratch", _BASELINES + "brainiac", "BrainIAC v1 (random init)"),
    EncoderInfo("brainiac_simclr_scratch", _BASELINES + "brainiac", "ResNet (random init)", "#bcbd22"),
    EncoderInfo("bmmae_scratch", _BASELINES + "bmmae", "BM-MAE (random init)"),
    EncoderInfo("brainmvp_scratch", _BASELINES + "brainmvp", "BrainMVP (random init)"),
    EncoderInfo("medicalnet_scratch", _BASELINES + "medicalnet", "MedicalNet (random init)"),
    # references (brainfm.models.reference): grey, after the encoders in every table and figure
    EncoderInfo("phantom_oracle", _REF, "Tissue oracle (upper reference)", "#404040", "oracle"),
    EncoderInfo("image_stats", _REF, "Image statistics (reference)", "#8c8c8c", "baseline"),
    EncoderInfo("prior", _REF, "Class prior / mean (reference)", "#c8c8c8", "prior"),
)}


def encoder_info(name: str) -> EncoderInfo | None:
    """The catalogue entry of ``name`` (case-insensitive), or None for a plugin's encoder."""
    return ENCODERS.get(str(name).strip().lower())


def is_reference(name: str) -> bool:
    """Whether ``name`` is a reference row (prior, image statistics, oracle) rather than an encoder."""
    info = encoder_info(name)
    return bool(info and info.reference)
