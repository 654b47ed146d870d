"""Batched, seeded image transforms on tensors (N, C, H, W) in [0, 1]."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["random_affine", "to_model_range", "from_model_range"]


def random_affine(
    images: torch.Tensor,
    *,
    degrees: float = 10.0,
    translate: float = 0.1,
    scale: tuple[float, float] = (0.9, 1.1),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A different random rotation/translation/scale per image (zero padding), for augmentation.

    images: (N, C, H, W); ``translate`` is a fraction of the image size.
    """
    n = images.shape[0]
    u = torch.rand(n, 4, generator=generator, device="cpu").to(images.device)
    angle = (u[:, 0] * 2 - 1) * math.radians(degrees)
    s = scale[0] + u[:, 1] * (scale[1] - scale[0])
    tx, ty = (u[:, 2] * 2 - 1) * translate * 2, (u[:, 3] * 2 - 1) * translate * 2
    cos, sin = torch.cos(angle) / s, torch.sin(angle) / s
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1], the range diffusion models and GANs work in."""
    return images * 2.0 - 1.0


def from_model_range(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)
