"""The classifier's weight gradient kept as its two factors, so eq. 3 never materialises it.

Under mean cross-entropy the final Linear layer's weight gradient of a batch is an outer product,
``dW = A^T F`` with ``A = (softmax(z) - onehot(y)) / B`` (B, C) and ``F`` the layer's inputs (B, D).
On the quick network that one tensor (1000 x 2048) is over 90% of the parameters, and every pass
over it (the difference to the target, its norm, their backward, per seed) cost more than the
convolutions. Its squared norm and its inner product with a target need only
``||A^T F||^2 = sum((A A^T) * (F F^T))`` (two B x B Gram matrices) and
``<A^T F, T> = sum(A * (F T^T))`` (B x C): the same values and gradients within float rounding
(tests/test_factored_gradient.py), at O(B (C + D)) memory instead of O(C D) per seed.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor


class FactoredGradient:
    """Per seed, ``a[g].T @ f[g]``: the final layer's weight gradient, never formed.

    Shape: a (G, B, C), f (G, B, D); ``shape`` is that of the dense gradient, (G, C, D).
    """

    def __init__(self, a: Tensor, f: Tensor):
        self.a, self.f = a, f

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.a.shape[0], self.a.shape[2], self.f.shape[2]))

    def __getitem__(self, seeds) -> "FactoredGradient":
        """Select seeds (an index or slice on the first dimension), as for a dense (G, C, D)."""
        if not isinstance(seeds, slice):
            seeds = slice(int(seeds), int(seeds) + 1)
        return FactoredGradient(self.a[seeds], self.f[seeds])

    def dense(self) -> Tensor:
        """The (G, C, D) gradient itself (for checks; the attack never needs it)."""
        return self.a.transpose(1, 2) @ self.f

    def sq_norm(self) -> Tensor:
        """(G,) ||A^T F||^2 = sum((A A^T) * (F F^T))."""
        return ((self.a @ self.a.transpose(1, 2)) * (self.f @ self.f.transpose(1, 2))).sum((1, 2))

    def inner(self, target: Tensor) -> Tensor:
        """(G,) <A^T F, T> = sum(A * (F T^T)) for a (C, D) target."""
        return (self.a * (self.f @ target.T)).sum((1, 2))

    def sq_distance(self, target: Tensor, target_sq: Tensor | None = None) -> Tensor:
        """(G,) ||A^T F - T||^2, assembled in float64 (the three parts nearly cancel near a match);
        ``target_sq``: ||T||^2 in float64 if already known (computed here otherwise)."""
        if target_sq is None:
            target_sq = target.double().square().sum()
        value = self.sq_norm().double() - 2 * self.inner(target).double() + target_sq
        return value.clamp_min(0).to(self.a.dtype)


def sq_norm(g) -> Tensor:
    """(G,) squared norm of each seed's gradient, dense (G, ...) or factored."""
    return g.sq_norm() if isinstance(g, FactoredGradient) else g.flatten(1).square().sum(1)


def inner(g, target: Tensor) -> Tensor:
    """(G,) inner product of each seed's gradient, dense or factored, with ``target``."""
    return g.inner(target) if isinstance(g, FactoredGradient) else (g * target).flatten(1).sum(1)


def dense(grads: list) -> list[Tensor]:
    """The gradient list with every factored entry formed (dense entries unchanged)."""
    return [g.dense() if isinstance(g, FactoredGradient) else g for g in grads]


def logit_gradient(logits: Tensor, labels: Tensor) -> Tensor:
    """A = d(mean cross-entropy)/d logits = (softmax(z) - onehot(y)) / B, in float32 or wider.

    Shape: logits (B, C) (or (G, B, C)), labels (B,) class indices -> the shape of ``logits``."""
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return (z.softmax(-1) - F.one_hot(labels, z.shape[-1]).to(z.dtype)) / labels.numel()


_OUTPUT_IS_LOGITS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


@contextmanager
def final_layer_io(model):
    """Record the final layer's last input and output during the block: {"input", "output"}."""
    seen: dict[str, Tensor] = {}

    def hook(_module, inputs, output):
        seen["input"], seen["output"] = inputs[0], output

    handle = model.final_layer.register_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def can_factor(model, images: Tensor, labels: Tensor, amp: bool) -> bool:
    """Whether the final layer's weight gradient may be factored: class-index labels (not DLG's
    soft ones), fp32, a trainable final weight, and the model returning that layer's output
    unchanged as its logits (checked once per model with a forward pass of one image)."""
    final = getattr(model, "final_layer", None)
    if (amp or final is None or labels.dtype != torch.int64
            or not final.weight.requires_grad or final.weight.dim() != 2):
        return False
    if model not in _OUTPUT_IS_LOGITS:
        modes = [(m, m.training) for m in model.modules()]
        model.eval()  # the probe must not move BN running statistics
        try:
            with torch.no_grad(), final_layer_io(model) as seen:
                logits = model(images.reshape(-1, *images.shape[-3:])[:1].detach())
        finally:
            for m, training in modes:
                m.train(training)
        _OUTPUT_IS_LOGITS[model] = seen.get("output") is logits
    return _OUTPUT_IS_LOGITS[model]
