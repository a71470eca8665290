"""Accuracy of the label multiset (counts with repeats, beyond the paper's eq. 8) on random
CIFAR-10-like batches, FedSGD and FedAvg with K local steps: the table in README
("Repeated labels"). ``python -m gradinv_lib.studies.label_multiset`` prints it.

Two sources of batches, drawn with replacement so labels repeat as in real data:
- the 20 embedded CIFAR-10 test images (foolbox) with random horizontal flips, through a network
  (default the quick LeNet-BN, random init, 10 classes), the client in train mode;
- synthetic features: the final layer alone on nonnegative class features (a ReLU of class
  prototypes plus noise), exact K-step SGD on that layer.
Accuracy of a batch: sum_n min(estimated count_n, true count_n) / B (1 = the multiset is exact).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from gradinv_lib.attack.labels import estimate_label_counts, label_counts_from_fc, recover_labels_from_update
from gradinv_lib.federated.client import simulate_client


def multiset_hits(estimate: Tensor, true_labels: Tensor, num_classes: int) -> float:
    """sum_n min(count_n of ``estimate``, count_n of ``true_labels``) / B."""
    a = torch.bincount(estimate.cpu(), minlength=num_classes)
    b = torch.bincount(true_labels.cpu(), minlength=num_classes)
    return float(torch.minimum(a, b).sum()) / len(true_labels)


def _summary(hits: list[float], distinct: list[float], **setting) -> dict:
    h = torch.tensor(hits)
    return {**setting, "accuracy": h.mean().item(), "exact_batches": (h == 1).double().mean().item(),
            "min_rule_accuracy": torch.tensor(distinct).mean().item(), "trials": len(hits)}


def image_batches_accuracy(model, images01: Tensor, labels: Tensor, batch_size: int, local_steps: int,
                           trials: int, lr: float = 0.01, seed: int = 0) -> dict:
    """Multiset accuracy over ``trials`` batches of ``batch_size`` images drawn with replacement
    (random flips), each client taking ``local_steps`` full-batch SGD steps of ``lr`` (FedSGD for 1)."""
    gen = torch.Generator().manual_seed(seed)
    hits, distinct = [], []
    for _ in range(trials):
        idx = torch.randint(0, len(labels), (batch_size,), generator=gen)
        flip = torch.rand(batch_size, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], images01[idx].flip(-1), images01[idx])
        update = simulate_client(model, x, labels[idx], bn_mode="train", local_steps=local_steps,
                                 lr=lr if local_steps > 1 else None)
        counts = estimate_label_counts(update, model)
        estimate = torch.repeat_interleave(torch.arange(counts.numel()), counts)
        hits.append(multiset_hits(estimate, labels[idx], model.num_classes))
        most = min(batch_size, model.num_classes)  # eq. 8 returns distinct classes
        distinct.append(multiset_hits(recover_labels_from_update(update, model, "min", batch_size=most),
                                      labels[idx], model.num_classes))
    return _summary(hits, distinct, source="embedded CIFAR-10", batch_size=batch_size,
                    local_steps=local_steps, lr=lr)


def synthetic_accuracy(batch_size: int, local_steps: int, trials: int, num_classes: int = 10,
                       features: int = 64, lr: float = 0.1, seed: int = 0) -> dict:
    """Multiset accuracy on synthetic features o = relu(prototype_y + noise) >= 0 through a random
    final layer, the client taking ``local_steps`` exact SGD steps on that layer."""
    gen = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(num_classes, features, generator=gen)
    W0 = torch.randn(num_classes, features, generator=gen) / features ** 0.5
    b0 = torch.zeros(num_classes)
    hits, distinct = [], []
    for _ in range(trials):
        y = torch.randint(0, num_classes, (batch_size,), generator=gen)
        o = F.relu(prototypes[y] + 0.5 * torch.randn(batch_size, features, generator=gen))
        W, b = W0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
        dW, db = torch.zeros_like(W0), torch.zeros_like(b0)
        for _ in range(local_steps):
            gW, gb = torch.autograd.grad(F.cross_entropy(F.linear(o, W, b), y), (W, b))
            dW, db = dW + gW, db + gb
            W, b = (W - lr * gW).detach().requires_grad_(True), (b - lr * gb).detach().requires_grad_(True)
        counts = label_counts_from_fc(dW / local_steps, db / local_steps, W0, b0, batch_size)
        estimate = torch.repeat_interleave(torch.arange(num_classes), counts)
        hits.append(multiset_hits(estimate, y, num_classes))
        top = torch.argsort(dW.amin(1), stable=True)[:min(batch_size, num_classes)]
        distinct.append(multiset_hits(top, y, num_classes))
    return _summary(hits, distinct, source="synthetic features", batch_size=batch_size,
                    local_steps=local_steps, lr=lr)


def multiset_table(batch_sizes=(8, 16, 32, 64), local_steps=(1, 2, 4), trials: int = 20,
                   model=None, seed: int = 0) -> list[dict]:
    """Every (source, B, K) row: the embedded images through ``model`` (default: the quick
    LeNet-BN with 10 classes, random init) and the synthetic features."""
    from gradinv_lib.data import embedded_cifar10
    from gradinv_lib.models import build_model
    model = model or build_model("lenet_bn", weights="random", num_classes=10, seed=seed)
    data = embedded_cifar10()
    rows = []
    for b in batch_sizes:
        for k in local_steps:
            rows.append(image_batches_accuracy(model, data.images, data.labels, b, k, trials, seed=seed))
            rows.append(synthetic_accuracy(b, k, trials, seed=seed))
    return rows


if __name__ == "__main__":
    torch.set_num_threads(1)
    print("| source | B | K | client lr | multiset accuracy | exact batches | min rule (distinct) |")
    print("|---|---|---|---|---|---|---|")
    for r in multiset_table():
        print(f"| {r['source']} | {r['batch_size']} | {r['local_steps']} | {r['lr']} | "
              f"{100 * r['accuracy']:.1f}% | {100 * r['exact_batches']:.0f}% | "
              f"{100 * r['min_rule_accuracy']:.1f}% |", flush=True)
