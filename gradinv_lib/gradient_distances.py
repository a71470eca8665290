"""Distances between the seeds' parameter gradients and the client's (L_grad, eq. 3), per layer
or as one cosine; a factored classifier gradient (``factored_gradient``) enters through its Gram
form, never formed."""

from __future__ import annotations

import torch
from torch import Tensor

from .factored_gradient import FactoredGradient, inner, sq_norm


def _per_layer_distance(grads: list, targets: list[Tensor], squared: bool) -> Tensor:
    """(L, G) ||g_l - t_l||_2 (or its square) of every layer for every seed."""
    dists = torch.stack([g.sq_distance(t) if isinstance(g, FactoredGradient)
                         else (g - t).flatten(1).pow(2).sum(1) for g, t in zip(grads, targets)])
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


def _per_layer_distance_foreach(grads: list, targets: list[Tensor], squared: bool) -> Tensor:
    """(L, G) the same distances as :func:`_per_layer_distance` (the reference), dense layers in
    one foreach pass, a factored layer by its Gram form."""
    factored = [i for i, g in enumerate(grads) if isinstance(g, FactoredGradient)]
    dense_idx = [i for i in range(len(grads)) if i not in factored]
    rows: list = [None] * len(grads)
    if dense_idx:
        for i, row in zip(dense_idx, _dense_distances_foreach([grads[i] for i in dense_idx],
                                                              [targets[i] for i in dense_idx])):
            rows[i] = row.square() if squared else row
    for i in factored:
        sq = grads[i].sq_distance(targets[i])
        rows[i] = sq if squared else sq.clamp_min(1e-30).sqrt()
    return torch.stack(rows)


DISTANCE_IMPLEMENTATIONS = {"foreach": _per_layer_distance_foreach, "reference": _per_layer_distance}


def cosine_distance(grads: list, targets: list[Tensor], weights: list[float]) -> Tensor:
    """(G,) one minus the cosine similarity of all (weighted) gradients, per seed."""
    dot = sum(w * inner(g, t) for w, g, t in zip(weights, grads, targets))
    g_sq = sum(w * sq_norm(g) for w, g in zip(weights, grads))
    t_sq = sum(w * t.pow(2).sum() for w, t in zip(weights, targets))
    return 1 - dot / (g_sq.clamp_min(1e-30).sqrt() * t_sq.clamp_min(1e-30).sqrt())
