"""GAN latent projection (Table 4's BigGAN-deep row): optimise a class-conditional generator's
latent and class codes so that the gradient of the GENERATED batch matches the client's, in the
manner of the StyleGAN2 projector (start at the mean latent, latent noise that ramps down, lr
warm-up and cosine ramp-down). Works with any generator ``g(z, class_vector) -> images in [0, 1]``.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from gradinv_lib.attack.inversion import InversionResult
from gradinv_lib.attack.objectives import GradientMatching
from gradinv_lib.errors import InputError, MissingAssetError
from gradinv_lib.federated.client import ClientUpdate

from .common import AttackConfig, device_of, gradient_targets, pack_result, require_labels
from .loop import LoopSettings, minimise
from .state import attack_state


@dataclass(frozen=True)
class GANProjectionConfig(AttackConfig):
    """``latent_noise``: std of the noise added to z, scaled by (1 - t / (noise_ramp T))^2 and
    zero after; ``optimise_class``: also learn the class vector (initialised one-hot on the true
    labels, which the gradient loss also uses: the row needs y*)."""

    method = "gan_projection"

    iterations: int = 1000
    lr: float = 0.1
    warmup: float = 0.05               # fraction of iterations
    grad_metric: str = "l2"
    latent_noise: float = 0.05
    noise_ramp: float = 0.75
    optimise_class: bool = True
    seed: int = 0
    seed_mode: str = "vmap"



Generator = Callable[[Tensor, Tensor], Tensor]


def gan_projection(model, update: ClientUpdate, generator: Generator, latent_dim: int,
                   config: GANProjectionConfig = GANProjectionConfig(), labels=None) -> InversionResult:
    """Project the batch behind ``update`` onto ``generator``'s range by gradient matching.

    Shape:
        generator(z (B, latent_dim), class_vector (B, num_classes)) -> (B, 3, H, W) in [0, 1],
        with (3, H, W) equal to ``update.image_shape``.
    """
    labels = require_labels(labels, update, "GAN latent projection").to(device_of(model))
    device = device_of(model)
    objective = 1.0 * GradientMatching(gradient_targets(model, update), metric=config.grad_metric)
    z = torch.zeros(update.batch_size, latent_dim, device=device, requires_grad=True)
    classes = F.one_hot(labels, model.num_classes).float().requires_grad_(config.optimise_class)
    gen = torch.Generator(device=device).manual_seed(config.seed)
    noise_until = config.noise_ramp * config.iterations

    def render(z_used: Tensor) -> Tensor:
        images01 = generator(z_used, classes)
        if tuple(images01.shape[1:]) != tuple(update.image_shape):
            raise InputError(f"generator: expected images of shape {tuple(update.image_shape)}, "
                             f"found {tuple(images01.shape[1:])}")
        return model.normalize(images01)[None]

    def loss(t):
        scale = config.latent_noise * max(0.0, 1 - t / noise_until) ** 2 if noise_until else 0.0
        noisy = z + scale * torch.randn(z.shape, generator=gen, device=device) if scale else z
        images = render(noisy)
        return objective.parts(attack_state(model, objective, images, labels, config.seed_mode))

    with torch.no_grad():
        start = render(z)
    settings = LoopSettings(config.iterations, config.lr, schedule="cosine",
                            warmup=round(config.warmup * config.iterations), keep_best=False)
    run = minimise([z, classes] if config.optimise_class else [z], loss, settings)
    with torch.no_grad():
        final = render(z)
    return pack_result(model, final, final[0], start[0], labels, run, config)


# ----------------------------------------------------------------------------- BigGAN-deep
BIGGAN_ENV = "GRADINV_BIGGAN"
BIGGAN_LATENT_DIM = 128


def biggan_dir(path: str | os.PathLike | None = None) -> Path:
    """Where BigGAN-deep weights are looked for: ``path``, ``$GRADINV_BIGGAN``, or
    ``~/.cache/gradinv/biggan-deep-256`` (a folder with ``config.json`` and ``pytorch_model.bin``,
    the layout ``pytorch_pretrained_biggan.BigGAN.from_pretrained`` reads from a folder)."""
    chosen = path or os.environ.get(BIGGAN_ENV) or Path.home() / ".cache" / "gradinv" / "biggan-deep-256"
    return Path(chosen).expanduser()


def biggan_unavailable_reason(path=None) -> str | None:
    """None when BigGAN-deep can be loaded offline, else why not (what is missing, where)."""
    folder = biggan_dir(path)
    if importlib.util.find_spec("pytorch_pretrained_biggan") is None:
        return (f"unavailable: needs BigGAN-deep weights at {folder} and the pytorch-pretrained-biggan "
                "package (not installed)")
    missing = [f for f in ("config.json", "pytorch_model.bin") if not (folder / f).is_file()]
    if missing:
        return f"unavailable: needs BigGAN-deep weights at {folder} (missing {', '.join(missing)})"
    return None


def load_biggan(path=None, resolution: int = 256, truncation: float = 0.4, device="cpu") -> Generator:
    """BigGAN-deep as ``g(z, class_vector) -> images in [0, 1]`` resized to ``resolution``.

    Raises :class:`MissingAssetError` when the package or the weights are absent (no download).
    """
    reason = biggan_unavailable_reason(path)
    if reason:
        raise MissingAssetError(reason)
    from pytorch_pretrained_biggan import BigGAN
    net = BigGAN.from_pretrained(str(biggan_dir(path))).to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)

    def generate(z: Tensor, class_vector: Tensor) -> Tensor:
        images = (net(z * truncation, class_vector, truncation) + 1) / 2  # tanh output in [-1, 1]
        if images.shape[-1] != resolution:
            images = F.interpolate(images, size=(resolution, resolution), mode="bilinear",
                                   antialias=True, align_corners=False)
        return images.clamp(0, 1)

    return generate
