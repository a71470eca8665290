"""Pairing reconstructions with originals, the content-free reference images every table shows,
and ``evaluate_reconstruction``, all paired metrics of Tables 2-4 for one batch."""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from gradinv_lib.errors import InputError

from .features import LITE0, Lite0FeaturesUnavailable, feature_distance
from .pixel import IMAGENET_MEAN, IMAGENET_STD, RegistrationFn, check_pair, fft2d_distance, psnr, registered_psnr, ssim


def match_by_labels(recovered_labels: Tensor, true_labels: Tensor, recon: Tensor | None = None,
                    orig: Tensor | None = None) -> Tensor:
    """Pair reconstructions (ordered as ``recovered_labels``) with originals by label.

    One linear assignment (scipy ``linear_sum_assignment``) on the cost
    ``[label differs] * 1e3 + MSE(recon_i, orig_j)``: equal labels always win, and among several
    originals with the same label, or for reconstructions whose recovered label is wrong, the
    pixel MSE decides (if images are given; otherwise the first free one in order).

    Returns:
        perm (N,) long: reconstruction i is paired with original ``perm[i]``.
    """
    rec = torch.as_tensor(recovered_labels).flatten().cpu()
    tru = torch.as_tensor(true_labels).flatten().cpu()
    if rec.numel() != tru.numel():
        raise InputError(f"match_by_labels: expected as many recovered as true labels, "
                         f"found {rec.numel()} and {tru.numel()}")
    cost = (rec[:, None] != tru[None, :]).double() * 1e3
    if recon is not None and orig is not None:
        if recon.shape[0] != rec.numel() or orig.shape[0] != tru.numel():
            raise InputError(f"match_by_labels: expected {rec.numel()} images on each side, "
                             f"found {recon.shape[0]} and {orig.shape[0]}")
        cost = cost + (recon.double().flatten(1)[:, None] - orig.double().flatten(1)[None]).pow(2).mean(-1).cpu()
    rows, cols = linear_sum_assignment(cost.numpy())
    perm = np.empty(len(rows), dtype=np.int64)
    perm[rows] = cols
    return torch.from_numpy(perm)


def noise_start_like(originals01: Tensor, seed: int = 0, init_std: float = 1.0,
                     mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Tensor:
    """The attack's starting point in pixel space: N(0, init_std^2) noise in the normalised space
    ``(x - mean) / std``, mapped back and clamped to the [0, 1] pixel box (seeded, CPU).

    Shape: originals01 (N, 3, H, W) -> (N, 3, H, W).
    """
    gen = torch.Generator().manual_seed(int(seed))
    z = torch.randn(originals01.shape, generator=gen, dtype=torch.float32) * init_std
    m, s = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
    return (z * s + m).clamp(0, 1).to(device=originals01.device, dtype=originals01.dtype)


def reference_images(originals01: Tensor, start01: Tensor | None = None, seed: int = 0) -> dict:
    """Content-free references to score beside every reconstruction (as rows of a table).

    "noise start": ``start01`` (the attack's initial images in pixel space; only if given);
    "uniform noise": U[0, 1] pixels drawn with ``seed``; "mean colour": each original's flat
    per-channel mean colour; "grey": flat 0.5. None of them carries any content of the original.

    Shape: originals01 (N, C, H, W); every value (N, C, H, W).
    """
    if originals01.dim() != 4:
        raise InputError(f"originals01: expected (N, C, H, W), found {tuple(originals01.shape)}")
    out = {}
    if start01 is not None:
        check_pair(start01, originals01)
        out["noise start"] = start01.detach()
    gen = torch.Generator().manual_seed(int(seed))
    out["uniform noise"] = torch.rand(originals01.shape, generator=gen).to(originals01)
    out["mean colour"] = originals01.mean(dim=(-2, -1), keepdim=True).expand_as(originals01).clone()
    out["grey"] = torch.full_like(originals01, 0.5)
    return out


def evaluate_reconstruction(recon01: Tensor, orig01: Tensor, model=None,
                            registration: RegistrationFn | None = None,
                            lpips: Callable[[Tensor, Tensor], Tensor] | None = None,
                            feature_model=LITE0) -> dict:
    """All paired metrics of Tables 2-4 for one batch (already matched).

    Returns the batch means under "fft2d", "psnr", "ssim", "psnr_registered" (only with
    ``registration``: the bounded inverse-direction score of :func:`registered_psnr`, whatever
    entry of ``REGISTRATIONS`` is passed), "feature_dist", "lpips" (None without ``lpips``),
    the per-image values as lists under "per_image", and "n".

    "feature_dist" uses ``feature_model``: ``"lite0"`` (default) the PRETRAINED EfficientNet-Lite0
    features; ``"attacked"`` the features of ``model`` (the attacked network, the old default);
    a classifier its features; None skips it. It is None when skipped, or (with a warning) when
    the Lite0 weights are not installed. ``model`` is used for nothing else.
    """
    per = {"fft2d": fft2d_distance(recon01, orig01), "psnr": psnr(recon01, orig01),
           "ssim": ssim(recon01, orig01)}
    if registration is not None:
        per["psnr_registered"] = registered_psnr(recon01, orig01, registration)
    extractor = model if isinstance(feature_model, str) and feature_model == "attacked" else feature_model
    if extractor is not None:
        try:
            per["feature_dist"] = feature_distance(extractor, recon01, orig01)
        except Lite0FeaturesUnavailable as exc:
            warnings.warn(f"feature_dist left out: {exc}", stacklevel=2)
    if lpips is not None:
        per["lpips"] = lpips(recon01, orig01)
    out: dict = {k: float(v.double().mean()) for k, v in per.items()}
    out.setdefault("feature_dist", None)
    out.setdefault("lpips", None)
    out["per_image"] = {k: [float(x) for x in v.flatten()] for k, v in per.items()}
    out["n"] = int(recon01.shape[0])
    return out
