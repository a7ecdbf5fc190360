"""iBOT patch masks: which patch tokens of a global crop the student sees replaced by a mask token.

Paper §4.2: each global crop is masked with probability 0.5, and a masked crop hides a ratio
of its patches drawn uniformly from [0.1, 0.5]. The masked set is grown from random rectangular
blocks (as BEiT/iBOT/DINOv3 do, so the student must inpaint regions rather than isolated
patches) and topped up with random single patches to hit the exact count ``floor(ratio * N)``.

Masks are drawn per crop from a caller-supplied ``numpy.random.Generator``; the data pipeline
seeds it from the sample's global stream position, so masks do not depend on the number of
processes or loader workers (a DDP run sees the same masks as a single process).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["block_mask", "sample_crop_masks"]


def block_mask(
    grid: tuple[int, int],
    n_mask: int,
    rng: np.random.Generator,
    min_patches: int = 4,
    min_aspect: float = 0.3,
    max_tries: int = 10,
) -> np.ndarray:
    """A boolean (h, w) mask with exactly ``n_mask`` True entries, built from random blocks."""
    h, w = grid
    n_total = h * w
    n_mask = int(min(max(n_mask, 0), n_total))
    mask = np.zeros((h, w), dtype=bool)
    log_aspect = (math.log(min_aspect), math.log(1.0 / min_aspect))
    count = 0
    while count < n_mask:
        budget = n_mask - count
        added = 0
        for _ in range(max_tries):
            if budget < min_patches:
                break
            area = rng.uniform(min_patches, budget)
            aspect = math.exp(rng.uniform(*log_aspect))
            bh = int(round(math.sqrt(area * aspect)))
            bw = int(round(math.sqrt(area / aspect)))
            if not (1 <= bh < h and 1 <= bw < w):
                continue
            top = int(rng.integers(0, h - bh + 1))
            left = int(rng.integers(0, w - bw + 1))
            window = mask[top : top + bh, left : left + bw]
            new = window.size - int(window.sum())
            if 0 < new <= budget:
                window[...] = True
                added = new
                break
        if added == 0:
            break
        count += added
    if count < n_mask:  # top up with single random patches
        free = np.flatnonzero(~mask.ravel())
        pick = rng.choice(free, size=n_mask - count, replace=False)
        mask.ravel()[pick] = True
    return mask


def sample_crop_masks(
    n_crops: int,
    grid: tuple[int, int],
    rng: np.random.Generator,
    mask_prob: float = 0.5,
    ratio_range: tuple[float, float] = (0.1, 0.5),
    min_patches: int = 4,
) -> np.ndarray:
    """Masks for ``n_crops`` global crops: (n_crops, h, w) bool.

    Each crop is masked with probability ``mask_prob``; a masked crop hides
    ``floor(U(ratio_range) * h * w)`` patches.
    """
    h, w = grid
    out = np.zeros((n_crops, h, w), dtype=bool)
    for i in range(n_crops):
        masked = rng.random() < mask_prob
        ratio = rng.uniform(*ratio_range)  # drawn always, so the stream does not depend on `masked`
        if masked:
            out[i] = block_mask(grid, int(ratio * h * w), rng, min_patches=min_patches)
    return out
