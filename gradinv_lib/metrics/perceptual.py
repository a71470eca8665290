"""LPIPS (Zhang et al. 2018), the paper's perceptual metric, built offline from torchvision's
cached AlexNet weights."""

from __future__ import annotations

import os
import warnings
from typing import Callable

import torch
from torch import Tensor

from gradinv_lib.errors import InputError, MissingAssetError

from .pixel import check_pair as _check_pair

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"


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
