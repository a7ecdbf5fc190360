"""Test-case prediction with nnU-Net's sliding-window predictor, and per-case region Dice.

:func:`predict_cases` hands a trained network to ``nnUNetPredictor`` (``manual_initialization``,
the route nnU-Net's own trainer takes for its validation) and runs
``predict_from_files_sequential``: nnU-Net preprocessing of each raw test case, Gaussian-weighted
sliding windows with 50% overlap and mirroring, region sigmoid -> label map, export in the
case's own geometry. No worker processes are started. The one change: the tiles of a case go
through the network in batches (:func:`batched_tile_predictor`), where nnU-Net sends them one
by one; tiles, weights, mirroring and the order of accumulation are nnU-Net's.

:func:`region_dice` compares an exported prediction (nnU-Net region coding) with the case's
*original* mask (dataset coding) through the label map, per region, with
:func:`brainfm.stats.metrics.dice` (1.0 when both are empty, the BraTS convention).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from brainfm.errors import InputError
from brainfm.data.datasets.labelmap import LabelMap
from brainfm.stats.metrics import dice

__all__ = ["predict_cases", "batched_tile_predictor", "region_dice", "dice_table", "all_background_dice", "DICE_COLUMNS"]

log = logging.getLogger("brainfm.segmentation")

DICE_COLUMNS = ["case_id", "subject", "session", "region", "dice", "gt_voxels", "pred_voxels"]


def batched_tile_predictor(tile_batch: int = 32) -> type:
    """``nnUNetPredictor`` whose sliding window runs ``tile_batch`` tiles per network call.

    nnU-Net predicts one tile at a time; a 2D configuration of a 3D volume has hundreds of small
    tiles per case, and on a CPU the per-call overhead then dominates. Each tile's logits are
    accumulated exactly as nnU-Net does (Gaussian weight, half-precision sums, same order).
    """
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    class BatchedTilePredictor(nnUNetPredictor):
        @torch.inference_mode()
        def _internal_predict_sliding_window_return_logits(self, data: torch.Tensor, slicers: Any,
                                                           do_on_device: bool = True) -> torch.Tensor:
            results_device = self.device if do_on_device else torch.device("cpu")
            data = data.to(results_device)
            logits = torch.zeros((self.label_manager.num_segmentation_heads, *data.shape[1:]), dtype=torch.half,
                                 device=results_device)
            n_predictions = torch.zeros(data.shape[1:], dtype=torch.half, device=results_device)
            gaussian = compute_gaussian(tuple(self.configuration_manager.patch_size), sigma_scale=1. / 8,
                                        value_scaling_factor=10, device=results_device) if self.use_gaussian else 1
            for start in range(0, len(slicers), tile_batch):
                chunk = slicers[start:start + tile_batch]
                tiles = torch.stack([data[sl] for sl in chunk]).to(self.device)
                for prediction, sl in zip(self._internal_maybe_mirror_and_predict(tiles).to(results_device), chunk):
                    if self.use_gaussian:
                        prediction *= gaussian
                    logits[sl] += prediction
                    n_predictions[sl[1:]] += gaussian
            torch.div(logits, n_predictions, out=logits)
            if torch.any(torch.isinf(logits)):
                raise RuntimeError("inf in the predicted logits (nnU-Net's half-precision accumulation)")
            return logits

    return BatchedTilePredictor


def predict_cases(trainer: Any, inputs: Sequence[Sequence[str]], outputs: Sequence[str | Path], *,
                  use_mirroring: bool = True, tile_step_size: float = 0.5, tile_batch: int = 32) -> None:
    """Predict ``inputs`` (per case, its channel files) into ``outputs`` (truncated names, no ending)."""
    network = trainer.network
    network.eval()
    predictor = batched_tile_predictor(tile_batch)(tile_step_size=tile_step_size, use_gaussian=True, use_mirroring=use_mirroring,
                                perform_everything_on_device=trainer.device.type == "cuda", device=trainer.device, verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.manual_initialization(network, trainer.plans_manager, trainer.configuration_manager,
                                    [network.state_dict()], trainer.dataset_json, type(trainer).__name__,
                                    trainer.inference_allowed_mirroring_axes)
    Path(outputs[0]).parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        predictor.predict_from_files_sequential([list(map(str, i)) for i in inputs], [str(o) for o in outputs],
                                                save_probabilities=False, overwrite=True)


def _load(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img = nib.load(str(path))
    return np.asanyarray(img.dataobj), np.asarray(img.affine, dtype=float)


def region_dice(prediction: str | Path, mask: str | Path, label_map: LabelMap) -> list[dict[str, Any]]:
    """Per region: Dice, ground-truth and predicted voxel counts of one case."""
    pred, pred_affine = _load(prediction)
    truth, truth_affine = _load(mask)
    if pred.shape != truth.shape or not np.allclose(pred_affine, truth_affine, atol=1e-3):
        raise InputError(prediction, f"prediction grid {pred.shape} does not match the mask {mask} {truth.shape}")
    p = label_map.nnunet_regions(pred)
    t = label_map.raw_regions(truth)
    return [{"region": r, "dice": dice(p[r], t[r]), "gt_voxels": int(t[r].sum()), "pred_voxels": int(p[r].sum())}
            for r in label_map.region_names]


def dice_table(cases: pd.DataFrame, predictions: dict[str, Path], label_map: LabelMap) -> pd.DataFrame:
    """Tidy per-case, per-region Dice of ``cases`` (rows with case_id, subject, session, mask)."""
    rows = []
    for case in cases.itertuples():
        for r in region_dice(predictions[case.case_id], case.mask, label_map):
            rows.append({"case_id": case.case_id, "subject": case.subject, "session": case.session, **r})
    return pd.DataFrame(rows, columns=DICE_COLUMNS)


def all_background_dice(table: pd.DataFrame) -> pd.DataFrame:
    """The same table for a prediction with no foreground: Dice 1 where the region is absent, else 0."""
    out = table.copy()
    out["dice"] = (out["gt_voxels"] == 0).astype(float)
    out["pred_voxels"] = 0
    return out
