"""What the course notebooks call besides the student's code: the quick network and the embedded
pool, a client's update (FedSGD, BN in train mode), the attack loop (eq. 1) run on the student's
own objective, the scores the autograder checks, and final-layer gradients for label recovery
(eq. 8). Every number is computed by the library; the student's functions are only ever called."""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from gradinv_lib.attack.bn_stats import bn_mode
from gradinv_lib.attack.config import InversionConfig
from gradinv_lib.attack.inversion import InversionResult, run_inversion
from gradinv_lib.attack.labels import recover_labels_from_update
from gradinv_lib.attack.objectives import AttackState, Term
from gradinv_lib.attack.seed_gradients import per_seed_gradients
from gradinv_lib.data import load_pool, sample_batch
from gradinv_lib.errors import InputError
from gradinv_lib.federated.client import ClientUpdate, simulate_client, target_gradients
from gradinv_lib.metrics import match_by_labels, penultimate_features, pixel_correlation_nn, psnr, reference_images
from gradinv_lib.models import build_model

QUICK_MODEL, QUICK_RESOLUTION = "lenet_bn", 32   # the quick profile's network and image side


@functools.lru_cache(maxsize=2)
def quick_setting(resolution: int = QUICK_RESOLUTION):
    """(the quick network, randomly initialised with its fixed seed; the embedded pool)."""
    return build_model(QUICK_MODEL, num_classes=1000), load_pool(resolution=resolution)


def client_batch(batch_size: int, seed: int = 0):
    """(a batch of distinct labels from the pool, the FedSGD update a training client shares)."""
    model, pool = quick_setting()
    batch = sample_batch(pool, batch_size, seed=seed)
    return batch, simulate_client(model, batch.images, batch.labels, bn_mode="train")


def parameter_gradients(images: Tensor, labels: Tensor, update: ClientUpdate) -> list[Tensor]:
    """The quick network's parameter gradients of the mean cross-entropy of normalised ``images``
    (B, C, H, W), in ``model.parameters()`` order, differentiable w.r.t. the images (eq. 3 needs
    their second derivative); BN normalises as in the client's forward."""
    model, _ = quick_setting()
    with bn_mode(model, update.bn_mode):
        grads, _ = per_seed_gradients(model, images[None], labels, factored=False)
    return [g[0] for g in grads]


def with_gradients(update: ClientUpdate, transform: Callable[[dict], dict]) -> ClientUpdate:
    """The update with ``transform(name -> gradient)`` applied to its gradients (a defence)."""
    gradients = transform({n: g.clone() for n, g in update.gradients.items()})
    if not isinstance(gradients, dict) or set(gradients) != set(update.gradients):
        raise InputError("a defence must return a dict with the same parameter names as the update")
    return dataclasses.replace(update, gradients=gradients)


class StudentObjective(Term):
    """The student's ``objective(grads, targets, images) -> scalar`` as a loss term of the loop:
    called once per seed with that seed's parameter gradients (a list in ``model.parameters()``
    order), the client's, and the seed's normalised images (B, C, H, W)."""

    name = "student"
    needs_grads = True

    def __init__(self, objective: Callable, targets: list[Tensor]):
        self.objective, self.targets = objective, [t.detach() for t in targets]

    def __call__(self, state: AttackState) -> Tensor:
        values = [self.objective([g[s] for g in state.grads], self.targets, state.images[s])
                  for s in range(state.images.shape[0])]
        return torch.stack([torch.as_tensor(v) for v in values]).sum()


def invert(objective: Callable, update: ClientUpdate, iterations: int = 400, seed: int = 0,
           lr: float = 0.1) -> InversionResult:
    """Recover the batch behind ``update`` by minimising the student's objective (eq. 1): one seed,
    Adam with cosine decay and Langevin noise (sec. 3.5), no BN or group prior; the labels come
    from the library's min rule (eq. 8). Every parameter gradient is dense (never factored)."""
    model, _ = quick_setting()
    labels = recover_labels_from_update(update, model)
    config = InversionConfig(iterations=int(iterations), seeds=1, group="none", bn_target="none", lr=lr,
                             warmup=min(20, int(iterations)), seed=seed, log_every=max(1, int(iterations) // 10))
    term = 1.0 * StudentObjective(objective, target_gradients(update, model))  # an Objective
    with bn_mode(model, update.bn_mode):
        return run_inversion(model, term, labels, update.image_shape, config, progress=False,
                             client_step=functools.partial(per_seed_gradients, factored=False))


def score(result: InversionResult, batch) -> dict:
    """What the autograder checks: mean plain PSNR of the reconstruction, of the noise it started
    from and of each original's flat mean colour, all paired with the originals by label, and how
    many images are identified in the pool by mean-removed pixel correlation."""
    _, pool = quick_setting()
    recon = result.images[0]
    perm = match_by_labels(result.labels, batch.labels, recon, batch.images)
    originals = batch.images[perm]
    refs = reference_images(originals, result.start)
    index = {image_id: i for i, image_id in enumerate(pool.ids)}
    truth = torch.tensor([index[batch.ids[int(j)]] for j in perm])
    hits = pixel_correlation_nn(recon, pool.images, truth)["hits"]
    return {"psnr": psnr(recon, originals).mean().item(),
            "noise_psnr": psnr(refs["noise start"], originals).mean().item(),
            "mean_colour_psnr": psnr(refs["mean colour"], originals).mean().item(),
            "identified": int(torch.as_tensor(hits).sum()), "batch_size": len(perm),
            "originals": originals, "reconstruction": recon}


class LabelBench:
    """Final-layer weight gradients of random batches (eq. 8's input), from the pool's avg-pool
    features computed once: a batch's gradient is that of the mean cross-entropy of the final
    layer alone (eval-mode BN, so the features do not depend on the batch)."""

    def __init__(self, resolution: int = 64, model: str = "efficientnet_lite0"):
        self.model = build_model(model)
        self.pool = load_pool(resolution=resolution)
        self.features = penultimate_features(self.model, self.pool.images)
        self._row = {image_id: i for i, image_id in enumerate(self.pool.ids)}

    def batch(self, batch_size: int, seed: int, repeats: int = 1) -> tuple[Tensor, Tensor]:
        """(true labels (B,), dW (num_classes, features)) of one batch; ``repeats`` > 1 gives each
        label that many images."""
        drawn = sample_batch(self.pool, batch_size, seed=seed, distinct_labels=repeats == 1, repeats=repeats)
        rows = torch.tensor([self._row[i] for i in drawn.ids])
        fc = self.model.final_layer
        loss = F.cross_entropy(fc(self.features[rows]), drawn.labels)
        return drawn.labels, torch.autograd.grad(loss, fc.weight)[0].detach()

    def accuracy(self, rule: Callable, batch_size: int, trials: int, seed: int = 0) -> float:
        """Mean fraction of each batch's true labels among ``rule(dW, batch_size)`` (Table 1),
        over ``trials`` batches of distinct labels drawn with seeds seed, seed + 1, ..."""
        hits = []
        for t in range(int(trials)):
            labels, dW = self.batch(batch_size, seed + t)
            hits.append(torch.isin(labels, torch.as_tensor(rule(dW, batch_size))).double().mean())
        return torch.stack(hits).mean().item()
