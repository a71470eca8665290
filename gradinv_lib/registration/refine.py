"""Inverse-compositional Lucas-Kanade (Gauss-Newton) refinement of parametric warps
(Baker & Matthews 2004), plus the smoothing and the NCC misfit used for model selection."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .common import center as _center
from .common import to3x3 as _to3x3

_N_PARAMS = {"translation": 2, "similarity": 4, "affine": 6}


def _steepest_descent(fix: torch.Tensor, model: str) -> torch.Tensor:
    """Template gradient times the warp Jacobian at identity, in centred coordinates.

    Shape: fix (N, H, W) -> (N, K, H*W).
    """
    n, h, w = fix.shape
    pad = F.pad(fix[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    gx = 0.5 * (pad[:, 1:-1, 2:] - pad[:, 1:-1, :-2])
    gy = 0.5 * (pad[:, 2:, 1:-1] - pad[:, :-2, 1:-1])
    cx, cy = _center(h, w)
    ys, xs = torch.meshgrid(
        torch.arange(h, device=fix.device, dtype=fix.dtype) - cy,
        torch.arange(w, device=fix.device, dtype=fix.dtype) - cx,
        indexing="ij",
    )
    if model == "translation":
        sd = [gx, gy]
    elif model == "similarity":
        sd = [gx * xs + gy * ys, -gx * ys + gy * xs, gx, gy]
    else:
        sd = [gx * xs, gx * ys, gx, gy * xs, gy * ys, gy]
    return torch.stack(sd, dim=1).reshape(n, len(sd), h * w)


def _delta_warp(dp: torch.Tensor, model: str, size: tuple[int, int]) -> torch.Tensor:
    """Pixel-space 3x3 warp of a parameter increment (centred parametrisation). Shape: (N, K) -> (N, 3, 3)."""
    n = dp.shape[0]
    wc = torch.eye(3, dtype=dp.dtype, device=dp.device).repeat(n, 1, 1)
    if model == "translation":
        wc[:, :2, 2] += dp
    elif model == "similarity":
        a, b, tx, ty = dp.unbind(dim=1)
        wc[:, 0, 0] += a
        wc[:, 0, 1] -= b
        wc[:, 1, 0] += b
        wc[:, 1, 1] += a
        wc[:, 0, 2] += tx
        wc[:, 1, 2] += ty
    else:
        wc[:, :2, :] += dp.reshape(n, 2, 3)
    cx, cy = _center(*size)
    c = torch.eye(3, dtype=dp.dtype, device=dp.device)
    c[0, 2], c[1, 2] = cx, cy
    c_inv = torch.eye(3, dtype=dp.dtype, device=dp.device)
    c_inv[0, 2], c_inv[1, 2] = -cx, -cy
    return c @ wc @ c_inv


def _pixel_grid(h: int, w: int, device: torch.device) -> torch.Tensor:
    """Homogeneous pixel coordinates (x, y, 1), row-major. Shape: (3, H*W)."""
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones(h * w, device=device)])


def _sample(img: torch.Tensor, sample_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear samples of ``img`` at ``sample_map @ (x, y, 1)`` and an in-frame mask.

    Shape: img (N, H, W); sample_map (N, 3, 3) dst -> src pixels. Returns (N, H*W) twice.
    """
    n, h, w = img.shape
    src = sample_map[:, :2].float() @ _pixel_grid(h, w, img.device)  # (N, 2, P)
    inside = (src[:, 0] >= 0) & (src[:, 0] <= w - 1) & (src[:, 1] >= 0) & (src[:, 1] <= h - 1)
    grid = torch.stack([src[:, 0] * (2.0 / (w - 1)) - 1.0, src[:, 1] * (2.0 / (h - 1)) - 1.0], dim=-1)
    out = F.grid_sample(img[:, None], grid[:, None], mode="bilinear", padding_mode="border", align_corners=True)
    return out.reshape(n, h * w), inside.to(img.dtype)


def refine(
    mov: torch.Tensor, fix: torch.Tensor, matrix: torch.Tensor, model: str, iterations: int
) -> torch.Tensor:
    """Gauss-Newton refinement of ``matrix`` minimising the masked SSD of warped ``mov`` to ``fix``.

    Inverse compositional (Baker & Matthews 2004): steepest-descent images come from the template
    ``fix`` once; every step warps ``mov``, applies the inverse Hessian (masked by the initial
    in-frame region) and composes the inverse increment. A per-image gain and bias are solved jointly at every step (and discarded),
    so brightness/contrast differences between the images do not bias the geometry.

    Shape: mov, fix (N, H, W) grayscale; matrix (N, 2, 3). Returns refined (N, 2, 3).
    """
    n, h, w = fix.shape
    sd = _steepest_descent(fix, model)  # (N, K, P)
    k = sd.shape[1]
    sd = torch.cat([sd, fix.reshape(n, 1, -1), torch.ones_like(sd[:, :1])], dim=1)  # + gain, bias
    sample_map = torch.linalg.inv(_to3x3(matrix.double()))  # dst -> src
    _, mask0 = _sample(mov, sample_map)  # the in-frame region barely moves after initialisation
    hess = ((sd * mask0[:, None]) @ sd.transpose(1, 2)).double()
    hess = hess + (1e-6 * hess.diagonal(dim1=1, dim2=2).mean(-1)[:, None, None] + 1e-9) * torch.eye(
        k + 2, dtype=torch.float64, device=fix.device
    )
    hess_inv = torch.linalg.inv(hess).float()
    for _ in range(iterations):
        # out-of-frame pixels get zero residual, so the fixed point is that of the masked SSD
        warped, mask = _sample(mov, sample_map)
        rhs = sd @ ((warped - fix.reshape(n, -1)) * mask)[..., None]
        dp = (hess_inv @ rhs)[:, :k, 0].double()
        sample_map = sample_map @ torch.linalg.inv(_delta_warp(dp, model, (h, w)))
    return torch.linalg.inv(sample_map)[:, :2].to(matrix.dtype)


def smooth(gray: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Separable Gaussian blur widening the Gauss-Newton basin. Shape: (N, H, W) -> (N, H, W)."""
    radius = max(1, int(math.ceil(2.5 * sigma)))
    t = torch.arange(-radius, radius + 1, device=gray.device, dtype=gray.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = F.pad(gray[:, None], (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    return F.conv2d(x, k.view(1, 1, -1, 1))[:, 0]


def misfit(mov: torch.Tensor, fix: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """1 - normalised cross-correlation over the in-frame pixels after warping (model selection).

    Shape: mov, fix (N, H, W); matrix (N, 2, 3). Returns (N,).
    """
    n = fix.shape[0]
    warped, mask = _sample(mov, torch.linalg.inv(_to3x3(matrix.double())))
    target = fix.reshape(n, -1)
    count = mask.sum(dim=1, keepdim=True).clamp_min(1.0)
    a = (warped - (warped * mask).sum(dim=1, keepdim=True) / count) * mask
    b = (target - (target * mask).sum(dim=1, keepdim=True) / count) * mask
    ncc = (a * b).sum(dim=1) / (a.pow(2).sum(dim=1) * b.pow(2).sum(dim=1)).sqrt().clamp_min(1e-12)
    return 1.0 - ncc
