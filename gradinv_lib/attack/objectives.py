"""Objective terms of GradInversion (eqs. 1, 3, 9, 12) that compose with ``+`` and ``*``.

Every term reads an :class:`AttackState` (the G seeds' images, their per-seed parameter gradients,
BN input statistics and the group consensus) and returns a scalar summed over seeds, so each
seed's update is independent of G. The loop knows nothing about the terms: it asks the objective
which inputs it needs (``needs_bn``, ``needs_consensus``) and calls it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .gradient_distances import DISTANCE_IMPLEMENTATIONS, cosine_distance


@dataclass
class AttackState:
    """What the terms read.

    Shape:
        images: (G, B, C, H, W) normalised images being optimised.
        grads: one (G, *param.shape) tensor per model parameter, in ``model.parameters()`` order.
        bn: BN layer name -> (mean, biased var) of its input, each (G, C).
        consensus: (B, C, H, W) detached group target, or None.
        logits: (G, B, num_classes) of a forward pass that computed no parameter gradients, or
            None (filled by loops that run such a pass, e.g. ``prior_attacks.state``).
    """

    images: Tensor
    grads: list[Tensor] | None = None
    bn: dict[str, tuple[Tensor, Tensor]] | None = None
    consensus: Tensor | None = None
    logits: Tensor | None = None


class Term:
    """A loss term; ``w * term`` weights it, ``a + b`` sums terms into one objective."""

    name = "term"
    needs_grads = False
    needs_bn = False
    needs_consensus = False
    needs_logits = False

    def __call__(self, state: AttackState) -> Tensor:
        raise NotImplementedError

    def items(self) -> list[tuple[float, "Term"]]:
        return [(1.0, self)]

    def __mul__(self, weight: float) -> "Objective":
        return Objective([(float(weight) * w, t) for w, t in self.items()])

    __rmul__ = __mul__

    def __add__(self, other: "Term") -> "Objective":
        return Objective(self.items() + other.items())


class Objective(Term):
    """A weighted sum of terms; :meth:`parts` also returns each weighted term, detached."""

    name = "total"

    def __init__(self, items: list[tuple[float, Term]]):
        self._items = [(w, t) for w, t in items if w != 0.0]

    def items(self):
        return list(self._items)

    def _any_needs(flag: str):
        """A property: whether any term of the sum needs the input ``flag`` names."""
        return property(lambda self: any(getattr(t, flag) for _, t in self._items))

    needs_grads = _any_needs("needs_grads")
    needs_bn = _any_needs("needs_bn")
    needs_consensus = _any_needs("needs_consensus")
    needs_logits = _any_needs("needs_logits")
    del _any_needs

    def parts(self, state: AttackState) -> tuple[Tensor, dict[str, Tensor]]:
        values = {t.name: w * t(state) for w, t in self._items}
        total = torch.stack(list(values.values())).sum()
        return total, {k: v.detach() for k, v in values.items()}

    def __call__(self, state: AttackState) -> Tensor:
        return self.parts(state)[0]

    def forces(self, state: AttackState) -> dict[str, float]:
        """Each weighted term's force on the images: ||d(w * term) / d images||_2 (0 for a term
        that does not depend on them), to see whether one term drowns the others.

        ``state.images`` must require grad and the state be built from them with a graph."""
        out = {}
        for weight, term in self._items:
            value = weight * term(state)
            grad = (torch.autograd.grad(value, state.images, retain_graph=True, allow_unused=True)[0]
                    if value.requires_grad else None)
            out[term.name] = 0.0 if grad is None else float(grad.norm())
        return out


class GradientMatching(Term):
    """L_grad (eq. 3): distance between the seeds' parameter gradients and the client's.

    ``metric``: ``"l2"`` sum over layers of the non-squared L2 norm (the paper's), ``"sq_l2"``
    its square (DLG), ``"cosine"`` one minus cosine similarity over all parameters (Inverting
    Gradients; optional per-layer ``layer_weights``). A "layer" is one parameter tensor.
    ``relative=True`` (the "balanced" weighting; departure): each layer's L2 distance is divided
    by the client's norm of that layer, ||g_l - t_l|| / ||t_l||, and averaged over layers, so the
    term is 1 for a zero gradient whatever the network, resolution or batch size.
    ``implementation`` of the L2 metrics: ``"foreach"`` (fast, batched over layers) or
    ``"reference"`` (one op per layer); both give the same numbers within float rounding.
    """

    name = "grad"
    needs_grads = True

    def __init__(self, targets: list[Tensor], metric: str = "l2", layer_weights=None,
                 implementation: str = "foreach", relative: bool = False):
        if metric not in ("l2", "sq_l2", "cosine"):
            raise ValueError(f"unknown gradient metric {metric!r}")
        if implementation not in DISTANCE_IMPLEMENTATIONS:
            raise ValueError(f"unknown implementation {implementation!r}; expected one of "
                             f"{sorted(DISTANCE_IMPLEMENTATIONS)}")
        self.distance = DISTANCE_IMPLEMENTATIONS[implementation]
        self.targets = [t.detach() for t in targets]
        # ||t||^2 in float64 once, not per iteration: a factored layer's distance needs it (the
        # classifier's target is 1000 x 2048 on the quick network)
        self.target_sq = [t.double().square().sum() for t in self.targets]
        self.metric = metric
        self.layer_weights = list(layer_weights) if layer_weights is not None else [1.0] * len(targets)
        self.relative = relative
        self.layer_scale = None  # (L, 1) factors of the per-layer distances; None: a plain sum
        if relative and metric != "cosine":
            norms = torch.stack([t.norm() for t in self.targets]).clamp_min(1e-30)
            power = 2 if metric == "sq_l2" else 1
            self.layer_scale = (1.0 / (norms ** power * len(self.targets)))[:, None]

    def __call__(self, state: AttackState) -> Tensor:
        if self.metric == "cosine":
            return cosine_distance(state.grads, self.targets, self.layer_weights).sum()
        per_layer = self.distance(state.grads, self.targets, self.metric == "sq_l2", self.target_sq)  # (L, G)
        if self.layer_scale is not None:
            per_layer = per_layer * self.layer_scale.to(per_layer)
        return per_layer.sum()


def _reduce_images(norms: Tensor, pixels: int, normalized: bool) -> Tensor:
    """Per-image values (G, B) to the term: their sum, or (``normalized``) the mean over images of
    value / sqrt(pixels) (an RMS for a norm of ``pixels`` elements), summed over seeds."""
    return (norms / pixels ** 0.5).mean(dim=1).sum() if normalized else norms.sum()


def _image_norms(x: Tensor, normalized: bool) -> Tensor:
    """Each image's L2 norm (``x``: (G, B, ...)) reduced by :func:`_reduce_images`."""
    return _reduce_images(x.flatten(2).norm(dim=2), x[0, 0].numel(), normalized)


class _PerImageTerm(Term):
    """A prior computed per image: raw (``normalized=False``, the paper's constants) sums each
    image's L2 norm; normalized (the "balanced" weighting) averages each image's RMS, so its weight
    means the same at any batch size and resolution. Departure: the paper's norms are over the
    whole batch; per image, a batch's prior no longer weighs more than one image's."""

    def __init__(self, normalized: bool = False):
        self.normalized = normalized


class TotalVariation(_PerImageTerm):
    """R_TV (eq. 9): sum over the 4 neighbour directions of the L2 norm of pixel differences.

    Departure note: the paper writes TV(x) without its form; its constants (1e-4 TV, 1e-5 l2)
    are DeepInversion's, whose TV is this L2-norm variant, so we use that form (per image).
    """

    name = "tv"

    def __call__(self, state: AttackState) -> Tensor:
        x = state.images
        diffs = (
            x[..., :, :-1] - x[..., :, 1:],
            x[..., :-1, :] - x[..., 1:, :],
            x[..., 1:, :-1] - x[..., :-1, 1:],
            x[..., :-1, :-1] - x[..., 1:, 1:],
        )
        norms = sum(d.flatten(2).norm(dim=2) for d in diffs)  # (G, B)
        return _reduce_images(norms, x[0, 0].numel(), self.normalized)


class L2Prior(_PerImageTerm):
    """R_l2 (eq. 9): the L2 norm of each image (per image, summed or RMS-averaged)."""

    name = "l2"

    def __call__(self, state: AttackState) -> Tensor:
        return _image_norms(state.images, self.normalized)


class BNPrior(Term):
    """R_BN (eq. 9): sum over BN layers of ||mu_l(x) - mu_l||_2 + ||var_l(x) - var_l||_2.

    ``targets`` maps BN layer names to (mean, biased var) of shape (C,): the client batch's own
    statistics for BN_exact, the running statistics for BN_approx. ``normalized`` (the "balanced"
    weighting): each layer's norms divided by sqrt(C) and averaged over layers.
    """

    name = "bn"
    needs_bn = True

    def __init__(self, targets: dict[str, tuple[Tensor, Tensor]], normalized: bool = False):
        self.targets = {k: (m.detach(), v.detach()) for k, (m, v) in targets.items()}
        self.normalized = normalized

    def __call__(self, state: AttackState) -> Tensor:
        total = 0.0
        for name, (mean_t, var_t) in self.targets.items():
            mean, var = state.bn[name]
            layer = (mean - mean_t).norm(dim=-1).sum() + (var - var_t).norm(dim=-1).sum()
            total = total + (layer / mean_t.numel() ** 0.5 if self.normalized else layer)
        return total / len(self.targets) if self.normalized and self.targets else total


class GroupConsistency(_PerImageTerm):
    """R_group (eq. 12): each seed's images' L2 distance to the (detached) consensus, per image."""

    name = "group"
    needs_consensus = True

    def __call__(self, state: AttackState) -> Tensor:
        return _image_norms(state.images - state.consensus, self.normalized)


class ClassificationLoss(Term):
    """Cross-entropy of the seeds' logits on given labels (DeepInversion's main loss; Table 4).

    Reads ``state.logits`` when the loop filled them (sharing the forward that records BN
    statistics); otherwise runs its own forward of ``model``. ``labels``: (B,) class indices or
    (B, num_classes) probabilities.
    """

    name = "ce"
    needs_logits = True

    def __init__(self, model, labels: Tensor):
        self.model = model
        self.labels = labels.detach()

    def __call__(self, state: AttackState) -> Tensor:
        logits = state.logits
        if logits is None:  # one forward per seed, so BN in train mode sees each seed's own batch
            logits = torch.stack([self.model(seed_images) for seed_images in state.images])
        per_seed = [torch.nn.functional.cross_entropy(seed_logits.float(), self.labels)
                    for seed_logits in logits]
        return torch.stack(per_seed).sum()


TERMS = {t.name: t for t in (GradientMatching, TotalVariation, L2Prior, BNPrior, GroupConsistency,
                             ClassificationLoss)}
