"""The inner pass of the attack: for each of G seeds, the parameter gradient of the classification
loss on that seed's batch (kept differentiable w.r.t. the images) and its BN input statistics."""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call, grad, vmap

from .bn_stats import record_bn_inputs


def _cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean CE in at least float32 (AMP logits are bf16), float64 kept as is."""
    return F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), labels)


def _autocast(images: Tensor, enabled: bool):
    if enabled and images.device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def per_seed_gradients(model, images: Tensor, labels: Tensor, with_bn: bool = False,
                       mode: str = "vmap", amp: bool = False):
    """Gradients of mean cross-entropy w.r.t. every trainable parameter, separately for each seed.

    The result stays in the autograd graph of ``images`` (double backward, eq. 3). BN normalises
    as the model is set (use ``bn_stats.bn_mode`` to mimic a client in train mode).

    Shape:
        images: (G, B, C, H, W) normalised; labels: (B,).
        returns: list of (G, *param.shape) in ``model.parameters()`` order (trainable ones,
        as ``client.target_gradients``), and a dict
        BN name -> (mean (G, C), var (G, C)) (empty unless ``with_bn``).
    """
    if mode == "vmap" and images.shape[0] > 1:  # one seed: the plain pass, no vmap overhead
        return _vmap_gradients(model, images, labels, with_bn, amp)
    return _loop_gradients(model, images, labels, with_bn, amp)


def split_parameters(model) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """For ``torch.func.functional_call``: (the trainable parameters, detached, by name; the rest
    of the model's state by name: frozen parameters and buffers)."""
    trainable = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    fixed = {n: p for n, p in model.named_parameters() if not p.requires_grad}
    fixed.update(model.named_buffers())
    return trainable, fixed


def stack_seeds(per_seed: list, stats: list[dict]):
    """G seeds' gradient lists and BN statistics -> (list of (G, *param.shape), BN name ->
    (mean (G, C), var (G, C))); one seed gives views, not copies of every gradient."""
    if len(per_seed) == 1:
        return [g.unsqueeze(0) for g in per_seed[0]], {
            k: (m.unsqueeze(0), v.unsqueeze(0)) for k, (m, v) in stats[0].items()}
    grads = [torch.stack(g) for g in zip(*per_seed)]
    bn = {k: tuple(torch.stack([s[k][i] for s in stats]) for i in (0, 1)) for k in stats[0]}
    return grads, bn


def _vmap_gradients(model, images, labels, with_bn, amp):
    params, buffers = split_parameters(model)
    names = list(params)

    def seed_loss(p, x):
        with record_bn_inputs(model) if with_bn else nullcontext({}) as stats, _autocast(x, amp):
            logits = functional_call(model, (p, buffers), (x,))
        return _cross_entropy(logits, labels), dict(stats)

    grads, stats = vmap(grad(seed_loss, has_aux=True), in_dims=(None, 0))(params, images)
    return [grads[n] for n in names], stats


def _loop_gradients(model, images, labels, with_bn, amp):
    """Reference path: one autograd.grad(create_graph=True) per seed."""
    params = [p for p in model.parameters() if p.requires_grad]
    per_seed, stats = [], []
    for x in images:
        with record_bn_inputs(model) if with_bn else nullcontext({}) as seed_stats, _autocast(x, amp):
            logits = model(x)
        loss = _cross_entropy(logits, labels)
        per_seed.append(torch.autograd.grad(loss, params, create_graph=True))
        stats.append(dict(seed_stats))
    return stack_seeds(per_seed, stats)
