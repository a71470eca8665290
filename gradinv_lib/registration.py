"""Fast, batched parametric image registration for GradInversion's registered group consistency.

Yin et al. (CVPR 2021), sec. 3.4, eqs. 11-12: G seeds reconstruct the same batch; the consensus is
(i) the pixel mean over seeds as a coarse target, (ii) every seed's image registered onto it with a
transform F, (iii) the mean of the registered images. The paper's F is RANSAC-flow (dense flow);
its pretrained weights are not available offline, so F here is a parametric warp:

* ``translation``: FFT phase correlation with a Gaussian-shaped peak and a log-parabola sub-pixel
  fit, refined by a few inverse-compositional Lucas-Kanade (Gauss-Newton) steps;
* ``similarity`` (rotation, uniform scale, translation): rotation and scale from phase correlation
  of log-polar Fourier magnitudes (translation-invariant), then translation by phase correlation,
  then Gauss-Newton refinement of all four parameters; per image it is kept only where it fits
  better (NCC) than the same refinement started from the translation-only estimate (so a spurious
  log-polar estimate cannot make things worse);
* ``affine``: the similarity result refined as a general 6-dof affine map.

Everything works on whole batches (no Python loop over images). Conventions:

* shifts are ``(dx, dy)`` in pixels (x = column, y = row); ``warp_translate(moving, d)`` moves the
  content of ``moving`` by ``+d``;
* a transform is a ``(N, 2, 3)`` pixel-space source-to-destination affine matrix, as taken by
  ``kornia.geometry.transform.warp_affine`` (``align_corners=True``, pixel centres at integers);
  ``warped = warp_affine(moving, matrix)`` is aligned to ``fixed``;
* rotation angles are in degrees, counter-clockwise on screen, as in kornia's ``get_rotation_matrix2d``;
* samples falling outside the image are filled by ``reflection`` padding (mirrored content is a
  closer stand-in for the unseen strip than repeated border pixels, and keeps image statistics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from kornia.geometry.transform import warp_affine as _kornia_warp_affine

from gradinv_lib.errors import InputError

__all__ = [
    "Registration",
    "phase_correlation_shift",
    "warp_affine",
    "warp_translate",
    "translation_matrix",
    "similarity_matrix",
    "estimate_rotation_scale",
    "register_none",
    "register_translation",
    "register_similarity",
    "register_affine",
    "REGISTRATIONS",
    "registered_consensus",
    "lazy_consensus",
    "ConsensusSchedule",
]

PADDING_MODE = "reflection"
_PEAK_SIGMA = 1.0  # px: width of the Gaussian the phase-correlation peak is shaped into
_MIN_SIZE = 8


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


# --------------------------------------------------------------------------------------------
# input checks and small helpers
# --------------------------------------------------------------------------------------------


def _check_images(x: torch.Tensor, name: str) -> None:
    """Raise InputError unless ``x`` is a floating (N, C, H, W) tensor with N >= 1, H, W >= 8."""
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name}: expected a torch.Tensor of shape (N, C, H, W), found {type(x).__name__}")
    if x.dim() != 4:
        raise InputError(f"{name}: expected a 4-d tensor (N, C, H, W), found shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InputError(f"{name}: expected a floating-point tensor, found dtype {x.dtype}")
    n, c, h, w = x.shape
    if n < 1 or c < 1 or h < _MIN_SIZE or w < _MIN_SIZE:
        raise InputError(
            f"{name}: expected N >= 1, C >= 1 and H, W >= {_MIN_SIZE}, found shape {tuple(x.shape)}"
        )


def _check_pair(moving: torch.Tensor, fixed: torch.Tensor) -> None:
    """Validate a (moving, fixed) pair: both (N, C, H, W), same shape."""
    _check_images(moving, "moving")
    _check_images(fixed, "fixed")
    if moving.shape != fixed.shape:
        raise InputError(
            f"moving and fixed must have the same shape (N, C, H, W), "
            f"found {tuple(moving.shape)} and {tuple(fixed.shape)}"
        )


def _gray(x: torch.Tensor) -> torch.Tensor:
    """Channel mean, normalised per image to zero mean and unit variance (gain/offset invariance).

    Shape: (N, C, H, W) -> (N, H, W), float32.
    """
    g = x.detach().float().mean(dim=1)
    g = g - g.mean(dim=(-2, -1), keepdim=True)
    return g / g.std(dim=(-2, -1), keepdim=True).clamp_min(1e-8)


def _hann(h: int, w: int, device: torch.device) -> torch.Tensor:
    """Separable 2-D Hann window that tapers image edges before an FFT. Shape: (H, W)."""
    wy = torch.hann_window(h, periodic=False, device=device)
    wx = torch.hann_window(w, periodic=False, device=device)
    return wy[:, None] * wx[None, :]


def _center(h: int, w: int) -> tuple[float, float]:
    """Pixel-space image centre (cx, cy) with pixel centres at integers."""
    return (w - 1) / 2.0, (h - 1) / 2.0


def _to3x3(m: torch.Tensor) -> torch.Tensor:
    """Append the homogeneous row. Shape: (N, 2, 3) -> (N, 3, 3)."""
    bottom = torch.zeros(m.shape[0], 1, 3, dtype=m.dtype, device=m.device)
    bottom[:, 0, 2] = 1.0
    return torch.cat([m, bottom], dim=1)


# --------------------------------------------------------------------------------------------
# phase correlation
# --------------------------------------------------------------------------------------------


def _peak_gaussian(h: int, w: int, sigma: float, device: torch.device) -> torch.Tensor:
    """Frequency response of a Gaussian of std ``sigma`` px: shapes the correlation peak. Shape: (H, W)."""
    fy = torch.fft.fftfreq(h, device=device)[:, None]
    fx = torch.fft.fftfreq(w, device=device)[None, :]
    return torch.exp(-2.0 * (math.pi * sigma) ** 2 * (fx**2 + fy**2))


def _subpixel_offset(left: torch.Tensor, mid: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Vertex of the parabola through log-values at -1, 0, +1 (exact for a Gaussian peak)."""
    eps = 1e-6 * mid.abs().clamp_min(1e-12)
    lm, l0, lp = (torch.log(v.clamp_min(0) + eps) for v in (left, mid, right))
    denom = lm - 2.0 * l0 + lp
    off = 0.5 * (lm - lp) / torch.where(denom.abs() < 1e-12, torch.full_like(denom, -1e-12), denom)
    return off.clamp(-0.5, 0.5)


def _phase_correlation(mov: torch.Tensor, fix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift d with ``fix(x) ~ mov(x - d)`` and the peak height, from 2-D arrays.

    The normalised cross-power spectrum is multiplied by a Gaussian response so the correlation
    peak is a Gaussian of std ``_PEAK_SIGMA``; a parabola through the log of the peak and its
    4-neighbours (wrap-around) then locates it to sub-pixel precision.

    Shape:
        mov, fix: (N, H, W) real. Returns shifts (N, 2) as (dx, dy) in [-W/2, W/2) x [-H/2, H/2),
        and peak (N,) in [0, 1].
    """
    n, h, w = mov.shape
    cross = torch.fft.fft2(fix) * torch.fft.fft2(mov).conj()
    cross = cross / cross.abs().clamp_min(1e-12)
    cross = cross * _peak_gaussian(h, w, _PEAK_SIGMA, mov.device)
    corr = torch.fft.ifft2(cross).real  # (N, H, W)
    flat_idx = corr.reshape(n, -1).argmax(dim=1)
    py, px = flat_idx // w, flat_idx % w
    rows = torch.arange(n, device=mov.device)
    mid = corr[rows, py, px]
    dx = _subpixel_offset(corr[rows, py, (px - 1) % w], mid, corr[rows, py, (px + 1) % w])
    dy = _subpixel_offset(corr[rows, (py - 1) % h, px], mid, corr[rows, (py + 1) % h, px])
    sx = (px.to(mov.dtype) + dx + w / 2.0) % w - w / 2.0
    sy = (py.to(mov.dtype) + dy + h / 2.0) % h - h / 2.0
    peak = mid / _peak_gaussian(h, w, _PEAK_SIGMA, mov.device).mean()
    return torch.stack([sx, sy], dim=1), peak


def phase_correlation_shift(moving: torch.Tensor, fixed: torch.Tensor, window: bool = True) -> torch.Tensor:
    """Translation that aligns ``moving`` to ``fixed`` by FFT phase correlation (Kuglin & Hines).

    Channels are combined by taking the grayscale (channel mean) of each image; a Hann window
    suppresses edge discontinuities. ``warp_translate(moving, shifts)`` approximates ``fixed``.

    Shape:
        moving, fixed: (N, C, H, W). Returns (N, 2) shifts (dx, dy) in pixels, dx in [-W/2, W/2),
        dy in [-H/2, H/2).
    """
    _check_pair(moving, fixed)
    with torch.no_grad():
        mov, fix = _gray(moving), _gray(fixed)
        if window:
            win = _hann(mov.shape[-2], mov.shape[-1], mov.device)
            mov, fix = mov * win, fix * win
        shifts, _ = _phase_correlation(mov, fix)
    return shifts


# --------------------------------------------------------------------------------------------
# warps and transform builders
# --------------------------------------------------------------------------------------------


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

    ``dst = s R(angle) (x - c) + c + shift``, with R as in kornia's ``get_rotation_matrix2d``.

    Shape:
        angle_deg, scale: (N,); shifts: (N, 2) as (dx, dy); size = (H, W). Returns (N, 2, 3).
    """
    cx, cy = _center(*size)
    rad = torch.deg2rad(angle_deg)
    a, b = scale * torch.cos(rad), scale * torch.sin(rad)
    m = torch.stack(
        [
            torch.stack([a, b, (1 - a) * cx - b * cy + shifts[:, 0]], dim=1),
            torch.stack([-b, a, b * cx + (1 - a) * cy + shifts[:, 1]], dim=1),
        ],
        dim=1,
    )
    return m


def warp_affine(images: torch.Tensor, matrices: torch.Tensor, padding_mode: str = PADDING_MODE) -> torch.Tensor:
    """Bilinear warp by pixel-space source-to-destination affines (kornia), same output size.

    Outside samples use ``reflection`` padding by default (see module docstring).

    Shape:
        images: (N, C, H, W); matrices: (N, 2, 3) or (2, 3) (broadcast). Returns (N, C, H, W).
    """
    _check_images(images, "images")
    if matrices.dim() == 2:
        matrices = matrices.expand(images.shape[0], 2, 3)
    if matrices.shape != (images.shape[0], 2, 3):
        raise InputError(
            f"matrices: expected shape ({images.shape[0]}, 2, 3) for {images.shape[0]} images, "
            f"found {tuple(matrices.shape)}"
        )
    m = matrices.to(dtype=images.dtype, device=images.device)
    return _kornia_warp_affine(images, m, images.shape[-2:], mode="bilinear", padding_mode=padding_mode,
                               align_corners=True)


def warp_translate(images: torch.Tensor, shifts: torch.Tensor, padding_mode: str = PADDING_MODE) -> torch.Tensor:
    """Move image content by ``shifts`` = (dx, dy) pixels (sub-pixel: bilinear).

    Shape: images (N, C, H, W), shifts (N, 2) or (2,). Returns (N, C, H, W).
    """
    _check_images(images, "images")
    if shifts.dim() == 1:
        shifts = shifts.expand(images.shape[0], 2)
    if shifts.shape != (images.shape[0], 2):
        raise InputError(
            f"shifts: expected shape ({images.shape[0]}, 2) as (dx, dy), found {tuple(shifts.shape)}"
        )
    return warp_affine(images, translation_matrix(shifts.to(images.dtype)), padding_mode)


# --------------------------------------------------------------------------------------------
# rotation and scale from log-polar Fourier magnitudes
# --------------------------------------------------------------------------------------------


def _highpass(h: int, w: int, device: torch.device) -> torch.Tensor:
    """Reddy-Chatterji high-pass emphasis for shifted spectra. Shape: (H, W)."""
    fy = torch.fft.fftshift(torch.fft.fftfreq(h, device=device))[:, None]
    fx = torch.fft.fftshift(torch.fft.fftfreq(w, device=device))[None, :]
    x = torch.cos(math.pi * fy) * torch.cos(math.pi * fx)
    return (1.0 - x) * (2.0 - x)


def _log_polar_spectrum(gray: torch.Tensor, n_angles: int, n_radii: int, r_min: float) -> tuple[torch.Tensor, float]:
    """Log-polar resampling of the (windowed, high-passed) Fourier magnitude.

    Angles span [0, 180) degrees (the magnitude of a real image is point-symmetric); radii are
    log-spaced from ``r_min`` to half the smaller side (in frequency bins).

    Shape: gray (N, H, W) -> (N, n_angles, n_radii), plus the log-radius step.
    """
    n, h, w = gray.shape
    win = _hann(h, w, gray.device)
    mag = torch.fft.fftshift(torch.fft.fft2(gray * win).abs(), dim=(-2, -1))
    mag = torch.log1p(mag * _highpass(h, w, gray.device))
    r_max = min(h, w) / 2.0 - 1.0
    log_step = math.log(r_max / r_min) / (n_radii - 1)
    radii = r_min * torch.exp(log_step * torch.arange(n_radii, device=gray.device, dtype=gray.dtype))
    theta = math.pi * torch.arange(n_angles, device=gray.device, dtype=gray.dtype) / n_angles
    # frequency-plane coordinates; on screen y points down, so negate sin for a CCW angle
    fx = radii[None, :] * torch.cos(theta)[:, None]
    fy = -radii[None, :] * torch.sin(theta)[:, None]
    gx = (fx + w // 2) / (w - 1) * 2 - 1  # fftshift puts DC at index w // 2
    gy = (fy + h // 2) / (h - 1) * 2 - 1
    grid = torch.stack([gx, gy], dim=-1).expand(n, n_angles, n_radii, 2)
    lp = F.grid_sample(mag[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return lp[:, 0], log_step


def estimate_rotation_scale(
    moving: torch.Tensor, fixed: torch.Tensor, n_angles: int = 180, n_radii: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation (degrees, in [-90, 90)) and scale mapping ``moving`` onto ``fixed``.

    Fourier magnitudes are translation-invariant; a rotation rotates them and a scaling by s
    shrinks them by 1/s, so in log-polar coordinates both become shifts found by phase correlation
    (Reddy & Chatterji 1996). The 180-degree ambiguity of magnitude spectra is resolved by assuming
    |angle| < 90 degrees.

    Shape: moving, fixed (N, C, H, W). Returns angle (N,), scale (N,).
    """
    _check_pair(moving, fixed)
    with torch.no_grad():
        return _rotation_scale(_gray(moving), _gray(fixed), n_angles, n_radii)


def _rotation_scale(
    mov: torch.Tensor, fix: torch.Tensor, n_angles: int = 180, n_radii: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-polar phase correlation on grayscale pairs. Shape: (N, H, W) each -> (N,), (N,)."""
    r_min = max(1.5, min(mov.shape[-2:]) / 64.0)
    lp_m, step = _log_polar_spectrum(mov, n_angles, n_radii, r_min)
    lp_f, _ = _log_polar_spectrum(fix, n_angles, n_radii, r_min)
    win = torch.hann_window(n_radii, periodic=False, device=lp_m.device)[None, :]
    lp_m = (lp_m - lp_m.mean(dim=(-2, -1), keepdim=True)) * win
    lp_f = (lp_f - lp_f.mean(dim=(-2, -1), keepdim=True)) * win
    shift, _ = _phase_correlation(lp_m, lp_f)  # (d_logr, d_theta) in samples
    angle = shift[:, 1] * (180.0 / n_angles)
    scale = torch.exp(-shift[:, 0] * step)
    return angle, scale


# --------------------------------------------------------------------------------------------
# inverse-compositional Lucas-Kanade refinement (Baker & Matthews 2004)
# --------------------------------------------------------------------------------------------

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


def _refine(
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


def _smooth(gray: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Separable Gaussian blur widening the Gauss-Newton basin. Shape: (N, H, W) -> (N, H, W)."""
    radius = max(1, int(math.ceil(2.5 * sigma)))
    t = torch.arange(-radius, radius + 1, device=gray.device, dtype=gray.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = F.pad(gray[:, None], (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    return F.conv2d(x, k.view(1, 1, -1, 1))[:, 0]


def _misfit(mov: torch.Tensor, fix: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
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


# --------------------------------------------------------------------------------------------
# public registrations
# --------------------------------------------------------------------------------------------


MAX_WORKING_SIZE = 128  # px: transforms are estimated on images binned down to at most this side


def _prepare(moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Validate a pair and make smoothed, normalised float32 grayscale, binned by an integer factor
    so the longer side is at most ``MAX_WORKING_SIZE`` (speed at 224 px).

    Shape: (N, C, H, W) each -> (N, H/f, W/f) each, and the factor f.
    """
    _check_pair(moving, fixed)
    factor = max(1, math.ceil(max(moving.shape[-2:]) / MAX_WORKING_SIZE))

    def work(x: torch.Tensor) -> torch.Tensor:
        g = x.detach().float().mean(dim=1, keepdim=True)
        if factor > 1:
            g = F.avg_pool2d(g, factor, factor)
        return _smooth(_gray(g))

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
    win = _hann(mov.shape[-2], mov.shape[-1], mov.device)
    shifts, _ = _phase_correlation(mov * win, fix * win)
    return _refine(mov, fix, translation_matrix(shifts), "translation", iterations)


def register_none(moving: torch.Tensor, fixed: torch.Tensor) -> Registration:
    """Identity registration (the lazy consensus / unregistered PSNR). Shape: (N, C, H, W) each."""
    _check_pair(moving, fixed)
    n = moving.shape[0]
    eye = torch.eye(2, 3, dtype=moving.dtype, device=moving.device).repeat(n, 1, 1)
    return Registration(moving, eye, moving.new_zeros(n, 0))


def register_translation(moving: torch.Tensor, fixed: torch.Tensor, iterations: int = 5) -> Registration:
    """Translation by phase correlation, refined by ``iterations`` Gauss-Newton steps.

    Shape: moving, fixed (N, C, H, W). ``params`` (N, 2) = (dx, dy).
    """
    with torch.no_grad():
        mov, fix, factor = _prepare(moving, fixed)
        matrix = _upscale_matrix(_translation_estimate(mov, fix, iterations), factor)
        warped = warp_affine(moving, matrix)
    return Registration(warped, matrix.to(moving.dtype), matrix[:, :, 2].to(moving.dtype))


def _similarity_params(matrix: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Decompose a similarity matrix into (angle_deg, scale, dx, dy). Shape: (N, 2, 3) -> (N, 4)."""
    a = 0.5 * (matrix[:, 0, 0] + matrix[:, 1, 1])
    b = 0.5 * (matrix[:, 0, 1] - matrix[:, 1, 0])
    angle = torch.rad2deg(torch.atan2(b, a))
    scale = torch.sqrt(a**2 + b**2)
    cx, cy = _center(*size)
    dx = matrix[:, 0, 2] - ((1 - a) * cx - b * cy)
    dy = matrix[:, 1, 2] - (b * cx + (1 - a) * cy)
    return torch.stack([angle, scale, dx, dy], dim=1)


def _similarity_estimate(mov: torch.Tensor, fix: torch.Tensor, iterations: int) -> torch.Tensor:
    """Log-polar rotation/scale, then phase-correlation translation, then Gauss-Newton; per image,
    kept only if it beats Gauss-Newton started from the plain translation estimate.

    Shape: (N, H, W) each -> (N, 2, 3).
    """
    n, h, w = mov.shape
    angle, scale = _rotation_scale(mov, fix)
    rs = similarity_matrix(angle, scale, torch.zeros(n, 2, device=mov.device), (h, w))
    rotated = _kornia_warp_affine(mov[:, None], rs, (h, w), padding_mode="border", align_corners=True)[:, 0]
    win = _hann(h, w, mov.device)
    shifts, _ = _phase_correlation(rotated * win, fix * win)
    init_rs = _to3x3(translation_matrix(shifts)) @ _to3x3(rs)
    init_t = translation_matrix(_phase_correlation(mov * win, fix * win)[0])
    both = _refine(
        torch.cat([mov, mov]), torch.cat([fix, fix]), torch.cat([init_rs[:, :2], init_t]), "similarity", iterations
    )
    cand_rs, cand_t = both[:n], both[n:]
    better = _misfit(mov, fix, cand_rs) < _misfit(mov, fix, cand_t)
    return torch.where(better[:, None, None], cand_rs, cand_t)


def register_similarity(moving: torch.Tensor, fixed: torch.Tensor, iterations: int = 6) -> Registration:
    """Rotation, uniform scale and translation (log-polar phase correlation + Gauss-Newton).

    Shape: moving, fixed (N, C, H, W). ``params`` (N, 4) = (angle_deg, scale, dx, dy) with
    ``matrix == similarity_matrix(angle, scale, (dx, dy), (H, W))``.
    """
    with torch.no_grad():
        mov, fix, factor = _prepare(moving, fixed)
        matrix = _upscale_matrix(_similarity_estimate(mov, fix, iterations), factor)
        warped = warp_affine(moving, matrix)
        params = _similarity_params(matrix, tuple(moving.shape[-2:]))
    return Registration(warped, matrix.to(moving.dtype), params.to(moving.dtype))


def register_affine(moving: torch.Tensor, fixed: torch.Tensor, iterations: int = 6) -> Registration:
    """General 6-dof affine: the similarity estimate refined by affine Gauss-Newton steps.

    Shape: moving, fixed (N, C, H, W). ``params`` (N, 6) = flattened ``matrix``.
    """
    with torch.no_grad():
        mov, fix, factor = _prepare(moving, fixed)
        init = _similarity_estimate(mov, fix, iterations)
        matrix = _refine(mov, fix, init, "affine", max(1, iterations // 2))
        keep = _misfit(mov, fix, matrix) > _misfit(mov, fix, init)
        matrix = _upscale_matrix(torch.where(keep[:, None, None], init, matrix), factor)
        warped = warp_affine(moving, matrix)
    return Registration(warped, matrix.to(moving.dtype), matrix.reshape(-1, 6).to(moving.dtype))


REGISTRATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], Registration]] = {
    "none": register_none,
    "translation": register_translation,
    "similarity": register_similarity,
    "affine": register_affine,
}


# --------------------------------------------------------------------------------------------
# group consistency (eqs. 11-12)
# --------------------------------------------------------------------------------------------


def _check_group(seed_images: torch.Tensor) -> None:
    """Raise InputError unless ``seed_images`` is a floating (G, B, C, H, W) tensor."""
    if not isinstance(seed_images, torch.Tensor) or seed_images.dim() != 5:
        found = tuple(seed_images.shape) if isinstance(seed_images, torch.Tensor) else type(seed_images).__name__
        raise InputError(f"seed_images: expected a 5-d tensor (G seeds, B images, C, H, W), found {found}")
    if not seed_images.is_floating_point() or seed_images.shape[0] < 1 or seed_images.shape[1] < 1:
        raise InputError(
            f"seed_images: expected floating (G>=1, B>=1, C, H, W), found {tuple(seed_images.shape)} {seed_images.dtype}"
        )


def lazy_consensus(seed_images: torch.Tensor) -> torch.Tensor:
    """Lazy consensus E(x^_g): pixel mean over seeds (sec. 3.4), detached.

    Shape: (G, B, C, H, W) -> (B, C, H, W).
    """
    _check_group(seed_images)
    return seed_images.detach().mean(dim=0)


def registered_consensus(
    seed_images: torch.Tensor, method: str = "translation", coarse: torch.Tensor | None = None
) -> torch.Tensor:
    """Registered consensus (sec. 3.4, eqs. 11-12), detached.

    (i) coarse target = mean over seeds (or ``coarse``); (ii) every seed's image is registered
    onto the coarse target of its batch index with ``REGISTRATIONS[method]`` in one batched call
    over G*B pairs; (iii) the registered images are averaged over seeds.

    Shape: seed_images (G, B, C, H, W); coarse (B, C, H, W) or None. Returns (B, C, H, W).
    """
    _check_group(seed_images)
    if method not in REGISTRATIONS:
        raise InputError(f"method: expected one of {sorted(REGISTRATIONS)}, found {method!r}")
    g, b, c, h, w = seed_images.shape
    with torch.no_grad():
        x = seed_images.detach()
        if coarse is None:
            coarse = x.mean(dim=0)
        elif tuple(coarse.shape) != (b, c, h, w):
            raise InputError(f"coarse: expected shape {(b, c, h, w)}, found {tuple(coarse.shape)}")
        target = coarse.detach().to(x.dtype).expand(g, b, c, h, w).reshape(g * b, c, h, w)
        warped = REGISTRATIONS[method](x.reshape(g * b, c, h, w), target).warped
        return warped.reshape(g, b, c, h, w).mean(dim=0)


@dataclass(frozen=True)
class ConsensusSchedule:
    """When to re-register the group consensus (sec. 3.4: after 5K of 20K iterations, then every 100).

    ``should_register(t, total)`` is true at the first iteration >= ``start_fraction * total`` and
    every ``every`` iterations after it; iterations are 0-based.
    """

    start_fraction: float = 0.25
    every: int = 100

    def __post_init__(self) -> None:
        if not 0.0 <= self.start_fraction <= 1.0:
            raise InputError(f"start_fraction: expected a value in [0, 1], found {self.start_fraction}")
        if int(self.every) != self.every or self.every < 1:
            raise InputError(f"every: expected a positive integer, found {self.every}")

    def start(self, total: int) -> int:
        """First iteration at which registration runs."""
        return int(math.ceil(self.start_fraction * total))

    def should_register(self, t: int, total: int) -> bool:
        """Whether iteration ``t`` (0-based) of ``total`` re-registers the consensus."""
        if total < 1 or t < 0:
            raise InputError(f"expected t >= 0 and total >= 1, found t={t}, total={total}")
        start = self.start(total)
        return t >= start and (t - start) % self.every == 0
