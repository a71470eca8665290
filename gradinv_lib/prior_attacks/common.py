"""Pieces every prior attack shares: the starting noise (the same as GradInversion's for the same
seed), the image box, the client's target gradients, and packing the outcome as an
:class:`~gradinv_lib.attack.inversion.InversionResult` so ``experiments.evaluate_attack`` scores it."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from gradinv_lib.attack.inversion import InversionResult, image_box
from gradinv_lib.errors import InputError
from gradinv_lib.federated.client import ClientUpdate, check_update_fits, target_gradients

from .loop import LoopResult


class AttackConfig:
    """Shared behaviour of the prior attacks' frozen config dataclasses: ``method`` names the
    attack in saved results."""

    method = "attack"

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {"method": self.method, **dataclasses.asdict(self)}


def device_of(model) -> torch.device:
    return next(model.parameters()).device


def start_images(model, update: ClientUpdate, seeds: int, seed: int, init_std: float = 1.0) -> Tensor:
    """(G, B, C, H, W) normalised N(0, init_std^2) noise clamped to the box, drawn exactly as
    :func:`gradinv_lib.attack.inversion.run_inversion` draws it, so every attack starts from one image."""
    device = device_of(model)
    gen = torch.Generator(device=device).manual_seed(seed)
    lo, hi = image_box(model, device)
    shape = (seeds, update.batch_size, *update.image_shape)
    return (torch.randn(shape, generator=gen, device=device) * init_std).clamp_(lo, hi)


def box_projection(model, images: Tensor):
    """A ``project`` callback that clamps ``images`` into the valid pixel range in place."""
    lo, hi = image_box(model, images.device)
    return lambda: images.clamp_(lo, hi)


def gradient_targets(model, update: ClientUpdate) -> list[Tensor]:
    """The client's gradients in ``model.parameters()`` order, on the model's device."""
    check_update_fits(update, model)
    return [t.to(device_of(model)) for t in target_gradients(update, model)]


def require_labels(labels, update: ClientUpdate, method: str) -> Tensor:
    """The TRUE labels, which ``method`` needs (Table 4's "needs y*" column)."""
    if labels is None:
        raise InputError(f"{method} needs the batch's true labels (Table 4, 'needs true labels'); "
                         "pass labels=")
    labels = torch.as_tensor(labels, dtype=torch.long).flatten()
    if labels.numel() != update.batch_size:
        raise InputError(f"{method}: expected {update.batch_size} labels, found {labels.numel()}")
    return labels


def pack_result(model, images: Tensor, answer: Tensor, start: Tensor, labels: Tensor,
                run: LoopResult, config, extra: dict | None = None) -> InversionResult:
    """``images`` (G, B, ...) and ``answer`` (B, ...) normalised -> an InversionResult in pixels."""
    to_pixels = lambda x: model.denormalize(x.detach()).clamp(0, 1).cpu()  # noqa: E731
    return InversionResult(images=to_pixels(images), consensus=to_pixels(answer),
                           start=to_pixels(start), labels=labels.detach().cpu(),
                           history=run.history, config=config, iterations=run.evaluations,
                           seconds=run.seconds, extra=extra or {})
