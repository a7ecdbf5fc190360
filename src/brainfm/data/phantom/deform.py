"""Smooth random fields, random poses and trilinear resampling for the phantom.

Smooth fields (elastic displacements, bias fields, tissue texture at coarse scale) are cubic
B-splines on a coarse control grid. The tensor-product structure lets us upsample with one small
matrix per axis instead of interpolating every voxel, so a whole-head field costs a few
milliseconds. Resampling of the tissue maps uses ``torch.nn.functional.grid_sample`` (trilinear),
which is about twice as fast as ``scipy.ndimage.map_coordinates`` for several channels and is
deterministic on the CPU.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["bspline_basis", "smooth_field", "rotation_matrix", "sample_grid", "nonzero_box"]


def _cubic_bspline(t: np.ndarray) -> np.ndarray:
    t = np.abs(t)
    out = np.zeros_like(t)
    a = t < 1
    b = (t >= 1) & (t < 2)
    out[a] = 2.0 / 3.0 - t[a] ** 2 + 0.5 * t[a] ** 3
    out[b] = (2.0 - t[b]) ** 3 / 6.0
    return out


def bspline_basis(n_out: int, spacing: float) -> np.ndarray:
    """(n_out, n_ctrl) cubic B-spline weights of control points spaced ``spacing`` voxels apart."""
    spacing = max(float(spacing), 1.0)
    n_ctrl = int(np.ceil((n_out - 1) / spacing)) + 4
    pos = (n_out - 1) / 2.0 + (np.arange(n_ctrl) - (n_ctrl - 1) / 2.0) * spacing  # centred on the grid
    t = (np.arange(n_out)[:, None] - pos[None, :]) / spacing
    return _cubic_bspline(t).astype(np.float64)


def smooth_field(rng: np.random.Generator, shape: tuple[int, int, int], spacing: float, n: int = 1,
                 std: float = 1.0) -> np.ndarray:
    """``n`` independent smooth Gaussian random fields of RMS ``std`` on ``shape`` (float32).

    ``spacing`` (voxels) sets the smoothness: features are about two control spacings wide.
    """
    bases = [bspline_basis(s, spacing) for s in shape]
    coarse = rng.standard_normal((n, *[b.shape[1] for b in bases]))
    # expected variance of a B-spline sum of unit normals, averaged over the grid, per axis
    var = np.prod([float((b**2).sum(1).mean()) for b in bases])
    coarse = coarse * (std / np.sqrt(var))
    t = coarse @ bases[2].T  # (n, a, b, Z)
    t = np.matmul(bases[1][None, None], t)  # (n, a, Y, Z)
    na, ny, nz = t.shape[1:]
    t = np.matmul(bases[0].astype(np.float32)[None], t.reshape(n, na, ny * nz).astype(np.float32))
    return t.reshape(n, *shape)


def rotation_matrix(angles_rad: np.ndarray) -> np.ndarray:
    """Rotation about x, then y, then z (radians)."""
    ax, ay, az = (float(a) for a in angles_rad)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def nonzero_box(volumes: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Inclusive voxel bounds (lo, hi) of the voxels where any channel of (C, X, Y, Z) is non-zero."""
    idx = np.nonzero(np.any(volumes != 0, axis=0))
    if not idx[0].size:
        return None
    return np.array([i.min() for i in idx]), np.array([i.max() for i in idx])


def sample_grid(volumes: np.ndarray, coords: np.ndarray, padding: str = "zeros",
                box: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Trilinear samples of ``volumes`` (C, X, Y, Z) at voxel positions ``coords`` (3, ...).

    Positions outside the grid read 0 (``padding="zeros"``) or the nearest edge value ("border").
    ``box`` (:func:`nonzero_box` of ``volumes``, zero padding only) skips positions whose eight
    neighbours all lie outside it: they read exactly 0, and a head-sized grid has many of them.
    Returns (C, ...) float32.
    """
    out_shape = coords.shape[1:]
    c = np.asarray(coords, dtype=np.float32).reshape(3, -1)
    if box is None or padding != "zeros":
        return _grid_sample(volumes, c, padding).reshape(volumes.shape[0], *out_shape)
    lo, hi = box
    inside = np.ones(c.shape[1], dtype=bool)
    for a in range(3):  # trilinear weights reach voxels floor(x) and floor(x) + 1
        inside &= (c[a] > lo[a] - 1) & (c[a] < hi[a] + 1)
    out = np.zeros((volumes.shape[0], c.shape[1]), dtype=np.float32)
    if inside.any():
        out[:, inside] = _grid_sample(volumes, c[:, inside], padding)
    return out.reshape(volumes.shape[0], *out_shape)


def _grid_sample(volumes: np.ndarray, c: np.ndarray, padding: str) -> np.ndarray:
    """``torch.nn.functional.grid_sample`` (trilinear, corners aligned) at voxel positions ``c`` (3, N): (C, N)."""
    vol = torch.from_numpy(np.ascontiguousarray(volumes, dtype=np.float32))[None]
    shape = vol.shape[2:]
    # grid_sample wants (x_W, y_H, z_D) normalised to [-1, 1]; our axes are (X=D, Y=H, Z=W)
    grid = np.empty((c.shape[1], 3), dtype=np.float32)
    for k, axis in enumerate((2, 1, 0)):
        n = shape[axis]
        grid[:, k] = c[axis] * (2.0 / max(n - 1, 1)) - 1.0
    g = torch.from_numpy(grid).view(1, 1, 1, -1, 3)
    with torch.no_grad():
        out = F.grid_sample(vol, g, mode="bilinear", padding_mode=padding, align_corners=True)
    return out[0, :, 0, 0].numpy()
