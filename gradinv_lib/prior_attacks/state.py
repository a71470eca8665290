"""What an objective needs, computed once per evaluation: parameter gradients (and BN statistics)
when a term matches gradients, otherwise only a forward pass (logits, BN statistics) that builds no
parameter-gradient graph, or nothing at all. Also the per-seed value of an objective."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor

from gradinv_lib.attack.bn_stats import record_bn_inputs
from gradinv_lib.attack.objectives import AttackState, Objective
from gradinv_lib.attack.seed_gradients import per_seed_gradients


def per_seed_forward(model, images: Tensor, with_bn: bool = False):
    """Logits and BN input statistics of each seed's batch, without parameter gradients.

    Shape:
        images: (G, B, C, H, W) normalised -> logits (G, B, N) and BN name -> (mean, var) (G, C).
    """
    logits, stats = [], []
    for seed_images in images:
        with record_bn_inputs(model) if with_bn else nullcontext({}) as seed_stats:
            logits.append(model(seed_images))
        stats.append(dict(seed_stats))
    bn = {k: tuple(torch.stack([s[k][i] for s in stats]) for i in (0, 1)) for k in stats[0]}
    return torch.stack(logits), bn


def attack_state(model, objective: Objective, images: Tensor, labels: Tensor | None,
                 seed_mode: str = "vmap") -> AttackState:
    """An :class:`AttackState` holding exactly what ``objective`` reads.

    ``labels`` (B,) indices or (B, N) probabilities (soft labels keep their autograd graph, so
    DLG can learn them); unused when no term needs parameter gradients.
    """
    state = AttackState(images=images)
    if objective.needs_grads:
        state.grads, state.bn = per_seed_gradients(model, images, labels, with_bn=objective.needs_bn,
                                                   mode=seed_mode, factored=True)
    elif objective.needs_bn or objective.needs_logits:
        state.logits, state.bn = per_seed_forward(model, images, with_bn=objective.needs_bn)
    return state


def seed_slice(state: AttackState, g: int) -> AttackState:
    """The state of seed ``g`` alone (G = 1), for per-seed objective values."""
    pick = lambda t: None if t is None else t[g:g + 1]  # noqa: E731
    return AttackState(
        images=pick(state.images),
        grads=None if state.grads is None else [t[g:g + 1] for t in state.grads],
        bn=None if state.bn is None else {k: (m[g:g + 1], v[g:g + 1]) for k, (m, v) in state.bn.items()},
        consensus=state.consensus, logits=pick(state.logits))


def per_seed_losses(objective: Objective, state: AttackState) -> Tensor:
    """(G,) objective value of every seed (terms sum over seeds, so each slice is that seed's)."""
    with torch.no_grad():
        return torch.stack([objective(seed_slice(state, g)).detach()
                            for g in range(state.images.shape[0])])
