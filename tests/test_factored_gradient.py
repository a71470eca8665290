"""The classifier's weight gradient as two factors (factored_gradient.py) gives the dense path's
numbers: the factors' algebra, the per-seed pass in both modes, every matching metric's value and
gradient to the images, and whole loop runs; and it is used only where it is exact."""

from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from gradinv_lib.attack.bn_stats import bn_mode
from gradinv_lib.attack.config import InversionConfig
from gradinv_lib.attack.factored_gradient import FactoredGradient, can_factor, dense
from gradinv_lib.attack.inversion import run_inversion
from gradinv_lib.attack.objectives import AttackState, GradientMatching
from gradinv_lib.attack.pipeline import build_objective
from gradinv_lib.attack.seed_gradients import per_seed_gradients
from gradinv_lib.federated.client import simulate_client
from gradinv_lib.models import build_model

PX, B, CLASSES = 32, 3, 40


@pytest.fixture(scope="module")
def setup():
    model = build_model("lenet_bn16", weights="random", num_classes=CLASSES)
    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([2, 9, 31])
    update = simulate_client(model, torch.rand(B, 3, PX, PX, generator=gen), labels, bn_mode="train")
    return model, update, labels


def _images(seeds: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(seeds, B, 3, PX, PX, generator=torch.Generator().manual_seed(seed)).requires_grad_(True)


def test_factors_give_the_dense_gradients_norm_and_inner_products():
    gen = torch.Generator().manual_seed(0)
    a, f, t = (torch.randn(*s, generator=gen, dtype=torch.float64) for s in [(2, 4, 7), (2, 4, 5), (7, 5)])
    g = FactoredGradient(a, f)
    full = torch.einsum("gbc,gbd->gcd", a, f)
    assert g.shape == full.shape
    torch.testing.assert_close(g.dense(), full)
    torch.testing.assert_close(g.sq_norm(), full.flatten(1).square().sum(1))
    torch.testing.assert_close(g.inner(t), (full * t).flatten(1).sum(1))
    torch.testing.assert_close(g.sq_distance(t), (full - t).flatten(1).square().sum(1))
    torch.testing.assert_close(g[1].dense(), full[1:2])
    torch.testing.assert_close(g[0:1].dense(), full[0:1])


@pytest.mark.parametrize("mode,seeds", [("vmap", 3), ("loop", 2), ("vmap", 1)])
def test_factored_pass_equals_the_dense_pass(setup, mode, seeds):
    model, _, labels = setup
    x = _images(seeds)
    with bn_mode(model, "train"):
        plain, plain_bn = per_seed_gradients(model, x, labels, with_bn=True, mode=mode)
        fact, fact_bn = per_seed_gradients(model, x, labels, with_bn=True, mode=mode, factored=True)
    kinds = [isinstance(g, FactoredGradient) for g in fact]
    assert sum(kinds) == 1 and fact[kinds.index(True)].shape == plain[kinds.index(True)].shape
    for a, b in zip(dense(fact), plain):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    for k in plain_bn:
        torch.testing.assert_close(fact_bn[k][1], plain_bn[k][1])


@pytest.mark.parametrize("metric,relative", [("l2", True), ("l2", False), ("sq_l2", False), ("cosine", False)])
@pytest.mark.parametrize("implementation", ["foreach", "reference"])
def test_every_matching_metric_has_the_dense_value_and_image_gradient(setup, metric, relative, implementation):
    model, update, labels = setup
    term = GradientMatching([g for g in update.gradients.values()], metric=metric, relative=relative,
                            implementation=implementation)
    results = []
    for factored in (False, True):
        x = _images(2, seed=5)
        with bn_mode(model, "train"):
            grads, _ = per_seed_gradients(model, x, labels, factored=factored)
        value = term(AttackState(images=x, grads=grads))
        results.append((value, torch.autograd.grad(value, x)[0]))
    (v0, g0), (v1, g1) = results
    torch.testing.assert_close(v1, v0, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(g1, g0, rtol=1e-4, atol=1e-8)


def test_a_run_with_factored_gradients_gives_the_dense_runs_images(setup):
    model, update, labels = setup
    config = InversionConfig(iterations=6, warmup=1, seeds=2, group="lazy", seed=3, log_every=2,
                             weighting="balanced")
    objective = build_objective(model, update, config)
    runs = [run_inversion(model, objective, labels, (3, PX, PX), config, progress=False, client_step=step)
            for step in (None, functools.partial(per_seed_gradients, factored=False))]
    assert (runs[0].images - runs[0].start).abs().max() > 1e-3   # the images moved
    torch.testing.assert_close(runs[0].images, runs[1].images, rtol=0, atol=1e-4)


class _ScaledLogits(nn.Module):
    """A classifier whose logits are its final layer's output times two: not factorable."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.final_layer, self.final_layer_name = model, model.final_layer, model.final_layer_name

    def forward(self, x):
        return 2 * self.inner(x)


def test_factoring_is_used_only_where_it_is_exact(setup):
    model, _, labels = setup
    x = _images(2)
    running = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    assert can_factor(model, x, labels, amp=False)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in running.items())  # probe moved nothing
    assert not can_factor(model, x, labels.float().softmax(0)[:, None].expand(B, CLASSES), amp=False)
    assert not can_factor(model, x, labels, amp=True)
    assert not can_factor(model, x, labels.int(), amp=False)   # one_hot needs int64 indices
    assert not can_factor(_ScaledLogits(model), x, labels, amp=False)
    soft = torch.full((B, CLASSES), 1 / CLASSES)
    grads, _ = per_seed_gradients(model, x, soft, factored=True)
    assert not any(isinstance(g, FactoredGradient) for g in grads)
