"""Shared pieces of the registration package: the result type, input checks, grayscale and windows.

Conventions (every module of the package): shifts are ``(dx, dy)`` in pixels (x = column, y = row);
a transform is a ``(N, 2, 3)`` pixel-space source-to-destination affine matrix as taken by
``kornia.geometry.transform.warp_affine`` (``align_corners=True``, pixel centres at integers);
angles are in degrees, counter-clockwise on screen, as in kornia's ``get_rotation_matrix2d``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from gradinv_lib.errors import InputError

PADDING_MODE = "reflection"
MIN_SIZE = 8


class Registration(NamedTuple):
    """Result of registering ``moving`` onto ``fixed``.

    Shape:
        warped: (N, C, H, W), ``moving`` aligned to ``fixed``.
        matrix: (N, 2, 3), pixel-space source-to-destination affine (kornia convention).
        params: (N, K), method-specific parameters: ``none`` K=0; ``translation`` (dx, dy);
            ``similarity`` (angle_deg, scale, dx, dy), with ``matrix = similarity_matrix(...)``;
            ``affine`` the 6 entries of ``matrix``.
    """

    warped: torch.Tensor
    matrix: torch.Tensor
    params: torch.Tensor


def check_images(x: torch.Tensor, name: str) -> None:
    """Raise InputError unless ``x`` is a floating (N, C, H, W) tensor with N >= 1, H, W >= 8."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name}: expected a torch.Tensor of shape (N, C, H, W), found {type(x).__name__}")
    if x.dim() != 4:
        raise InputError(f"{name}: expected a 4-d tensor (N, C, H, W), found shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InputError(f"{name}: expected a floating-point tensor, found dtype {x.dtype}")
    n, c, h, w = x.shape
    if n < 1 or c < 1 or h < MIN_SIZE or w < MIN_SIZE:
        raise InputError(
            f"{name}: expected N >= 1, C >= 1 and H, W >= {MIN_SIZE}, found shape {tuple(x.shape)}"
        )


def check_pair(moving: torch.Tensor, fixed: torch.Tensor) -> None:
    """Validate a (moving, fixed) pair: both (N, C, H, W), same shape."""
    check_images(moving, "moving")
    check_images(fixed, "fixed")
    if moving.shape != fixed.shape:
        raise InputError(
            f"moving and fixed must have the same shape (N, C, H, W), "
            f"found {tuple(moving.shape)} and {tuple(fixed.shape)}"
        )


def gray(x: torch.Tensor) -> torch.Tensor:
    """Channel mean, normalised per image to zero mean and unit variance (gain/offset invariance).

    Shape: (N, C, H, W) -> (N, H, W), float32.
    """
    g = x.detach().float().mean(dim=1)
    g = g - g.mean(dim=(-2, -1), keepdim=True)
    return g / g.std(dim=(-2, -1), keepdim=True).clamp_min(1e-8)


def hann(h: int, w: int, device: torch.device) -> torch.Tensor:
    """Separable 2-D Hann window that tapers image edges before an FFT. Shape: (H, W)."""
    wy = torch.hann_window(h, periodic=False, device=device)
    wx = torch.hann_window(w, periodic=False, device=device)
    return wy[:, None] * wx[None, :]


def center(h: int, w: int) -> tuple[float, float]:
    """Pixel-space image centre (cx, cy) with pixel centres at integers."""
    return (w - 1) / 2.0, (h - 1) / 2.0


def to3x3(m: torch.Tensor) -> torch.Tensor:
    """Append the homogeneous row. Shape: (N, 2, 3) -> (N, 3, 3)."""
    bottom = torch.zeros(m.shape[0], 1, 3, dtype=m.dtype, device=m.device)
    bottom[:, 0, 2] = 1.0
    return torch.cat([m, bottom], dim=1)


def identity_matrix(n: int, like: torch.Tensor) -> torch.Tensor:
    """``n`` identity transforms with ``like``'s dtype and device. Shape: (N, 2, 3)."""
    return torch.eye(2, 3, dtype=like.dtype, device=like.device).repeat(n, 1, 1)
