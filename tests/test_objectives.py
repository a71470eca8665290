"""Objective terms: hand-computed values, composition, and float64 gradcheck of the full
double-backward chain (images -> parameter gradients -> matching loss / BN prior)."""

import pytest
import torch
from conftest import tiny_classifier
from torch import nn

from gradinv_lib.attack.objectives import (AttackState, BNPrior, GradientMatching, GroupConsistency, L2Prior, Objective,
                                           TotalVariation)
from gradinv_lib.attack.seed_gradients import per_seed_gradients


def test_per_layer_l2_is_sum_of_non_squared_norms():
    targets = [torch.zeros(2, 3), torch.zeros(4)]
    grads = [torch.tensor([[[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]]]), torch.tensor([[0.0, 0.0, 5.0, 12.0]])]
    state = AttackState(images=torch.zeros(1, 1, 3, 2, 2), grads=grads)
    assert GradientMatching(targets, "l2")(state).item() == pytest.approx(5 + 13)
    assert GradientMatching(targets, "sq_l2")(state).item() == pytest.approx(25 + 169)
    same = AttackState(images=state.images, grads=[t[None] for t in grads[0][0:1]] + [grads[1]])
    assert GradientMatching([grads[0][0], grads[1][0]], "l2")(
        AttackState(images=state.images, grads=grads)).item() == pytest.approx(0, abs=1e-6)
    assert same is not None


def test_cosine_distance_is_zero_for_parallel_and_two_for_opposite():
    t = [torch.randn(3, 3), torch.randn(5)]
    state = lambda s: AttackState(images=torch.zeros(1, 1, 3, 2, 2), grads=[s * x[None] for x in t])  # noqa: E731
    assert GradientMatching(t, "cosine")(state(2.5)).item() == pytest.approx(0, abs=1e-6)
    assert GradientMatching(t, "cosine")(state(-1.0)).item() == pytest.approx(2, abs=1e-6)


def test_terms_sum_over_seeds_and_priors_have_known_values():
    x = torch.zeros(2, 1, 3, 4, 4)
    x[1] = 1.0  # constant images: no variation
    state = AttackState(images=x, consensus=torch.zeros(1, 3, 4, 4))
    assert TotalVariation()(state).item() == 0
    assert L2Prior()(state).item() == pytest.approx(48 ** 0.5)
    assert GroupConsistency()(state).item() == pytest.approx(48 ** 0.5)
    edge = torch.zeros(1, 1, 1, 2, 2)
    edge[..., 0, 0] = 1.0  # one bright corner pixel: right, down and the down-right diagonal
    assert TotalVariation()(AttackState(images=edge)).item() == pytest.approx(3.0)  # each differ by 1


def test_objective_composes_with_plus_and_times_and_reports_weighted_parts():
    x = torch.rand(1, 2, 3, 4, 4)
    objective = 2.0 * L2Prior() + 0.5 * TotalVariation() + 0.0 * GroupConsistency()
    assert isinstance(objective, Objective)
    assert not objective.needs_consensus  # zero-weight terms are dropped
    total, parts = objective.parts(AttackState(images=x))
    assert parts["l2"].item() == pytest.approx(2.0 * L2Prior()(AttackState(images=x)).item())
    assert total.item() == pytest.approx(parts["l2"].item() + parts["tv"].item())
    assert (3.0 * objective)(AttackState(images=x)).item() == pytest.approx(3 * total.item(), rel=1e-6)


@pytest.mark.parametrize("metric", ["l2", "sq_l2", "cosine"])
@pytest.mark.parametrize("mode", ["vmap", "loop"])
def test_gradient_matching_gradcheck_float64(metric, mode):
    model = tiny_classifier(width=3, act=nn.Tanh, dtype=torch.float64, classes=4)
    labels = torch.tensor([1, 3])
    target_x = torch.rand(2, 3, 5, 5, dtype=torch.float64)
    targets = [g[0] for g in per_seed_gradients(model, target_x[None], labels, mode=mode)[0]]
    term = GradientMatching([t.detach() for t in targets], metric)
    x = torch.rand(2, 2, 3, 5, 5, dtype=torch.float64, requires_grad=True)

    def loss(images):
        grads, _ = per_seed_gradients(model, images, labels, mode=mode)
        return term(AttackState(images=images, grads=grads))

    assert torch.autograd.gradcheck(loss, (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("mode", ["vmap", "loop"])
def test_bn_prior_gradcheck_float64_and_zero_at_the_target_batch(mode):
    model = tiny_classifier(width=3, act=nn.Tanh, dtype=torch.float64, classes=4)
    labels = torch.tensor([0, 2])
    target_x = torch.rand(1, 2, 3, 5, 5, dtype=torch.float64)
    _, stats = per_seed_gradients(model, target_x, labels, with_bn=True, mode=mode)
    prior = BNPrior({k: (m[0], v[0]) for k, (m, v) in stats.items()})

    def loss(images):
        _, bn = per_seed_gradients(model, images, labels, with_bn=True, mode=mode)
        return prior(AttackState(images=images, bn=bn))

    assert loss(target_x).item() == pytest.approx(0, abs=1e-12)
    x = torch.rand(2, 2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(loss, (x,), eps=1e-6, atol=1e-5)


# ----------------------------------------------------------------------------- balanced weighting
def test_relative_gradient_matching_is_one_for_a_zero_gradient_and_scale_free():
    targets = [torch.randn(4, 3), 100.0 * torch.randn(7)]  # layers of very different scales
    zero = AttackState(images=torch.zeros(1, 1, 3, 2, 2), grads=[torch.zeros(1, *t.shape) for t in targets])
    assert GradientMatching(targets, "l2", relative=True)(zero).item() == pytest.approx(1.0)
    assert GradientMatching(targets, "sq_l2", relative=True)(zero).item() == pytest.approx(1.0)
    half = AttackState(images=zero.images, grads=[0.5 * t[None] for t in targets])
    assert GradientMatching(targets, "l2", relative=True)(half).item() == pytest.approx(0.5)
    scaled = [1e-6 * t for t in targets]  # the same problem on a network with tiny gradients
    tiny_half = AttackState(images=zero.images, grads=[0.5 * t[None] for t in scaled])
    assert GradientMatching(scaled, "l2", relative=True)(tiny_half).item() == pytest.approx(0.5)


@pytest.mark.parametrize("term", [TotalVariation, L2Prior, GroupConsistency])
def test_priors_are_per_image_and_normalized_ones_do_not_grow_with_batch_or_resolution(term):
    torch.manual_seed(0)
    one = torch.randn(1, 1, 3, 8, 8)
    state = lambda x: AttackState(images=x, consensus=torch.zeros(x.shape[1:]))  # noqa: E731
    four = one.expand(1, 4, 3, 8, 8).contiguous()
    assert term()(state(four)).item() == pytest.approx(4 * term()(state(one)).item(), rel=1e-5)
    assert term(normalized=True)(state(four)).item() == pytest.approx(
        term(normalized=True)(state(one)).item(), rel=1e-5)
    big = torch.randn(1, 1, 3, 64, 64)  # the same pixel statistics, 64x the pixels
    ratio = term(normalized=True)(state(big)).item() / term(normalized=True)(state(one)).item()
    assert 0.7 < ratio < 1.3, ratio


def test_normalized_bn_prior_averages_layers_scaled_by_channels():
    targets = {"a": (torch.zeros(4), torch.ones(4)), "b": (torch.zeros(16), torch.ones(16))}
    bn = {"a": (torch.ones(1, 4), torch.ones(1, 4)), "b": (torch.ones(1, 16), torch.ones(1, 16))}
    state = AttackState(images=torch.zeros(1, 1, 3, 2, 2), bn=bn)
    assert BNPrior(targets)(state).item() == pytest.approx(2 + 4)   # ||1_4|| + ||1_16||
    assert BNPrior(targets, normalized=True)(state).item() == pytest.approx(1.0)  # each RMS 1


def test_forces_are_each_weighted_terms_image_gradient_norm():
    x = torch.rand(1, 2, 3, 6, 6, requires_grad=True)
    objective = 2.0 * L2Prior() + 0.5 * TotalVariation() + 1.0 * GroupConsistency()
    state = AttackState(images=x, consensus=x.detach()[0].clone())
    forces = objective.forces(state)
    expected = torch.autograd.grad(2.0 * L2Prior()(AttackState(images=x)), x)[0].norm().item()
    assert forces["l2"] == pytest.approx(expected, rel=1e-5)
    assert forces["tv"] > 0
    assert forces["group"] == pytest.approx(0.0, abs=1e-6)  # at the consensus: no pull
