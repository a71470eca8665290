"""DeepInversion (Yin et al., CVPR 2020) as Table 4's gradient-free row: synthesise images of the
TRUE labels from the network alone, with cross-entropy + BN-statistics prior (running statistics)
+ TV + l2, random jitter and flips. It reads no gradient of the client update."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gradinv_lib.attack.inversion import InversionResult
from gradinv_lib.attack.objectives import BNPrior, ClassificationLoss, L2Prior, TotalVariation
from gradinv_lib.attack.pipeline import bn_targets
from gradinv_lib.errors import InputError
from gradinv_lib.federated.client import ClientUpdate

from .common import AttackConfig, box_projection, device_of, pack_result, require_labels, start_images
from .loop import LoopSettings, minimise
from .state import attack_state


@dataclass(frozen=True)
class DeepInversionConfig(AttackConfig):
    """Weights and step follow DeepInversion's ImageNet setting (CE 1, BN 0.01, TV 1e-4, l2 1e-5;
    Adam, lr 0.25, the learning rate of its ResNet-50 inversion command).

    ``jitter``: largest random shift as a fraction of the image side (30 px of 224);
    ``bn_target``: "running" (DeepInversion's) or "exact" (the client batch's, for ablations).
    Departure: plain Adam with cosine decay; no multi-resolution stage or first-layer BN weight.
    """

    method = "deepinversion"

    iterations: int = 2000
    lr: float = 0.25
    alpha_ce: float = 1.0
    alpha_bn: float = 0.01
    alpha_tv: float = 1e-4
    alpha_l2: float = 1e-5
    bn_target: str = "running"
    jitter: float = 30 / 224
    flip: bool = True
    init_std: float = 1.0
    seed: int = 0



def random_view(images: Tensor, jitter: int, flip: bool, gen: torch.Generator) -> Tensor:
    """``images`` (G, B, C, H, W) rolled by one random (dy, dx) in [-jitter, jitter] and, with
    probability 1/2, mirrored: the augmentation DeepInversion applies before every forward."""
    if jitter:
        dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=gen).tolist()
        images = torch.roll(images, shifts=(dy, dx), dims=(-2, -1))
    if flip and torch.rand((), generator=gen) < 0.5:
        images = images.flip(-1)
    return images


def deepinversion(model, update: ClientUpdate, config: DeepInversionConfig = DeepInversionConfig(),
                  labels=None) -> InversionResult:
    """Synthesise ``update.batch_size`` images of the true ``labels``; only the update's shape
    (batch size, image size) and, for ``bn_target="exact"``, its BN statistics are read."""
    labels = require_labels(labels, update, "DeepInversion").to(device_of(model))
    if not model.bn_layers():
        raise InputError(f"DeepInversion needs BatchNorm layers; model {model.name} has none")
    stats = bn_targets(model, update, config.bn_target)
    device = device_of(model)
    objective = (config.alpha_ce * ClassificationLoss(model, labels)
                 + config.alpha_bn * BNPrior({k: (m.to(device), v.to(device)) for k, (m, v) in stats.items()})
                 + config.alpha_tv * TotalVariation() + config.alpha_l2 * L2Prior())
    start = start_images(model, update, seeds=1, seed=config.seed, init_std=config.init_std)
    images = start.clone().requires_grad_(True)
    gen = torch.Generator().manual_seed(config.seed)
    shift = round(config.jitter * update.image_shape[-1])

    def loss(_t):
        state = attack_state(model, objective, random_view(images, shift, config.flip, gen), None)
        state.images = images  # priors on the image itself, network terms on its random view
        return objective.parts(state)

    run = minimise([images], loss, LoopSettings(config.iterations, config.lr, schedule="cosine"),
                   project=box_projection(model, images))
    return pack_result(model, images, images[0], start[0], labels, run, config)
