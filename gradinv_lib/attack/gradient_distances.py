"""Distances between the seeds' parameter gradients and the client's (L_grad, eq. 3), per layer
or as one cosine; a factored classifier gradient (``factored_gradient``) enters through its Gram
form, never formed."""

from __future__ import annotations

import torch
from torch import Tensor

from .factored_gradient import FactoredGradient, inner, sq_norm


def _per_layer_distance(grads: list, targets: list[Tensor], squared: bool, target_sq=None) -> Tensor:
    """(L, G) ||g_l - t_l||_2 (or its square) of every layer for every seed. ``target_sq``: each
    target's squared norm in float64 where known (a factored layer needs it)."""
    target_sq = target_sq or [None] * len(targets)
    dists = torch.stack([g.sq_distance(t, s) if isinstance(g, FactoredGradient)
                         else (g - t).flatten(1).pow(2).sum(1) for g, t, s in zip(grads, targets, target_sq)])
    return dists if squared else dists.clamp_min(1e-30).sqrt()


def _dense_distances_foreach(grads: list[Tensor], targets: list[Tensor]) -> Tensor:
    """(L, G) ||g_l - t_l||_2 of dense layers: one foreach subtraction and norms (one foreach norm
    for one seed) instead of four ops per layer; the norm's backward also takes fewer passes over
    the gradients than ``pow(2).sum().sqrt()``."""
    seeds = grads[0].shape[0]
    diffs = torch._foreach_sub(list(grads), targets)  # broadcasts each (C,...) target over G
    if seeds == 1:  # views: their backward copies nothing (unbind's would stack every gradient)
        return torch.stack(torch._foreach_norm([d.view(d.shape[1:]) for d in diffs])).view(-1, 1)
    return torch.stack([torch.linalg.vector_norm(d.flatten(1), dim=1) for d in diffs])


def _per_layer_distance_foreach(grads: list, targets: list[Tensor], squared: bool, target_sq=None) -> Tensor:
    """(L, G) the same distances as :func:`_per_layer_distance` (the reference): dense layers in
    one foreach pass, a factored layer by the reference (its Gram form)."""
    target_sq = target_sq or [None] * len(targets)
    dense = [i for i, g in enumerate(grads) if not isinstance(g, FactoredGradient)]
    norms = dict(zip(dense, _dense_distances_foreach([grads[i] for i in dense], [targets[i] for i in dense]))
                 if dense else ())
    return torch.stack([(norms[i].square() if squared else norms[i]) if i in norms
                        else _per_layer_distance([g], [targets[i]], squared, [target_sq[i]])[0]
                        for i, g in enumerate(grads)])


DISTANCE_IMPLEMENTATIONS = {"foreach": _per_layer_distance_foreach, "reference": _per_layer_distance}


def cosine_distance(grads: list, targets: list[Tensor], weights: list[float]) -> Tensor:
    """(G,) one minus the cosine similarity of all (weighted) gradients, per seed."""
    dot = sum(w * inner(g, t) for w, g, t in zip(weights, grads, targets))
    g_sq = sum(w * sq_norm(g) for w, g in zip(weights, grads))
    t_sq = sum(w * t.pow(2).sum() for w, t in zip(weights, targets))
    return 1 - dot / (g_sq.clamp_min(1e-30).sqrt() * t_sq.clamp_min(1e-30).sqrt())
