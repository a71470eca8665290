"""What a defended client shares: :func:`defended_update` applies a defence's stages to the client
simulation (the attacker receives an ordinary :class:`~gradinv_lib.federated.client.ClientUpdate` and is
never told which defence ran), :func:`clean_update` is the undefended update of the same images,
and :func:`update_cosine` the utility measure between the two."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from gradinv_lib.errors import InputError
from gradinv_lib.federated.client import ClientUpdate, simulate_client

from .configs import (DPSGD, Defence, FedAvg, GradientPruning, LargerBatch, MixUp, NoDefence, PrivateBN,
                      SecureAggregation, compose)
from .dp import dp_epsilon, dp_sgd_update


def _stages(defence: Defence) -> dict:
    return {p.stage: p for p in defence.parts() if not isinstance(p, NoDefence)}


def images_needed(defence: Defence, batch_size: int) -> int:
    """Images the defence trains on beyond the client's own ``batch_size``: the rest of a larger
    batch, and the other clients' batches of an aggregation (each as large as the client's)."""
    stages = _stages(defence)
    factor = stages["data"].factor if isinstance(stages.get("data"), LargerBatch) else 1
    clients = stages["server"].clients if "server" in stages else 1
    return int(batch_size) * factor * clients - int(batch_size)


def derangement(n: int, generator: torch.Generator) -> Tensor:
    """A random permutation without fixed points (one cycle through a random order)."""
    if n < 2:
        raise InputError(f"mixup: expected a client batch of at least 2 images to mix, found {n}")
    order = torch.randperm(n, generator=generator)
    partner = torch.empty(n, dtype=torch.long)
    partner[order] = order.roll(-1)
    return partner


def mix_batch(images01: Tensor, weight: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(w x_i + (1 - w) x_partner(i), partner) for a random derangement ``partner``."""
    partner = derangement(images01.shape[0], generator).to(images01.device)
    return weight * images01 + (1 - weight) * images01[partner], partner


def prune_gradients(gradients: dict[str, Tensor], keep: float, scope: str = "tensor") -> dict[str, Tensor]:
    """Zero all but the round(keep * n) entries (at least one) largest in magnitude, per tensor
    (``scope="tensor"``) or over the whole update (``"global"``)."""
    def top(flat: Tensor) -> Tensor:
        mask = torch.zeros_like(flat, dtype=torch.bool)
        mask[flat.abs().topk(max(1, round(keep * flat.numel()))).indices] = True
        return mask

    if scope == "tensor":
        return {n: g * top(g.flatten()).view_as(g) for n, g in gradients.items()}
    flat = torch.cat([g.flatten() for g in gradients.values()])
    masks = top(flat).split([g.numel() for g in gradients.values()])
    return {n: g * m.view_as(g) for (n, g), m in zip(gradients.items(), masks)}


def combine(updates: list[ClientUpdate], weights, batch_size: int, labels: Tensor | None) -> ClientUpdate:
    """The weighted sum of several updates' gradients and BN statistics (weights summing to one),
    with the given batch size and evaluation labels."""
    grads = {n: sum(w * u.gradients[n] for u, w in zip(updates, weights)) for n in updates[0].gradients}
    stats = {k: tuple(sum(w * u.bn_stats[k][i] for u, w in zip(updates, weights)) for i in (0, 1))
             for k in updates[0].bn_stats}
    return dataclasses.replace(updates[0], gradients=grads, bn_stats=stats, batch_size=int(batch_size), labels=labels)


def _step(model, images01: Tensor, labels: Tensor, step: Defence | None, bn_mode: str, seed: int) -> ClientUpdate:
    if isinstance(step, DPSGD):
        return dp_sgd_update(model, images01, labels, step, seed)
    if isinstance(step, PrivateBN):   # no BN statistics leave the client; frozen: BN in eval mode
        update = simulate_client(model, images01, labels, "eval" if step.frozen else bn_mode)
        return dataclasses.replace(update, bn_stats={})
    if isinstance(step, FedAvg):
        return simulate_client(model, images01, labels, bn_mode, local_steps=step.local_steps, lr=step.lr,
                               local_batch_size=step.local_batch_size)
    return simulate_client(model, images01, labels, bn_mode)


def client_update(model, images01: Tensor, labels: Tensor, defence: Defence, bn_mode: str = "train",
                  seed: int = 0) -> ClientUpdate:
    """One client's update under the data, step and update stages of ``defence``.

    MixUp's update is w g(x_mix, y) + (1 - w) g(x_mix, y_partner): the soft-label cross-entropy
    is linear in the label, so this is exact for a FedSGD step (and only for it)."""
    stages = _stages(defence)
    step, mixup = stages.get("step"), stages.get("data")
    if isinstance(mixup, MixUp):
        if step is not None:
            raise InputError(f"mixup: composes with a FedSGD step only, found {step.name}")
        mixed, partner = mix_batch(images01, mixup.weight, torch.Generator().manual_seed(int(seed)))
        parts = [simulate_client(model, mixed, y, bn_mode) for y in (labels, labels[partner.to(labels.device)])]
        update = combine(parts, (mixup.weight, 1 - mixup.weight), images01.shape[0], parts[0].labels)
    else:
        update = _step(model, images01, labels, step, bn_mode, seed)
    pruning = stages.get("update")
    if isinstance(pruning, GradientPruning):
        update = dataclasses.replace(update, gradients=prune_gradients(update.gradients, pruning.keep, pruning.scope))
    return update


def defended_update(model, images01: Tensor, labels: Tensor, defence: Defence = NoDefence(),
                    bn_mode: str = "train", others: tuple[Tensor, Tensor] | None = None,
                    seed: int = 0) -> ClientUpdate:
    """What the server receives when the client holding (images01, labels) runs ``defence``.

    ``others``: (images, labels) of the further images the defence needs
    (:func:`images_needed`): the rest of a larger batch, then the other clients' batches of a
    secure aggregation, in that order (client c trains on images c*n .. (c+1)*n - 1 of own + others).
    ``seed`` draws MixUp's partners and DP's noise (client c uses seed + c). The returned update's
    ``labels`` are every trained image's true labels, for evaluation only.
    """
    need = images_needed(defence, images01.shape[0])
    if need and (others is None or others[0].shape[0] != need):
        found = 0 if others is None else others[0].shape[0]
        raise InputError(f"defence {defence.label()}: expected {need} further images (others), found {found}")
    images, targets = (images01, labels) if not need else (
        torch.cat([images01, others[0].to(images01.device)]), torch.cat([labels, others[1].to(labels.device)]))
    server = _stages(defence).get("server")
    clients = server.clients if isinstance(server, SecureAggregation) else 1
    n = images.shape[0] // clients
    updates = [client_update(model, images[c * n:(c + 1) * n], targets[c * n:(c + 1) * n], defence, bn_mode, seed + c)
               for c in range(clients)]
    if clients == 1:
        return updates[0]
    return combine(updates, [1.0 / clients] * clients, images.shape[0], targets.detach().cpu().clone())


def data_only(defence: Defence) -> Defence:
    """The parts of ``defence`` that decide which images the update covers (larger batch,
    aggregation): the clean reference of :func:`clean_update`."""
    return compose(*(p for p in defence.parts() if isinstance(p, (LargerBatch, SecureAggregation))))


def clean_update(model, images01: Tensor, labels: Tensor, defence: Defence = NoDefence(), bn_mode: str = "train",
                 others: tuple[Tensor, Tensor] | None = None) -> ClientUpdate:
    """The update the server would receive from the same images without the defence: FedSGD on
    the client's batch, or, for a larger batch or an aggregation, on the same larger batch or
    the average of the same clients' FedSGD updates (so those two defences keep cosine 1)."""
    return defended_update(model, images01, labels, data_only(defence), bn_mode, others)


def update_cosine(update: ClientUpdate, reference: ClientUpdate | dict, per_tensor: bool = False) -> float:
    """Cosine similarity of two updates' gradients (float64): all trainable parameters flattened
    together, or with ``per_tensor`` the mean of each parameter tensor's own cosine (every layer
    weighted alike, as the attack's per-layer matching weighs them; the flattened cosine is ruled
    by the largest layer; a tensor whose reference gradient is zero up to rounding, below 1e-6 of
    the largest tensor's norm, such as a bias before a BN layer, has no direction and is left out).
    ``reference`` may be a bare name -> gradient dict."""
    ref = reference.gradients if isinstance(reference, ClientUpdate) else reference
    pairs = [(update.gradients[n].double().flatten().cpu(), ref[n].double().flatten().cpu()) for n in ref]
    if per_tensor:
        largest = max(float(b.norm()) for _, b in pairs)
        cosines = [torch.nn.functional.cosine_similarity(a, b, dim=0) for a, b in pairs if b.norm() > 1e-6 * largest]
        return float(torch.stack(cosines).mean())
    a, b = (torch.cat(t) for t in zip(*pairs))
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def epsilon(defence: Defence, steps: int | None = None) -> float | None:
    """The DP part's epsilon (:func:`~gradinv_lib.defences.dp.dp_epsilon`), None without one."""
    dp = [p for p in defence.parts() if isinstance(p, DPSGD)]
    return dp_epsilon(dp[0], steps) if dp else None
