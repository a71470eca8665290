"""Deep Leakage from Gradients (Zhu et al., NeurIPS 2019) and iDLG (Zhao et al., 2020), Table 4
and Fig. 5: squared-L2 gradient matching minimised with L-BFGS and no image prior. DLG learns
the labels jointly as soft labels; iDLG reads them from the final layer's gradient first."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gradinv_lib.attack.inversion import InversionResult
from gradinv_lib.attack.labels import LABEL_RULES, recover_labels_from_update
from gradinv_lib.attack.objectives import GradientMatching
from gradinv_lib.errors import InputError
from gradinv_lib.federated.client import ClientUpdate

from .common import AttackConfig, device_of, gradient_targets, pack_result, start_images
from .loop import LoopSettings, minimise
from .state import attack_state

LABEL_SOURCES = ("joint", *LABEL_RULES)


@dataclass(frozen=True)
class DLGConfig(AttackConfig):
    """``labels``: "joint" learns soft labels (DLG); "sum" is iDLG's analytic rule (exact at
    batch 1; extended to batches as in Table 1), "min" is eq. 8. ``iterations`` counts objective
    evaluations of L-BFGS (DLG: 300 steps of up to 20 evaluations each)."""

    @property
    def method(self) -> str:
        return "dlg" if self.labels == "joint" else "idlg"

    iterations: int = 300
    lr: float = 1.0
    labels: str = "joint"
    init_std: float = 1.0
    seed: int = 0
    seed_mode: str = "vmap"

    def __post_init__(self):
        if self.labels not in LABEL_SOURCES:
            raise InputError(f"labels: expected one of {LABEL_SOURCES}, found {self.labels!r}")



def dlg(model, update: ClientUpdate, config: DLGConfig = DLGConfig(), labels=None) -> InversionResult:
    """Recover images (and, with ``labels="joint"``, labels) by DLG. ``labels`` (the true ones)
    is never read: DLG needs none (Table 4)."""
    objective = 1.0 * GradientMatching(gradient_targets(model, update), metric="sq_l2")
    start = start_images(model, update, seeds=1, seed=config.seed, init_std=config.init_std)
    images = start.clone().requires_grad_(True)
    if config.labels == "joint":
        gen = torch.Generator(device=device_of(model)).manual_seed(config.seed + 1)
        logits = torch.randn(update.batch_size, model.num_classes, generator=gen,
                             device=device_of(model)).requires_grad_(True)
        variables, soft = [images, logits], lambda: logits.softmax(-1)  # noqa: E731
    else:
        fixed = recover_labels_from_update(update, model, rule=config.labels).to(device_of(model))
        variables, soft = [images], lambda: fixed  # noqa: E731

    def loss(_t):
        return objective.parts(attack_state(model, objective, images, soft(), config.seed_mode))

    run = minimise(variables, loss, LoopSettings(config.iterations, config.lr, optimizer="lbfgs",
                                                  keep_best=True))
    found = soft()
    found = found.argmax(-1) if found.dim() == 2 else found
    return pack_result(model, images, images[0], start[0], found, run, config,
                       extra={"method": config.to_dict()["method"]})


def idlg(model, update: ClientUpdate, config: DLGConfig = DLGConfig(labels="sum"),
         labels=None) -> InversionResult:
    """iDLG: DLG with the labels read analytically from the final layer (the sum rule)."""
    if config.labels == "joint":
        config = config.replace(labels="sum")
    return dlg(model, update, config)
