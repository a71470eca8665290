"""Feature-space metrics: avg-pool features of a classifier and the feature distance (Table 2).

The metrics default to the PRETRAINED EfficientNet-Lite0 (real ImageNet features, built once per
process by :func:`lite0_features`), not the attacked network: a randomly initialised attacked
network's features say little about whether two images show the same thing.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from gradinv_lib.attack.bn_stats import bn_mode
from gradinv_lib.errors import MissingAssetError

from .pixel import check_pair

LITE0_NAME = "efficientnet_lite0"
LITE0_RESOLUTION = 224   # Lite0's native side
MAX_UPSAMPLING = 2       # smaller images are upsampled at most this much (see lite0_input_side)
LITE0 = "lite0"  # the feature-model argument meaning "pretrained Lite0"


def lite0_input_side(side: int) -> int:
    """The side Lite0 sees for images of ``side`` px: as they are from 224 px up, else upsampled
    ``MAX_UPSAMPLING`` times, at most to 224 (32 px -> 64 px).

    DEPARTURE (the paper's images are already at the network's resolution). Calibrated on the
    embedded pool at 32 px, before any reconstruction was scored: the fraction of the 110 images
    identified among the pool from a perturbed copy, against their clean features at the same side.

    | side Lite0 sees | + N(0, 0.05) | + N(0, 0.1) | blur sigma 1 | blur 1.5 | mean colour |
    |---|---|---|---|---|---|
    | 32 (1x) | 0.77 | 0.44 | 0.80 | 0.56 | 0.01 |
    | 64 (2x) | 0.85 | 0.52 | 0.95 | 0.75 | 0.04 |
    | 128 (4x) | 0.81 | 0.35 | 0.85 | 0.62 | 0.03 |
    | 224 (7x) | 0.49 | 0.12 | 0.80 | 0.40 | 0.04 |

    Upsampled 7x, a copy with noise of a 20 dB reconstruction's size is identified 12% of the
    time: that IIP could not tell a recovered image from a lost one. Content-free images stay
    unidentified at every side.
    """
    return side if side >= LITE0_RESOLUTION else min(LITE0_RESOLUTION, MAX_UPSAMPLING * side)


class Lite0FeaturesUnavailable(MissingAssetError):
    """The pretrained EfficientNet-Lite0 weights (pip package) are not installed."""


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


@functools.lru_cache(maxsize=4)
def lite0_model(device: str = "cpu"):
    """The pretrained EfficientNet-Lite0 ``ImageClassifier`` (eval mode), built once per device.

    Raises :class:`Lite0FeaturesUnavailable` when its weights package is absent.
    """
    from gradinv_lib.models import build_model  # the model registry is heavy and imports this package's users

    try:
        return build_model(LITE0_NAME, weights="default", device=device)
    except MissingAssetError as exc:
        raise Lite0FeaturesUnavailable(f"pretrained EfficientNet-Lite0 features unavailable: {exc}") from exc


@torch.no_grad()
def lite0_features(images01: Tensor, batch: int = 32, device: str | torch.device = "cpu") -> Tensor:
    """Avg-pool features of the PRETRAINED EfficientNet-Lite0 (input of its final layer).

    Images with a side below 224 px are first resized to the square side
    :func:`lite0_input_side` gives (bicubic, ``align_corners=False``, clamped to [0, 1]; 32 px ->
    64 px), per chunk of ``batch``; larger images are fed as they are. Lite0's own normalisation is
    applied by the model wrapper.

    Shape: images01 (N, 3, H, W) in [0, 1] -> (N, 1280) float32 on CPU.
    """
    model = lite0_model(str(device))
    out = []
    for chunk in images01.split(batch):
        chunk = chunk.to(device=device, dtype=torch.float32)
        side = min(chunk.shape[-2:])
        if side < LITE0_RESOLUTION:
            target = lite0_input_side(side)
            chunk = F.interpolate(chunk, size=(target, target), mode="bicubic",
                                  align_corners=False).clamp(0, 1)
        out.append(penultimate_features(model, chunk, batch).cpu())
    return torch.cat(out)


def features_of(model, images01: Tensor, batch: int = 64) -> Tensor:
    """Features by ``model``: None or ``"lite0"`` -> :func:`lite0_features`; a classifier ->
    :func:`penultimate_features` of that classifier. Shape: (N, 3, H, W) -> (N, M)."""
    if model is None or (isinstance(model, str) and model == LITE0):
        return lite0_features(images01, min(batch, 32))
    return penultimate_features(model, images01, batch)


def feature_distance(model, recon: Tensor, orig: Tensor, batch: int = 64) -> Tensor:
    """Table 2's feature-distance column, OUR READING of it (illegible in the source): the L2
    distance between avg-pool features of reconstruction and original, per image.

    ``model=None`` (or ``"lite0"``): features of the PRETRAINED EfficientNet-Lite0 (see
    :func:`lite0_features`), not of the attacked network; pass a classifier to use its features.

    Shape: recon, orig (N, 3, H, W) -> (N,).
    """
    check_pair(recon, orig)
    return (features_of(model, recon, batch) - features_of(model, orig, batch)).norm(dim=1)
