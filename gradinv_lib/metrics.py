"""Reconstruction metrics of the paper (sec. 4, Tables 2-4, Fig. 8).

All image metrics take PAIRED batches in pixel space [0, 1], shape (N, 3, H, W): reconstruction i
is compared with original i (pair them first with :func:`match_by_labels`), and return one value
per image, shape (N,).
"""

from __future__ import annotations

import os
import warnings
from typing import Callable

import kornia
import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from .bn_stats import bn_mode
from .errors import InputError, MissingAssetError

PSNR_CAP_DB = 100.0  # PSNR reported for identical images (MSE 0), instead of inf
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"

Registration = Callable[[Tensor, Tensor], Tensor]


def _check_pair(recon: Tensor, orig: Tensor) -> None:
    if recon.dim() != 4 or recon.shape != orig.shape:
        raise InputError(f"expected reconstructions and originals of the same shape (N, C, H, W), "
                         f"found {tuple(recon.shape)} and {tuple(orig.shape)}")


# ----------------------------------------------------------------------------- pixel metrics
def fft2d_distance(recon: Tensor, orig: Tensor) -> Tensor:
    """FFT-2D metric: cosine distance between the 2-D Fourier magnitude spectra, per image.

    For each image, ``|FFT2(x_c)|`` is taken per channel (DC term included, no shift or log),
    the three channel spectra are concatenated into one vector of 3*H*W magnitudes, and the
    distance is ``1 - cos(recon, orig)`` of those vectors. Magnitudes are >= 0, so it lies in
    [0, 1]; it is blind to phase (x and a circular shift of x, or -x, score 0).
    """
    _check_pair(recon, orig)
    a = torch.fft.fft2(recon.double()).abs().flatten(1)
    b = torch.fft.fft2(orig.double()).abs().flatten(1)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-12)
    return (1.0 - cos).clamp_min(0.0).to(recon.dtype)


def psnr(recon: Tensor, orig: Tensor) -> Tensor:
    """PSNR in dB per image, data range 1: ``10 log10(1 / MSE)`` with MSE over C, H, W.

    Identical images (MSE 0) get ``PSNR_CAP_DB`` = 100 dB, and no value exceeds it, so means stay
    finite.
    """
    _check_pair(recon, orig)
    mse = (recon.double() - orig.double()).pow(2).flatten(1).mean(dim=1)
    floor = 10.0 ** (-PSNR_CAP_DB / 10.0)
    return (10.0 * torch.log10(1.0 / mse.clamp_min(floor))).to(recon.dtype)


def registered_psnr(recon: Tensor, orig: Tensor, registration: Registration) -> Tensor:
    """PSNR after registering EACH reconstruction onto ITS OWN original (Tables 2-4).

    ``registration(moving, fixed) -> Registration`` (one of ``gradinv_lib.registration.
    REGISTRATIONS``) warps ``moving[i]`` onto ``fixed[i]`` for every i; it never sees other
    images of the batch as targets. The identity is a registration too: where the estimated warp
    lowers an image's PSNR (a parametric fit misled by a blurry or noisy reconstruction), that
    image is scored unwarped, so registered PSNR is never below plain PSNR.
    """
    _check_pair(recon, orig)
    warped = registration(recon, orig).warped
    if warped.shape != recon.shape:
        raise InputError(f"registration: expected warped images of shape {tuple(recon.shape)}, "
                         f"found {tuple(warped.shape)}")
    return torch.maximum(psnr(warped.clamp(0, 1), orig), psnr(recon, orig))


def ssim(recon: Tensor, orig: Tensor) -> Tensor:
    """SSIM per image (Wang et al. 2004): Gaussian window 11, sigma 1.5, data range 1,
    K1 = 0.01, K2 = 0.03, averaged over the 'valid' window positions and the channels
    (as scikit-image with ``gaussian_weights=True, use_sample_covariance=False``)."""
    _check_pair(recon, orig)
    if min(recon.shape[-2:]) < 11:
        raise InputError(f"ssim: expected images of at least 11x11 pixels, found {tuple(recon.shape[-2:])}")
    m = kornia.metrics.ssim(recon.double(), orig.double(), window_size=11, max_val=1.0, padding="valid")
    return m.flatten(1).mean(dim=1).to(recon.dtype)


# ----------------------------------------------------------------------------- feature metrics
def _model_dtype_device(model) -> tuple[torch.dtype, torch.device]:
    p = next(model.parameters())
    return p.dtype, p.device


@torch.no_grad()
def penultimate_features(model, images01: Tensor, batch: int = 64) -> Tensor:
    """The avg-pool features: the input of ``model.final_layer``, captured by a forward hook.

    Model in eval mode (modes restored), no grad, in chunks of ``batch`` images.

    Shape:
        images01: (N, 3, H, W) in [0, 1] -> (N, M) with M = final_layer.in_features.
    """
    dtype, device = _model_dtype_device(model)
    captured: list[Tensor] = []
    handle = model.final_layer.register_forward_hook(lambda _m, inp, _o: captured.append(inp[0].flatten(1)))
    try:
        with bn_mode(model, "eval"):
            for chunk in images01.split(batch):
                model(model.normalize(chunk.to(device=device, dtype=dtype)))
    finally:
        handle.remove()
    return torch.cat(captured)


def feature_distance(model, recon: Tensor, orig: Tensor, batch: int = 64) -> Tensor:
    """Table 2's feature-distance column, OUR READING of it (illegible in the source): the L2
    distance between the avg-pool features (input of the final layer) of reconstruction and
    original, per image."""
    _check_pair(recon, orig)
    return (penultimate_features(model, recon, batch) - penultimate_features(model, orig, batch)).norm(dim=1)


def identifiability_precision(model, reconstructions01: Tensor, originals_idx: Tensor,
                              pool_images01: Tensor | None = None, batch: int = 64,
                              pool_features: Tensor | None = None) -> dict:
    """Image Identifiability Precision (sec. 4.3, Fig. 8).

    Each reconstruction's nearest neighbour in the pool by cosine similarity of avg-pool
    features; IIP is the fraction whose neighbour is its own original (``originals_idx[i]``, an
    index into the pool). Pool features are computed once in chunks (or passed precomputed as
    ``pool_features``, e.g. from :func:`penultimate_features`) and compared as one (N, P)
    similarity matrix.

    Returns:
        dict(iip=float, hits=(N,) bool, nearest=(N,) long pool index, similarity=(N,) float).
    """
    originals_idx = torch.as_tensor(originals_idx, dtype=torch.long).flatten()
    if originals_idx.numel() != reconstructions01.shape[0]:
        raise InputError(f"originals_idx: expected {reconstructions01.shape[0]} indices, "
                         f"found {originals_idx.numel()}")
    if pool_features is None:
        if pool_images01 is None:
            raise InputError("identifiability_precision: expected pool_images01 or pool_features, found neither")
        pool_features = penultimate_features(model, pool_images01, batch)
    pool = torch.nn.functional.normalize(pool_features.double(), dim=1)
    if originals_idx.numel() and (originals_idx.min() < 0 or originals_idx.max() >= pool.shape[0]):
        raise InputError(f"originals_idx: expected indices in [0, {pool.shape[0]}), found range "
                         f"[{originals_idx.min().item()}, {originals_idx.max().item()}]")
    rec = torch.nn.functional.normalize(penultimate_features(model, reconstructions01, batch).double(), dim=1)
    sim = rec @ pool.to(rec.device).T
    best, nearest = sim.max(dim=1)
    hits = nearest.cpu() == originals_idx
    return dict(iip=hits.double().mean().item(), hits=hits, nearest=nearest.cpu(), similarity=best.cpu())


# ----------------------------------------------------------------------------- LPIPS
class LPIPSUnavailable(MissingAssetError):
    """The AlexNet backbone of LPIPS is not in torchvision's cache (nothing is downloaded)."""


def alexnet_cache_path() -> str:
    """Where torchvision looks for the AlexNet weights before downloading them."""
    return os.path.join(torch.hub.get_dir(), "checkpoints", ALEXNET_FILE)


def _load_alexnet_backbone(net, path: str) -> None:
    """Copy the cached torchvision AlexNet ``features`` weights into LPIPS's sliced backbone and
    verify every tensor arrived (LPIPS's ``alexnet`` slices hold ``features[i]`` as child ``str(i)``)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    for slice_ in (getattr(net.net, f"slice{k}") for k in range(1, net.net.N_slices + 1)):
        for idx, layer in slice_.named_children():
            for pname, p in layer.named_parameters(recurse=False):
                key = f"features.{idx}.{pname}"
                if key not in state or state[key].shape != p.shape:
                    found = tuple(state[key].shape) if key in state else "nothing"
                    raise InputError(f"{path}: expected AlexNet tensor {key} of shape {tuple(p.shape)}, "
                                     f"found {found}")
                with torch.no_grad():
                    p.copy_(state[key])
                if not torch.equal(p.detach(), state[key].to(p.dtype)):
                    raise InputError(f"{path}: AlexNet tensor {key} did not load")


def lpips_metric(device: str | torch.device = "cpu") -> Callable[[Tensor, Tensor], Tensor]:
    """Real LPIPS (Zhang et al. 2018, AlexNet, v0.1) as ``f(recon01, orig01) -> (N,)``.

    Built offline: the backbone is created empty (``pnet_rand=True``) and then filled from the
    torchvision cache file; raises :class:`LPIPSUnavailable` when that file is absent, so a
    random-backbone score can never be reported as LPIPS.
    """
    path = alexnet_cache_path()
    if not os.path.isfile(path):
        raise LPIPSUnavailable(f"LPIPS unavailable: put {ALEXNET_FILE} in {os.path.dirname(path)} "
                               f"(found no such file)")
    import lpips  # heavy import, only when usable

    with warnings.catch_warnings():  # torchvision's notice about lpips' legacy `pretrained=False`
        warnings.simplefilter("ignore", UserWarning)
        net = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    _load_alexnet_backbone(net, path)
    net = net.to(device).eval()

    @torch.no_grad()
    def score(recon01: Tensor, orig01: Tensor) -> Tensor:
        _check_pair(recon01, orig01)
        return net(recon01.to(device).float(), orig01.to(device).float(), normalize=True).flatten().cpu()

    return score


# ----------------------------------------------------------------------------- pairing, summary
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


def evaluate_reconstruction(recon01: Tensor, orig01: Tensor, model=None,
                            registration: Registration | None = None,
                            lpips: Callable[[Tensor, Tensor], Tensor] | None = None) -> dict:
    """All paired metrics of Tables 2-4 for one batch (already matched).

    Returns the batch means under "fft2d", "psnr", "ssim", "psnr_registered" (only with
    ``registration``), "feature_dist" (only with ``model``), "lpips" (None without ``lpips``),
    and the per-image values as lists under "per_image".
    """
    per = {"fft2d": fft2d_distance(recon01, orig01), "psnr": psnr(recon01, orig01),
           "ssim": ssim(recon01, orig01)}
    if registration is not None:
        per["psnr_registered"] = registered_psnr(recon01, orig01, registration)
    if model is not None:
        per["feature_dist"] = feature_distance(model, recon01, orig01)
    if lpips is not None:
        per["lpips"] = lpips(recon01, orig01)
    out: dict = {k: float(v.double().mean()) for k, v in per.items()}
    out.setdefault("lpips", None)
    out["per_image"] = {k: [float(x) for x in v.flatten()] for k, v in per.items()}
    out["n"] = int(recon01.shape[0])
    return out
