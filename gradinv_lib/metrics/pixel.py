"""Pixel metrics of the paper (sec. 4, Tables 2-4): FFT-2D, PSNR, PSNR after registration, SSIM.

All take PAIRED batches in pixel space [0, 1], shape (N, C, H, W): reconstruction i is compared
with original i, and return one value per image, shape (N,).
"""

from __future__ import annotations

from typing import Callable

import kornia
import torch
from torch import Tensor

from gradinv_lib.errors import InputError
from gradinv_lib.registration import DEFAULT_BOUNDS, WarpBounds, register_original_onto

PSNR_CAP_DB = 100.0  # PSNR reported for identical images (MSE 0), instead of inf
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RegistrationFn = Callable[[Tensor, Tensor], object]  # (moving, fixed) -> registration.Registration
Registration = RegistrationFn  # the old name of this alias


def check_pair(recon: Tensor, orig: Tensor) -> None:
    """Raise InputError unless both are (N, C, H, W) tensors of one shape."""
    if recon.dim() != 4 or recon.shape != orig.shape:
        raise InputError(f"expected reconstructions and originals of the same shape (N, C, H, W), "
                         f"found {tuple(recon.shape)} and {tuple(orig.shape)}")


def imagenet_normalize(images01: Tensor) -> Tensor:
    """``(x - mean) / std`` per channel with ImageNet's mean and std. Shape: (N, 3, H, W)."""
    mean = images01.new_tensor(IMAGENET_MEAN)[:, None, None]
    std = images01.new_tensor(IMAGENET_STD)[:, None, None]
    return (images01 - mean) / std


def _flat(x: Tensor) -> Tensor:
    """Whether every channel of an image is exactly constant. Shape: (N, C, H, W) -> (N,) bool."""
    v = x.flatten(2)
    return (v.amax(dim=2) == v.amin(dim=2)).all(dim=1)


def fft2d_distance(recon: Tensor, orig: Tensor) -> Tensor:
    """FFT-2D (Tables 2-4): cosine distance between 2-D Fourier magnitude spectra, per image.

    OUR READING of the paper's one-line definition. Computed: both images are normalised with
    ImageNet's mean/std, ``(x - (0.485, 0.456, 0.406)) / (0.229, 0.224, 0.225)`` per channel
    (3-channel images; other channel counts are used as they are); ``|FFT2(x_c)|`` is taken per
    channel (no shift, no log) with the DC term set to 0; the C spectra are concatenated into one
    vector of C*H*W magnitudes; the distance is ``1 - cos(recon, orig)``, in [0, 1].

    Dropping DC makes the metric blind to each channel's mean colour. With DC kept, a flat grey
    (0.58) or flat mean-colour image (0.46) scored better than the attack's noise start (0.66)
    on 32 px pool batches; without it a flat image has an all-zero spectrum and scores 1 (0 if
    the original is flat too), and the noise start scores 0.58 at 32 px, 0.64 at 64 px and
    0.75 at 224 px (paper's noise row: 0.706). Blind to phase: a circular shift, or ``-x`` of a
    zero-mean image, scores 0; blind to a brightness scale.

    Shape: recon, orig (N, C, H, W) -> (N,).
    """
    check_pair(recon, orig)

    def spectrum(x: Tensor) -> Tensor:
        x = x.double()
        if x.shape[1] == 3:
            x = imagenet_normalize(x)
        mag = torch.fft.fft2(x).abs()
        mag[..., 0, 0] = 0.0
        return mag.flatten(1)

    cos = torch.nn.functional.cosine_similarity(spectrum(recon), spectrum(orig), dim=1, eps=1e-12)
    dist = (1.0 - cos).clamp(0.0, 1.0)  # a flat image: zero spectrum, cos 0, distance 1
    both_flat = _flat(recon) & _flat(orig)  # nothing to tell apart
    return torch.where(both_flat, torch.zeros_like(dist), dist).to(recon.dtype)


def psnr(recon: Tensor, orig: Tensor) -> Tensor:
    """PSNR in dB per image, data range 1: ``10 log10(1 / MSE)`` with MSE over C, H, W.

    Identical images (MSE 0) get ``PSNR_CAP_DB`` = 100 dB, and no value exceeds it, so means stay
    finite.
    """
    check_pair(recon, orig)
    mse = (recon.double() - orig.double()).pow(2).flatten(1).mean(dim=1)
    floor = 10.0 ** (-PSNR_CAP_DB / 10.0)
    return (10.0 * torch.log10(1.0 / mse.clamp_min(floor))).to(recon.dtype)


def registered_psnr(recon: Tensor, orig: Tensor, registration: RegistrationFn | None = None,
                    bounds: WarpBounds = DEFAULT_BOUNDS, keep_identity: bool = True) -> Tensor:
    """PSNR after registration (Tables 2-4), bounded and in the inverse direction.

    For every i, ``registration`` (an entry of ``registration.REGISTRATIONS``; default
    similarity) estimates the warp of ``orig[i]`` onto ``recon[i]`` (never onto other images of
    the batch); an estimate outside ``bounds`` (shift <= 1/8 side, rotation <= 15 deg, scale in
    [0.8, 1.25]) or below 0.5 px is replaced by the identity; the ORIGINAL is warped (bicubic,
    reflection-padded borders, so the full frame is scored as in plain PSNR) and the score is
    ``PSNR(recon, warped original)``: the reconstruction is never resampled, so interpolation
    cannot smooth its noise. See ``registration.bounded``.

    ``keep_identity``: score the better of registered and unwarped, so a misled in-bounds fit
    never lowers an image's score. Measured on 32/64 px pool batches: this max adds at most
    ~0.015 dB on average to noise starts, while without it aligned noisy reconstructions lose up
    to 0.8 dB on single images; so it stays.

    Shape: recon, orig (N, C, H, W) -> (N,).
    """
    check_pair(recon, orig)
    warped = register_original_onto(recon, orig, registration, bounds).warped
    out = psnr(recon, warped)
    return torch.maximum(out, psnr(recon, orig)) if keep_identity else out


def ssim(recon: Tensor, orig: Tensor) -> Tensor:
    """SSIM per image (Wang et al. 2004): Gaussian window 11, sigma 1.5, data range 1,
    K1 = 0.01, K2 = 0.03, averaged over the 'valid' window positions and the channels
    (as scikit-image with ``gaussian_weights=True, use_sample_covariance=False``)."""
    check_pair(recon, orig)
    if min(recon.shape[-2:]) < 11:
        raise InputError(f"ssim: expected images of at least 11x11 pixels, found {tuple(recon.shape[-2:])}")
    m = kornia.metrics.ssim(recon.double(), orig.double(), window_size=11, max_val=1.0, padding="valid")
    return m.flatten(1).mean(dim=1).to(recon.dtype)
