"""Batch label recovery from the final layer's gradient (paper sec. 3.2, eq. 8), plus label counts.

For the final layer z = W o + b (W: N classes x M features), one image's gradient is
dW_i = (p_i - onehot(y_i)) o_i^T and db_i = p_i - onehot(y_i); the update holds their batch
means. Features o >= 0 (after ReLU/ReLU6 and average pooling), so the row of an absent class is
>= 0 everywhere, and the row of a present class is negative at the features its own images use.

Label counting (beyond the paper, which assumes distinct labels) is documented in
:func:`label_counts_from_fc`.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from gradinv_lib.errors import InputError
from gradinv_lib.metrics import penultimate_features

from .bn_stats import bn_mode as _bn_mode

# rule name -> per-class score (N,) from dW_FC (N, M); the K most negative scores are the labels
LABEL_RULES: dict[str, Callable[[Tensor], Tensor]] = {
    "min": lambda g: g.amin(dim=1),  # GradInversion, eq. 8
    "sum": lambda g: g.sum(dim=1),   # iDLG extended to batches (baseline of Table 1)
}


def _check_rule(rule: str) -> Callable[[Tensor], Tensor]:
    if rule not in LABEL_RULES:
        raise InputError(f"label rule: expected one of {sorted(LABEL_RULES)}, found {rule!r}")
    return LABEL_RULES[rule]


def _check_fc_grad(g: Tensor, batch_size: int, name: str = "final layer weight gradient") -> None:
    if not isinstance(g, Tensor) or g.dim() != 2:
        raise InputError(f"{name}: expected a (num_classes, features) tensor, found "
                         f"{tuple(g.shape) if isinstance(g, Tensor) else type(g).__name__}")
    if not torch.isfinite(g).all():
        raise InputError(f"{name}: expected finite values, found NaN or inf")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or not 1 <= batch_size <= g.shape[0]:
        raise InputError(f"batch_size: expected an integer in [1, num_classes={g.shape[0]}] "
                         f"(distinct labels), found {batch_size}")


def recover_labels(fc_weight_grad: Tensor, batch_size: int, rule: str = "min") -> Tensor:
    """The ``batch_size`` classes with the most negative rule score, sorted ascending (eq. 8).

    ``rule="min"``: score_n = min_m dW[n, m]; ``rule="sum"``: score_n = sum_m dW[n, m].
    Assumes distinct labels in the batch (the paper's setting). With repeated labels it still
    returns ``batch_size`` DISTINCT classes: the present ones (negative rows), filled up with
    absent classes; use :func:`recover_label_multiset` to estimate repeats.

    Shape:
        fc_weight_grad: (N, M) -> (batch_size,) int64.
    """
    score_fn = _check_rule(rule)
    _check_fc_grad(fc_weight_grad, batch_size)
    score = score_fn(fc_weight_grad.detach().double())
    return torch.argsort(score, stable=True)[: int(batch_size)].sort().values.cpu()


def fc_gradients(update, model) -> tuple[Tensor, Tensor | None]:
    """(dW, db) of the final layer, found by module name (``model.final_layer_name``), not position."""
    wname = f"{model.final_layer_name}.weight"
    if wname not in update.gradients:
        raise InputError(f"update lacks the final layer's weight gradient {wname!r} "
                         f"(found {len(update.gradients)} gradients)")
    db = update.gradients.get(f"{model.final_layer_name}.bias")
    return update.gradients[wname], db


def recover_labels_from_update(update, model, rule: str = "min", batch_size: int | None = None) -> Tensor:
    """:func:`recover_labels` on a :class:`~gradinv_lib.federated.client.ClientUpdate`; ``batch_size``
    defaults to ``update.batch_size``. Never reads ``update.labels``. ``rule="multiset"``:
    :func:`recover_label_multiset` (repeats allowed), so every attack can take GradInversion's rule."""
    if rule == "multiset":
        return recover_label_multiset(update, model, batch_size)
    dW, _ = fc_gradients(update, model)
    return recover_labels(dW, update.batch_size if batch_size is None else batch_size, rule)


# ----------------------------------------------------------------------------- label counts
def _apportion(estimate: Tensor, total: int) -> Tensor:
    """Integers >= 1 summing to ``total``, proportional to ``estimate`` (largest remainder)."""
    x = estimate * (total / estimate.sum())
    counts = x.floor().clamp_min(1)
    while counts.sum() != total:
        if counts.sum() < total:
            counts[torch.argmax(x - counts)] += 1
        else:
            slack = torch.where(counts > 1, x - counts, torch.full_like(x, float("inf")))
            counts[torch.argmin(slack)] -= 1
    return counts.long()


COUNT_ITERATIONS = 10  # fixed-point refinements of the per-class spill-over (step 4 below)


def _own_prob(W: Tensor, b: Tensor, f: Tensor, classes: Tensor) -> Tensor:
    """softmax(W f_k + b) at class ``classes[k]``, for each row f_k of ``f``."""
    return torch.softmax(F.linear(f, W, b), dim=1).gather(1, classes[:, None]).squeeze(1)


def _class_features_and_counts(dW, db, spill, spill_row, W, b, present, B):
    """Step 3: a_n, class feature f_n, confidence q_n and real-valued count c_n per present class."""
    a = (spill - db[present]).clamp_min(1e-12)
    f = (spill_row - dW[present]) / a[:, None]
    c = B * a / (1 - _own_prob(W, b, f, present)).clamp_min(1e-6)
    return f, c


def label_counts_from_fc(dW: Tensor, db: Tensor, W: Tensor, b: Tensor, batch_size: int) -> Tensor:
    """How many images of each class the batch holds, from the final layer's gradients.

    Method ("re-classify the class features"), with B = batch_size and p_i = softmax(W o_i + b):

    1. Present classes: rows of dW with a negative entry (absent rows are >= 0 since o >= 0),
       at most B of them, most negative minima first.
    2. Initial spill-over (mass a class gets from images of OTHER classes): for an absent class
       db_n = mean_i p_in exactly; their mean s is used for every class, and
       s * o_bar, o_bar = sum_absent dW[n] / sum_absent db_n, for the matching part of its dW row.
    3. For a present class n, a_n = spill_n - db_n ~= (1/B) sum_{i: y_i = n} (1 - p_in) and
       f_n = (spill_row_n - dW[n]) / a_n ~= the (1 - p)-weighted mean feature of the class-n
       images. Re-classifying it gives their confidence q_n = softmax(W f_n + b)_n, and the
       count c_n = B * a_n / (1 - q_n) (exact for one image when the spill-over is exact).
    4. ``COUNT_ITERATIONS`` times: per-class spill-over re-estimated from the current class
       features and counts, spill_n = (1/B) sum_{k != n} c_k softmax(W f_k + b)_n (and the same
       weights on f_k for the row), then step 3 again.
    5. The estimates are clipped to [1, B - #present + 1] and apportioned to integers >= 1 summing
       to B (largest remainder), which also absorbs a common scale error.

    Assumptions: non-negative features; images of one class have similar features and
    confidence. Limits: a class whose images are all classified with confidence ~1 leaves almost
    no signal (for any final-layer method) and can be missed in step 1; measured accuracy is in
    tests/test_labels.py.

    Shape:
        dW: (N, M), db: (N,), W: (N, M), b: (N,) -> counts (N,) int64 summing to batch_size.
    """
    _check_fc_grad(dW, 1)
    if db is None or not torch.isfinite(db).all():
        raise InputError("label counts: expected a finite final-layer bias gradient, found "
                         f"{'none (layer without bias)' if db is None else 'NaN or inf'}")
    B = int(batch_size)
    if B < 1:
        raise InputError(f"batch_size: expected a positive integer, found {batch_size}")
    dW, db, W, b = (t.detach().double().cpu() for t in (dW, db, W, b))
    minima = dW.amin(dim=1)
    n_present = int(min(max((minima < 0).sum().item(), 1), B))
    present = torch.argsort(minima, stable=True)[:n_present]
    absent = minima >= 0
    absent[present] = False
    s = db[absent].mean() if absent.any() else db.new_zeros(())
    mass = db[absent].sum()
    o_bar = dW[absent].sum(0) / mass if mass > 0 else dW.new_zeros(dW.shape[1])
    f, c = _class_features_and_counts(dW, db, s, s * o_bar, W, b, present, B)
    own = (torch.arange(n_present), present)
    for _ in range(COUNT_ITERATIONS):
        w = c[:, None] * torch.softmax(F.linear(f, W, b), dim=1)[:, present] / B  # (P, P): k -> n
        w[own[0], own[0]] = 0  # spill-over from OTHER classes only
        f, c = _class_features_and_counts(dW, db, w.sum(0), w.T @ f, W, b, present, B)
    counts = torch.zeros(dW.shape[0], dtype=torch.long)
    counts[present] = _apportion(c.clamp(1, B - n_present + 1), B)
    return counts


def estimate_label_counts(update, model, batch_size: int | None = None) -> Tensor:
    """Per-class image counts (N,) of a client update; see :func:`label_counts_from_fc`.

    FedAvg (K local steps of b images, beyond the paper): the update holds
    sum_k (1/b) sum_{i in step k} (p_i^(k) - onehot(y_i)) (o_i^(k) for dW). When every image is
    used m = K b / B times, its onehot part is -(K / B) count_n, so (dW, db) / K has exactly
    FedSGD's form with p and o averaged over the steps; it is read with the GLOBAL weights
    (the weights at the midpoint of the steps measured worse, README). Otherwise the counts
    weigh each image by its number of uses.
    """
    dW, db = fc_gradients(update, model)
    fc = model.final_layer
    if fc.bias is None:
        raise InputError(f"label counts need the final layer's bias; {model.final_layer_name} has none")
    k = int(update.local_steps)
    return label_counts_from_fc(dW / k, None if db is None else db / k, fc.weight, fc.bias,
                                update.batch_size if batch_size is None else batch_size)


def recover_label_multiset(update, model, batch_size: int | None = None) -> Tensor:
    """The batch's labels WITH repeats, sorted ascending: each class repeated by its estimated count."""
    counts = estimate_label_counts(update, model, batch_size)
    return torch.repeat_interleave(torch.arange(counts.numel()), counts)


# ----------------------------------------------------------------------------- evaluation (Table 1)
def _sample_distinct(labels: Tensor, batch_size: int, gen: torch.Generator, images: Tensor) -> Tensor:
    """Indices of one batch of distinct labels, drawn by ``gradinv_lib.data.sampler.sample_batch``
    on an index-tagged view of the data set (its ``ids`` are the row indices)."""
    from gradinv_lib.data.images import LabelledImages
    from gradinv_lib.data.sampler import sample_batch

    view = LabelledImages(images=images, labels=labels, ids=list(range(len(labels))),
                          pseudo=torch.zeros(len(labels), dtype=torch.bool), source="label evaluation")
    return torch.as_tensor(sample_batch(view, batch_size, seed=gen, distinct_labels=True).ids)


def _fc_weight_grads_cached(model, features: Tensor, labels: Tensor, idx: Tensor) -> Tensor:
    """Batch-mean CE gradients of the final layer's weight for many batches at once (eval-mode BN:
    the features before the final layer do not depend on the batch), by vmapped autograd.

    Shape:
        features: (P, M), labels: (P,), idx: (T, B) -> (T, N, M).
    """
    fc = model.final_layer
    w, b = fc.weight.detach(), None if fc.bias is None else fc.bias.detach()
    loss = lambda weight, o, y: F.cross_entropy(F.linear(o, weight, b), y)  # noqa: E731
    return torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(w, features[idx], labels[idx])


def _fc_weight_grad_forward(model, images01: Tensor, labels: Tensor, mode: str) -> Tensor:
    """Final-layer weight gradient of one batch by a full forward (any BN mode), autograd w.r.t.
    that one parameter only."""
    with _bn_mode(model, mode):
        loss = F.cross_entropy(model(model.normalize(images01)), labels)
        return torch.autograd.grad(loss, model.final_layer.weight)[0]


def evaluate_label_recovery(model, dataset_images01, dataset_labels: Tensor | None = None,
                            batch_size: int = 8, trials: int = 100, rule: str = "min", seed: int = 0,
                            sampler: Callable | None = None, bn_mode: str = "eval",
                            chunk: int = 64) -> dict:
    """Label recovery accuracy over random batches of distinct labels (Table 1).

    ``dataset_images01``: (P, 3, H, W) tensor with ``dataset_labels`` (P,), or a LabelledImages-like
    object with ``.images``/``.labels``. ``sampler(labels, batch_size, generator) -> indices (B,)``
    defaults to ``gradinv_lib.data.sampler.sample_batch`` with distinct labels; batches are
    reproducible from ``seed``. Only the final layer's weight gradient is computed: in "eval" BN
    mode from features computed once per image and vmapped over trials; in "train" mode by one
    forward per batch.

    Returns:
        dict(accuracy = mean fraction of true labels recovered, exact_batches = fraction of batches
        recovered entirely, trials, batch_size, rule).
    """
    _check_rule(rule)
    if isinstance(trials, bool) or int(trials) != trials or trials < 1:
        raise InputError(f"trials: expected a positive integer, found {trials!r}")
    if dataset_labels is None:
        dataset_images01, dataset_labels = dataset_images01.images, dataset_images01.labels
    labels = torch.as_tensor(dataset_labels, dtype=torch.long)
    gen = torch.Generator().manual_seed(int(seed))
    draw = sampler or (lambda lab, k, g: _sample_distinct(lab, k, g, dataset_images01))
    idx = torch.stack([torch.as_tensor(draw(labels, batch_size, gen), dtype=torch.long) for _ in range(trials)])
    if bn_mode == "eval":
        feats = penultimate_features(model, dataset_images01, chunk)
        grads = torch.cat([_fc_weight_grads_cached(model, feats, labels, part) for part in idx.split(chunk)])
    else:
        grads = torch.stack([_fc_weight_grad_forward(model, dataset_images01[i], labels[i], bn_mode) for i in idx])
    hits = torch.stack([
        torch.isin(labels[i], recover_labels(g, batch_size, rule)).double().mean()
        for i, g in zip(idx, grads)
    ])
    return dict(accuracy=hits.mean().item(), exact_batches=(hits == 1).double().mean().item(),
                trials=int(trials), batch_size=int(batch_size), rule=rule)

