"""Translation by FFT phase correlation (Kuglin & Hines 1975) with a sub-pixel peak fit."""

from __future__ import annotations

import math

import torch

from .common import check_pair, gray, hann

PEAK_SIGMA = 1.0  # px: width of the Gaussian the phase-correlation peak is shaped into


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


def phase_correlation(mov: torch.Tensor, fix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift d with ``fix(x) ~ mov(x - d)`` and the peak height, from 2-D arrays.

    The normalised cross-power spectrum is multiplied by a Gaussian response so the correlation
    peak is a Gaussian of std ``PEAK_SIGMA``; a parabola through the log of the peak and its
    4-neighbours (wrap-around) then locates it to sub-pixel precision.

    Shape:
        mov, fix: (N, H, W) real. Returns shifts (N, 2) as (dx, dy) in [-W/2, W/2) x [-H/2, H/2),
        and peak (N,) in [0, 1].
    """
    n, h, w = mov.shape
    cross = torch.fft.fft2(fix) * torch.fft.fft2(mov).conj()
    cross = cross / cross.abs().clamp_min(1e-12)
    cross = cross * _peak_gaussian(h, w, PEAK_SIGMA, mov.device)
    corr = torch.fft.ifft2(cross).real  # (N, H, W)
    flat_idx = corr.reshape(n, -1).argmax(dim=1)
    py, px = flat_idx // w, flat_idx % w
    rows = torch.arange(n, device=mov.device)
    mid = corr[rows, py, px]
    dx = _subpixel_offset(corr[rows, py, (px - 1) % w], mid, corr[rows, py, (px + 1) % w])
    dy = _subpixel_offset(corr[rows, (py - 1) % h, px], mid, corr[rows, (py + 1) % h, px])
    sx = (px.to(mov.dtype) + dx + w / 2.0) % w - w / 2.0
    sy = (py.to(mov.dtype) + dy + h / 2.0) % h - h / 2.0
    peak = mid / _peak_gaussian(h, w, PEAK_SIGMA, mov.device).mean()
    return torch.stack([sx, sy], dim=1), peak


def windowed_phase_correlation(mov: torch.Tensor, fix: torch.Tensor) -> torch.Tensor:
    """:func:`phase_correlation` of Hann-windowed 2-D arrays. Shape: (N, H, W) each -> (N, 2)."""
    win = hann(mov.shape[-2], mov.shape[-1], mov.device)
    return phase_correlation(mov * win, fix * win)[0]


def phase_correlation_shift(moving: torch.Tensor, fixed: torch.Tensor, window: bool = True) -> torch.Tensor:
    """Translation that aligns ``moving`` to ``fixed`` by FFT phase correlation (Kuglin & Hines).

    Channels are combined by taking the grayscale (channel mean) of each image; a Hann window
    suppresses edge discontinuities. ``warp_translate(moving, shifts)`` approximates ``fixed``.

    Shape:
        moving, fixed: (N, C, H, W). Returns (N, 2) shifts (dx, dy) in pixels, dx in [-W/2, W/2),
        dy in [-H/2, H/2).
    """
    check_pair(moving, fixed)
    with torch.no_grad():
        mov, fix = gray(moving), gray(fixed)
        if window:
            return windowed_phase_correlation(mov, fix)
        return phase_correlation(mov, fix)[0]
