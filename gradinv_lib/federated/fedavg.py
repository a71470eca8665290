"""FedAvg clients (beyond the paper): K local SGD steps before sharing an update.

A FedAvg client starts from the global weights w_0 and takes K steps
``w_{k+1} = w_k - lr * g_k(w_k)`` over consecutive mini-batches of its data, then shares
``w_K`` (or ``w_K - w_0``). gradinv reads that as ``(w_0 - w_K) / lr = sum_k g_k``, which is the
batch gradient itself when K = 1 over the whole batch (FedSGD, the paper's setting). The attack
differentiates through the same K unrolled steps on its candidate images (as breaching does for
multi-step users), so L_grad (eq. 3) compares like with like.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from gradinv_lib.attack.bn_stats import record_bn_inputs
from gradinv_lib.attack.seed_gradients import split_parameters, stack_seeds
from gradinv_lib.errors import InputError


def is_fedsgd(batch_size: int, local_steps: int, local_batch_size: int | None) -> bool:
    """One local step over the whole batch: the shared update is the batch-mean gradient."""
    return local_steps == 1 and local_batch_size in (None, batch_size)


def check_local_training(batch_size: int, local_steps, lr, local_batch_size) -> None:
    """Raise InputError unless K >= 1, 1 <= local batch <= B, and lr > 0 where K > 1 or the
    local batch is smaller than B (FedSGD needs no lr)."""
    if isinstance(local_steps, bool) or not isinstance(local_steps, int) or local_steps < 1:
        raise InputError(f"local_steps: expected an integer >= 1, found {local_steps!r}")
    if local_batch_size is not None and (isinstance(local_batch_size, bool)
                                         or not isinstance(local_batch_size, int)
                                         or not 1 <= local_batch_size <= batch_size):
        raise InputError(f"local_batch_size: expected an integer in [1, {batch_size}] (the "
                         f"client's batch), found {local_batch_size!r}")
    if lr is None:
        if not is_fedsgd(batch_size, local_steps, local_batch_size):
            raise InputError(f"lr: a FedAvg update ({local_steps} local steps, local batch "
                             f"{local_batch_size or batch_size}) needs the client's learning rate (CLI: "
                             "--client-lr), found none")
        return
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise InputError(f"lr: expected a positive finite learning rate, found {lr!r}")


def minibatch_indices(batch_size: int, local_steps: int, local_batch_size: int | None) -> list[Tensor]:
    """Step k's images: ``local_batch_size`` consecutive ones from ``k * local_batch_size``,
    cycling through the batch in order (one epoch when K * b = B)."""
    b = local_batch_size or batch_size
    return [(k * b + torch.arange(b)) % batch_size for k in range(local_steps)]


def local_training(model, x: Tensor, labels: Tensor, local_steps: int, lr: float,
                   local_batch_size: int | None = None, create_graph: bool = False) -> list[Tensor]:
    """``sum_k g_k(w_k)`` over K unrolled SGD steps from the model's weights (= (w_0 - w_K)/lr).

    Gradients are of the trainable parameters, in ``named_parameters()`` order; BN normalises as
    the model is set (wrap in ``bn_stats.bn_mode``). ``create_graph=True`` keeps the result
    differentiable w.r.t. ``x`` (the attack); the model's own weights are never changed.

    Shape: x (B, C, H, W) normalised; labels (B,) -> one tensor per trainable parameter.
    """
    trainable, fixed = split_parameters(model)
    weights = {n: p.requires_grad_(True) for n, p in trainable.items()}
    total = None
    for idx in minibatch_indices(x.shape[0], local_steps, local_batch_size):
        idx = idx.to(x.device)
        logits = functional_call(model, {**fixed, **weights}, (x[idx],))
        loss = F.cross_entropy(logits.float(), labels[idx])
        grads = torch.autograd.grad(loss, list(weights.values()), create_graph=create_graph)
        total = list(grads) if total is None else [t + g for t, g in zip(total, grads)]
        weights = {n: w - lr * g for (n, w), g in zip(weights.items(), grads)}
    return total


def per_seed_local_updates(model, images: Tensor, labels: Tensor, with_bn: bool = False,
                           mode: str = "loop", amp: bool = False, *, local_steps: int, lr: float,
                           local_batch_size: int | None = None):
    """:func:`seed_gradients.per_seed_gradients` for a FedAvg client: per seed, the unrolled
    ``sum_k g_k`` (differentiable w.r.t. the images) and the BN statistics of the whole batch at
    the global weights (BN_exact targets of :func:`client.simulate_client`).

    ``mode`` and ``amp`` are accepted for the signature and ignored (one seed at a time, fp32).

    Shape: images (G, B, C, H, W); labels (B,) -> list of (G, *param.shape), BN name ->
    (mean (G, C), var (G, C)).
    """
    per_seed, stats = [], []
    for x in images:
        seed_stats: dict = {}
        if with_bn:
            with record_bn_inputs(model) as seed_stats:
                model(x)
        per_seed.append(local_training(model, x, labels, local_steps, lr, local_batch_size,
                                       create_graph=True))
        stats.append(dict(seed_stats))
    return stack_seeds(per_seed, stats)


def client_step_for(update):
    """The per-seed pass that reproduces ``update``'s kind of training step: None for FedSGD
    (the loop's default, :func:`seed_gradients.per_seed_gradients`), else the unrolled one."""
    if update.is_fedsgd:
        return None
    return functools.partial(per_seed_local_updates, local_steps=update.local_steps, lr=update.lr,
                             local_batch_size=update.local_batch_size)
