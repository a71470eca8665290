"""Batched parametric registrations: none, translation, similarity, affine (``REGISTRATIONS``).

The paper's F (sec. 3.4) is RANSAC-flow, whose weights are not available offline; F here is a
parametric warp estimated on whole batches (no Python loop over images):

* ``translation``: FFT phase correlation, refined by inverse-compositional Gauss-Newton steps;
* ``similarity``: log-polar rotation/scale, then phase-correlation translation, then Gauss-Newton
  on all four parameters; per image kept only where it fits better (NCC) than the same refinement
  started from the translation-only estimate;
* ``affine``: the similarity result refined as a general 6-dof map.

These are UNBOUNDED: right for the group consensus, not for scoring (see ``bounded``).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from kornia.geometry.transform import warp_affine as _kornia_warp_affine

from .common import Registration, check_pair, gray, identity_matrix, to3x3
from .logpolar import rotation_scale
from .refine import misfit, refine, smooth
from .translation import windowed_phase_correlation
from .warps import similarity_matrix, similarity_params, translation_matrix, warp_affine

MAX_WORKING_SIZE = 128  # px: transforms are estimated on images binned down to at most this side


def _prepare(moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Validate a pair and make smoothed, normalised float32 grayscale, binned by an integer factor
    so the longer side is at most ``MAX_WORKING_SIZE`` (speed at 224 px).

    Shape: (N, C, H, W) each -> (N, H/f, W/f) each, and the factor f.
    """
    check_pair(moving, fixed)
    factor = max(1, math.ceil(max(moving.shape[-2:]) / MAX_WORKING_SIZE))

    def work(x: torch.Tensor) -> torch.Tensor:
        g = x.detach().float().mean(dim=1, keepdim=True)
        if factor > 1:
            g = F.avg_pool2d(g, factor, factor)
        return smooth(gray(g))

    return work(moving), work(fixed), factor


def _upscale_matrix(matrix: torch.Tensor, factor: int) -> torch.Tensor:
    """Express a transform of binned images in full-resolution pixels.

    Binned pixel x maps to full-resolution f*x + (f-1)/2, so M_full = A M A^-1. Shape: (N, 2, 3).
    """
    if factor == 1:
        return matrix
    out = matrix.clone()
    off = (factor - 1) / 2.0
    lin = matrix[:, :, :2]
    out[:, :, 2] = factor * matrix[:, :, 2] + off - off * lin.sum(dim=2)
    return out


def _translation_estimate(mov: torch.Tensor, fix: torch.Tensor, iterations: int) -> torch.Tensor:
    """Phase correlation then translation-only Gauss-Newton. Shape: (N, H, W) -> (N, 2, 3)."""
    shifts = windowed_phase_correlation(mov, fix)
    return refine(mov, fix, translation_matrix(shifts), "translation", iterations)


def _similarity_estimate(mov: torch.Tensor, fix: torch.Tensor, iterations: int) -> torch.Tensor:
    """Log-polar rotation/scale, then phase-correlation translation, then Gauss-Newton; per image,
    kept only if it beats Gauss-Newton started from the plain translation estimate.

    Shape: (N, H, W) each -> (N, 2, 3).
    """
    n, h, w = mov.shape
    angle, scale = rotation_scale(mov, fix)
    rs = similarity_matrix(angle, scale, torch.zeros(n, 2, device=mov.device), (h, w))
    rotated = _kornia_warp_affine(mov[:, None], rs, (h, w), padding_mode="border", align_corners=True)[:, 0]
    init_rs = to3x3(translation_matrix(windowed_phase_correlation(rotated, fix))) @ to3x3(rs)
    init_t = translation_matrix(windowed_phase_correlation(mov, fix))
    both = refine(
        torch.cat([mov, mov]), torch.cat([fix, fix]), torch.cat([init_rs[:, :2], init_t]), "similarity", iterations
    )
    cand_rs, cand_t = both[:n], both[n:]
    better = misfit(mov, fix, cand_rs) < misfit(mov, fix, cand_t)
    return torch.where(better[:, None, None], cand_rs, cand_t)


def register_none(moving: torch.Tensor, fixed: torch.Tensor) -> Registration:
    """Identity registration (the lazy consensus / unregistered PSNR). Shape: (N, C, H, W) each."""
    check_pair(moving, fixed)
    n = moving.shape[0]
    return Registration(moving, identity_matrix(n, moving), moving.new_zeros(n, 0))


def register_translation(moving: torch.Tensor, fixed: torch.Tensor, iterations: int = 5) -> Registration:
    """Translation by phase correlation, refined by ``iterations`` Gauss-Newton steps.

    Shape: moving, fixed (N, C, H, W). ``params`` (N, 2) = (dx, dy).
    """
    with torch.no_grad():
        mov, fix, factor = _prepare(moving, fixed)
        matrix = _upscale_matrix(_translation_estimate(mov, fix, iterations), factor)
        warped = warp_affine(moving, matrix)
    return Registration(warped, matrix.to(moving.dtype), matrix[:, :, 2].to(moving.dtype))


def register_similarity(moving: torch.Tensor, fixed: torch.Tensor, iterations: int = 6) -> Registration:
    """Rotation, uniform scale and translation (log-polar phase correlation + Gauss-Newton).

    Shape: moving, fixed (N, C, H, W). ``params`` (N, 4) = (angle_deg, scale, dx, dy) with
    ``matrix == similarity_matrix(angle, scale, (dx, dy), (H, W))``.
    """
    with torch.no_grad():
        mov, fix, factor = _prepare(moving, fixed)
        matrix = _upscale_matrix(_similarity_estimate(mov, fix, iterations), factor)
        warped = warp_affine(moving, matrix)
        params = similarity_params(matrix, tuple(moving.shape[-2:]))
    return Registration(warped, matrix.to(moving.dtype), params.to(moving.dtype))


def register_affine(moving: torch.Tensor, fixed: torch.Tensor, iterations: int = 6) -> Registration:
    """General 6-dof affine: the similarity estimate refined by affine Gauss-Newton steps.

    Shape: moving, fixed (N, C, H, W). ``params`` (N, 6) = flattened ``matrix``.
    """
    with torch.no_grad():
        mov, fix, factor = _prepare(moving, fixed)
        init = _similarity_estimate(mov, fix, iterations)
        matrix = refine(mov, fix, init, "affine", max(1, iterations // 2))
        keep = misfit(mov, fix, matrix) > misfit(mov, fix, init)
        matrix = _upscale_matrix(torch.where(keep[:, None, None], init, matrix), factor)
        warped = warp_affine(moving, matrix)
    return Registration(warped, matrix.to(moving.dtype), matrix.reshape(-1, 6).to(moving.dtype))


REGISTRATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], Registration]] = {
    "none": register_none,
    "translation": register_translation,
    "similarity": register_similarity,
    "affine": register_affine,
}
