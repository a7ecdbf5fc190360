"""Augmentations for self-supervised pretraining, driven by an explicit ``numpy`` generator.

* :class:`MultiCrop` — DINO multi-crop of one axial slice (paper §4.2): two global crops
  (scale [0.32, 1], 256 px) and eight local crops (scale [0.05, 0.32], 112 px), random
  horizontal flips and Gaussian blur; the slice stays one channel here and is replicated to
  three channels on the device. Stage 2 first upsamples the slice (to 1024) and takes the crop
  sizes of the iteration's global/local pair.
* :class:`VolumeAugment` — BrainIAC SimCLR view of a 3D volume: random crop + resize, flips
  and an affine (rotation, scale, translation) folded into a single trilinear resampling to the
  network's input cube, then Gaussian blur and Gaussian noise.

Randomness comes only from the generator passed in, which the data pipeline seeds from the
sample's position in the global stream; results are therefore identical across worker and
process layouts, and a resumed run sees exactly the crops it would have seen.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["random_resized_crop_box", "gaussian_blur", "MultiCrop", "VolumeAugment"]


def random_resized_crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    rng: np.random.Generator,
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop covering a ``scale`` fraction of the area (torchvision's rule)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    # fallback: central crop with the aspect ratio clamped to the allowed range
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _gaussian_kernel(sigma: float, dtype: torch.dtype) -> torch.Tensor:
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(dtype)


def gaussian_blur(x: torch.Tensor, sigma: float, n_spatial: int) -> torch.Tensor:
    """Separable Gaussian blur over the last ``n_spatial`` dims (reflect padding, kernel radius 3 sigma)."""
    if sigma <= 0:
        return x
    kernel = _gaussian_kernel(sigma, x.dtype)
    radius = (kernel.numel() - 1) // 2
    out = x
    for d in range(n_spatial):
        dim = x.ndim - 1 - d
        moved = out.movedim(dim, -1)
        shape = moved.shape
        flat = moved.reshape(-1, 1, shape[-1])
        mode = "reflect" if shape[-1] > radius else "replicate"
        flat = F.pad(flat, (radius, radius), mode=mode)
        flat = F.conv1d(flat, kernel.view(1, 1, -1))
        out = flat.reshape(shape).movedim(-1, dim)
    return out


def _resize2d(img: torch.Tensor, size: int) -> torch.Tensor:
    """(C, h, w) -> (C, size, size), bicubic with antialiasing when shrinking."""
    if img.shape[-2:] == (size, size):
        return img
    shrinking = img.shape[-1] > size or img.shape[-2] > size
    return F.interpolate(img[None], size=(size, size), mode="bicubic", align_corners=False,
                         antialias=shrinking)[0]


class MultiCrop:
    """DINO multi-crop of a (C, H, W) slice: 2 global + ``n_local`` local crops."""

    def __init__(
        self,
        global_scale: tuple[float, float] = (0.32, 1.0),
        local_scale: tuple[float, float] = (0.05, 0.32),
        n_local: int = 8,
        hflip_prob: float = 0.5,
        blur_prob: tuple[float, float, float] = (1.0, 0.1, 0.5),
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        upsample_to: int | None = None,
    ):
        self.global_scale = tuple(global_scale)
        self.local_scale = tuple(local_scale)
        self.n_local = int(n_local)
        self.hflip_prob = float(hflip_prob)
        self.blur_prob = tuple(blur_prob)
        self.blur_sigma = tuple(blur_sigma)
        self.upsample_to = upsample_to

    def _crop(self, img: torch.Tensor, size: int, scale, blur_p: float, rng: np.random.Generator) -> torch.Tensor:
        top, left, h, w = random_resized_crop_box(img.shape[-2], img.shape[-1], scale, rng)
        out = _resize2d(img[:, top : top + h, left : left + w], size)
        if rng.random() < self.hflip_prob:
            out = out.flip(-1)
        do_blur = rng.random() < blur_p
        sigma = rng.uniform(*self.blur_sigma)
        if do_blur:
            out = gaussian_blur(out, sigma, 2)
        return out.contiguous()

    def __call__(
        self, img: torch.Tensor, rng: np.random.Generator, global_size: int, local_size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(global_crops (2, C, g, g), local_crops (n_local, C, l, l))``."""
        if img.ndim == 2:
            img = img[None]
        img = img.float()
        if self.upsample_to and img.shape[-1] != self.upsample_to:
            img = F.interpolate(img[None], size=(self.upsample_to, self.upsample_to), mode="bicubic",
                                align_corners=False)[0]
        g = torch.stack([
            self._crop(img, global_size, self.global_scale, self.blur_prob[0], rng),
            self._crop(img, global_size, self.global_scale, self.blur_prob[1], rng),
        ])
        if self.n_local:
            loc = torch.stack([self._crop(img, local_size, self.local_scale, self.blur_prob[2], rng)
                               for _ in range(self.n_local)])
        else:
            loc = img.new_zeros((0, img.shape[0], local_size, local_size))
        return g, loc


class VolumeAugment:
    """One SimCLR view of a (D, H, W) volume as a (1, S, S, S) tensor (BrainIAC augmentations)."""

    def __init__(
        self,
        size: int = 128,
        crop_scale: tuple[float, float] = (0.6, 1.0),
        flip_prob: float = 0.5,
        affine_prob: float = 0.5,
        rotate_deg: float = 15.0,
        scale_range: tuple[float, float] = (0.9, 1.1),
        translate_frac: float = 0.05,
        blur_prob: float = 0.5,
        blur_sigma: tuple[float, float] = (0.5, 1.5),
        noise_prob: float = 0.5,
        noise_std: float = 0.1,
    ):
        self.size = int(size)
        self.crop_scale = tuple(crop_scale)
        self.flip_prob = flip_prob
        self.affine_prob = affine_prob
        self.rotate = math.radians(rotate_deg)
        self.scale_range = tuple(scale_range)
        self.translate = translate_frac
        self.blur_prob = blur_prob
        self.blur_sigma = tuple(blur_sigma)
        self.noise_prob = noise_prob
        self.noise_std = noise_std

    @staticmethod
    def _rotation(angles: np.ndarray) -> np.ndarray:
        ax, ay, az = angles
        rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
        ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
        rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
        return rz @ ry @ rx

    def sample_matrix(self, rng: np.random.Generator) -> np.ndarray:
        """3x4 map from output to input normalised coordinates: crop, flips and affine composed."""
        frac = rng.uniform(*self.crop_scale, size=3)  # crop edge as a fraction of the volume
        centre = rng.uniform(-1.0, 1.0, size=3) * (1.0 - frac)  # the crop stays inside the volume
        flips = np.where(rng.random(3) < self.flip_prob, -1.0, 1.0)
        do_affine = rng.random() < self.affine_prob
        angles = rng.uniform(-self.rotate, self.rotate, size=3)
        zoom = rng.uniform(*self.scale_range)
        shift = rng.uniform(-2 * self.translate, 2 * self.translate, size=3)
        a = np.diag(flips)
        t = np.zeros(3)
        if do_affine:  # rotate/zoom about the centre of the view, then translate
            a = (self._rotation(angles) / zoom) @ a
            t = shift
        # input = centre + frac * (A u + t), u in [-1, 1]^3 the output grid
        mat = np.diag(frac) @ a
        off = centre + frac * t
        return np.concatenate([mat, off[:, None]], axis=1)

    def __call__(self, vol: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        vol = vol.float()
        if vol.ndim == 3:
            vol = vol[None]
        theta = torch.from_numpy(self.sample_matrix(rng)).float()
        # Edge voxels are replicated by one voxel (so an un-augmented view equals a plain trilinear
        # resize, which clamps at the border), zeros beyond (background where a rotation uncovers it).
        # The padded volume spans (n + 2) voxels: original normalised coordinates shrink by n / (n + 2).
        dims = torch.tensor(vol.shape[-3:], dtype=torch.float32)
        theta = torch.diag(dims / (dims + 2)) @ theta
        padded = F.pad(vol[None], (1, 1, 1, 1, 1, 1), mode="replicate")
        # grid_sample's coordinates are (x, y, z) = (W, H, D) order; ours are (D, H, W)
        perm = [2, 1, 0]
        theta_xyz = torch.cat([theta[perm][:, perm], theta[perm][:, 3:]], dim=1)
        s = self.size
        grid = F.affine_grid(theta_xyz[None], [1, 1, s, s, s], align_corners=False)
        out = F.grid_sample(padded, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
        do_blur = rng.random() < self.blur_prob
        sigma = rng.uniform(*self.blur_sigma)
        if do_blur:
            out = gaussian_blur(out, sigma, 3)
        do_noise = rng.random() < self.noise_prob
        seed = int(rng.integers(0, 2**63 - 1))
        if do_noise:
            gen = torch.Generator().manual_seed(seed)
            out = out + self.noise_std * torch.randn(out.shape, generator=gen)
        return out.contiguous()
