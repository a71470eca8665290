"""Transform builders and warps (kornia's pixel-space affine convention, see ``common``)."""

from __future__ import annotations

import torch
from kornia.geometry.transform import get_rotation_matrix2d
from kornia.geometry.transform import warp_affine as _kornia_warp_affine

from gradinv_lib.errors import InputError

from .common import PADDING_MODE, center, check_images


def translation_matrix(shifts: torch.Tensor) -> torch.Tensor:
    """Pixel-space affine matrices of pure translations. Shape: (N, 2) -> (N, 2, 3)."""
    m = torch.zeros(shifts.shape[0], 2, 3, dtype=shifts.dtype, device=shifts.device)
    m[:, 0, 0] = 1.0
    m[:, 1, 1] = 1.0
    m[:, :, 2] = shifts
    return m


def similarity_matrix(
    angle_deg: torch.Tensor, scale: torch.Tensor, shifts: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """Rotation by ``angle_deg`` and scaling by ``scale`` about the image centre, then a shift.

    ``dst = s R(angle) (x - c) + c + shift``, R from kornia's ``get_rotation_matrix2d``.

    Shape:
        angle_deg, scale: (N,); shifts: (N, 2) as (dx, dy); size = (H, W). Returns (N, 2, 3).
    """
    n = angle_deg.shape[0]
    c = torch.tensor(center(*size), dtype=angle_deg.dtype, device=angle_deg.device).expand(n, 2)
    m = get_rotation_matrix2d(c, angle_deg, scale[:, None].expand(n, 2))
    return torch.cat([m[:, :, :2], m[:, :, 2:] + shifts[:, :, None]], dim=2)


def similarity_params(matrix: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(angle_deg, scale, dx, dy) of the similarity closest to ``matrix``; (dx, dy) is how far the
    image centre moves. Exact inverse of :func:`similarity_matrix`. Shape: (N, 2, 3) -> (N, 4)."""
    a = 0.5 * (matrix[:, 0, 0] + matrix[:, 1, 1])
    b = 0.5 * (matrix[:, 0, 1] - matrix[:, 1, 0])
    angle = torch.rad2deg(torch.atan2(b, a))
    scale = torch.sqrt(a**2 + b**2)
    cx, cy = center(*size)
    dx = matrix[:, 0, 0] * cx + matrix[:, 0, 1] * cy + matrix[:, 0, 2] - cx
    dy = matrix[:, 1, 0] * cx + matrix[:, 1, 1] * cy + matrix[:, 1, 2] - cy
    return torch.stack([angle, scale, dx, dy], dim=1)


def warp_affine(images: torch.Tensor, matrices: torch.Tensor, padding_mode: str = PADDING_MODE,
                mode: str = "bilinear") -> torch.Tensor:
    """Warp by pixel-space source-to-destination affines (kornia), same output size.

    Outside samples use ``reflection`` padding by default: mirrored content is a closer stand-in
    for the unseen strip than repeated border pixels, and keeps image statistics.

    Shape:
        images: (N, C, H, W); matrices: (N, 2, 3) or (2, 3) (broadcast). Returns (N, C, H, W).
    """
    check_images(images, "images")
    if matrices.dim() == 2:
        matrices = matrices.expand(images.shape[0], 2, 3)
    if matrices.shape != (images.shape[0], 2, 3):
        raise InputError(
            f"matrices: expected shape ({images.shape[0]}, 2, 3) for {images.shape[0]} images, "
            f"found {tuple(matrices.shape)}"
        )
    m = matrices.to(dtype=images.dtype, device=images.device)
    return _kornia_warp_affine(images, m, images.shape[-2:], mode=mode, padding_mode=padding_mode,
                               align_corners=True)


def warp_translate(images: torch.Tensor, shifts: torch.Tensor, padding_mode: str = PADDING_MODE) -> torch.Tensor:
    """Move image content by ``shifts`` = (dx, dy) pixels (sub-pixel: bilinear).

    Shape: images (N, C, H, W), shifts (N, 2) or (2,). Returns (N, C, H, W).
    """
    check_images(images, "images")
    if shifts.dim() == 1:
        shifts = shifts.expand(images.shape[0], 2)
    if shifts.shape != (images.shape[0], 2):
        raise InputError(
            f"shifts: expected shape ({images.shape[0]}, 2) as (dx, dy), found {tuple(shifts.shape)}"
        )
    return warp_affine(images, translation_matrix(shifts.to(images.dtype)), padding_mode)
