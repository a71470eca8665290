"""Group consistency of GradInversion (Yin et al. 2021, sec. 3.4, eqs. 11-12): G seeds reconstruct
the same batch; the consensus is (i) the pixel mean over seeds as a coarse target, (ii) every
seed's image registered onto it, (iii) the mean of the registered images."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gradinv_lib.errors import InputError

from .parametric import REGISTRATIONS

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
