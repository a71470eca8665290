"""Rotation and scale from log-polar Fourier magnitudes (Reddy & Chatterji 1996)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .common import check_pair, gray, hann
from .translation import phase_correlation


def _highpass(h: int, w: int, device: torch.device) -> torch.Tensor:
    """Reddy-Chatterji high-pass emphasis for shifted spectra. Shape: (H, W)."""
    fy = torch.fft.fftshift(torch.fft.fftfreq(h, device=device))[:, None]
    fx = torch.fft.fftshift(torch.fft.fftfreq(w, device=device))[None, :]
    x = torch.cos(math.pi * fy) * torch.cos(math.pi * fx)
    return (1.0 - x) * (2.0 - x)


def _log_polar_spectrum(img: torch.Tensor, n_angles: int, n_radii: int, r_min: float) -> tuple[torch.Tensor, float]:
    """Log-polar resampling of the (windowed, high-passed) Fourier magnitude.

    Angles span [0, 180) degrees (the magnitude of a real image is point-symmetric); radii are
    log-spaced from ``r_min`` to half the smaller side (in frequency bins).

    Shape: img (N, H, W) -> (N, n_angles, n_radii), plus the log-radius step.
    """
    n, h, w = img.shape
    mag = torch.fft.fftshift(torch.fft.fft2(img * hann(h, w, img.device)).abs(), dim=(-2, -1))
    mag = torch.log1p(mag * _highpass(h, w, img.device))
    r_max = min(h, w) / 2.0 - 1.0
    log_step = math.log(r_max / r_min) / (n_radii - 1)
    radii = r_min * torch.exp(log_step * torch.arange(n_radii, device=img.device, dtype=img.dtype))
    theta = math.pi * torch.arange(n_angles, device=img.device, dtype=img.dtype) / n_angles
    # frequency-plane coordinates; on screen y points down, so negate sin for a CCW angle
    fx = radii[None, :] * torch.cos(theta)[:, None]
    fy = -radii[None, :] * torch.sin(theta)[:, None]
    gx = (fx + w // 2) / (w - 1) * 2 - 1  # fftshift puts DC at index w // 2
    gy = (fy + h // 2) / (h - 1) * 2 - 1
    grid = torch.stack([gx, gy], dim=-1).expand(n, n_angles, n_radii, 2)
    lp = F.grid_sample(mag[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return lp[:, 0], log_step


def rotation_scale(
    mov: torch.Tensor, fix: torch.Tensor, n_angles: int = 180, n_radii: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-polar phase correlation on grayscale pairs. Shape: (N, H, W) each -> (N,), (N,)."""
    r_min = max(1.5, min(mov.shape[-2:]) / 64.0)
    lp_m, step = _log_polar_spectrum(mov, n_angles, n_radii, r_min)
    lp_f, _ = _log_polar_spectrum(fix, n_angles, n_radii, r_min)
    win = torch.hann_window(n_radii, periodic=False, device=lp_m.device)[None, :]
    lp_m = (lp_m - lp_m.mean(dim=(-2, -1), keepdim=True)) * win
    lp_f = (lp_f - lp_f.mean(dim=(-2, -1), keepdim=True)) * win
    shift, _ = phase_correlation(lp_m, lp_f)  # (d_logr, d_theta) in samples
    angle = shift[:, 1] * (180.0 / n_angles)
    scale = torch.exp(-shift[:, 0] * step)
    return angle, scale


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
    check_pair(moving, fixed)
    with torch.no_grad():
        return rotation_scale(gray(moving), gray(fixed), n_angles, n_radii)
