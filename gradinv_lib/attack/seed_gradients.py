"""The inner pass of the attack: for each of G seeds, the parameter gradient of the classification
loss on that seed's batch (kept differentiable w.r.t. the images) and its BN input statistics."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call, grad, vmap

from .bn_stats import bn_in_float32, record_bn_inputs
from .factored_gradient import FactoredGradient, can_factor, final_layer_io, logit_gradient


def _cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean CE in at least float32 (AMP logits are bf16), float64 kept as is."""
    return F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), labels)


@contextmanager
def _autocast(model, images: Tensor, enabled: bool):
    """bf16 autocast on CUDA when ``enabled``, with BN kept in float32 (``bn_in_float32``)."""
    if not (enabled and images.device.type == "cuda"):
        yield
        return
    with torch.autocast("cuda", dtype=torch.bfloat16), bn_in_float32(model):
        yield


def per_seed_gradients(model, images: Tensor, labels: Tensor, with_bn: bool = False,
                       mode: str = "vmap", amp: bool = False, factored: bool = False):
    """Gradients of mean cross-entropy w.r.t. every trainable parameter, separately for each seed.

    The result stays in the autograd graph of ``images`` (double backward, eq. 3). BN normalises
    as the model is set (use ``bn_stats.bn_mode`` to mimic a client in train mode).
    ``factored=True`` (what the attack asks for): the final layer's weight gradient comes as a
    :class:`~gradinv_lib.attack.factored_gradient.FactoredGradient` where ``can_factor`` allows it.

    Shape:
        images: (G, B, C, H, W) normalised; labels: (B,).
        returns: list of (G, *param.shape) in ``model.parameters()`` order (trainable ones,
        as ``client.target_gradients``), and a dict
        BN name -> (mean (G, C), var (G, C)) (empty unless ``with_bn``).
    """
    factor = factored and can_factor(model, images, labels, amp)
    if mode == "vmap" and images.shape[0] > 1:  # one seed: the plain pass, no vmap overhead
        return _vmap_gradients(model, images, labels, with_bn, amp, factor)
    return _loop_gradients(model, images, labels, with_bn, amp, factor)


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


def _final_weight_name(model, factor: bool) -> str | None:
    """Name of the parameter whose gradient is factored (None: nothing is)."""
    return f"{model.final_layer_name}.weight" if factor else None


def _vmap_gradients(model, images, labels, with_bn, amp, factor=False):
    params, buffers = split_parameters(model)
    names = list(params)
    weight = _final_weight_name(model, factor)
    if weight:  # a constant of the per-seed pass: its gradient is assembled from two factors
        buffers = {**buffers, weight: params.pop(weight)}

    def seed_loss(p, x):
        with (record_bn_inputs(model) if with_bn else nullcontext({}) as stats, _autocast(model, x, amp),
              final_layer_io(model) if weight else nullcontext({}) as final):
            logits = functional_call(model, (p, buffers), (x,))
        return _cross_entropy(logits, labels), (dict(stats), *((logits, final["input"]) if weight else ()))

    grads, (stats, *factors) = vmap(grad(seed_loss, has_aux=True), in_dims=(None, 0))(params, images)
    if weight:
        logits, inputs = factors
        grads[weight] = FactoredGradient(logit_gradient(logits, labels), inputs)
    return [grads[n] for n in names], stats


def _loop_gradients(model, images, labels, with_bn, amp, factor=False):
    """Reference path: one autograd.grad(create_graph=True) per seed."""
    weight = _final_weight_name(model, factor)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for n, p in named if n != weight]
    per_seed, stats, factors = [], [], []
    for x in images:
        with (record_bn_inputs(model) if with_bn else nullcontext({}) as seed_stats, _autocast(model, x, amp),
              final_layer_io(model) if weight else nullcontext({}) as final):
            logits = model(x)
        loss = _cross_entropy(logits, labels)
        per_seed.append(torch.autograd.grad(loss, params, create_graph=True))
        stats.append(dict(seed_stats))
        if weight:
            factors.append((logit_gradient(logits, labels), final["input"]))
    grads, bn = stack_seeds(per_seed, stats)
    if weight:  # back into parameter order
        a, f = (torch.stack(parts) for parts in zip(*factors))
        grads.insert([n for n, _ in named].index(weight), FactoredGradient(a, f))
    return grads, bn
