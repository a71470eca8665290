"""The fast paths of the loop give the reference paths' numbers (issue #6): foreach vs per-layer
gradient matching, vmap vs loop per-seed gradients, the two-pass BN statistics vs torch.var, and
whole loop runs; and the loop's iteration never reads a value back to the host."""

from __future__ import annotations

import pytest
import torch

from gradinv_lib.attack.bn_stats import channel_stats, channel_stats_reference
from gradinv_lib.attack.config import InversionConfig
from gradinv_lib.attack.inversion import InversionLoop, run_inversion
from gradinv_lib.attack.objectives import AttackState, GradientMatching
from gradinv_lib.attack.pipeline import build_objective
from gradinv_lib.attack.seed_gradients import _vmap_gradients, per_seed_gradients
from gradinv_lib.bench.speed import with_reference_matching
from gradinv_lib.federated.client import simulate_client
from gradinv_lib.models import build_model

PX, B = 16, 2


@pytest.fixture(scope="module")
def setup():
    model = build_model("resnet18_cifar", weights="random")
    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([3, 7])
    update = simulate_client(model, torch.rand(B, 3, PX, PX, generator=gen), labels)
    return model, update, labels


@pytest.mark.parametrize("metric", ["l2", "sq_l2"])
@pytest.mark.parametrize("seeds", [1, 3])
def test_foreach_matching_equals_reference_value_and_gradient(metric, seeds):
    gen = torch.Generator().manual_seed(1)
    shapes = [(4, 3, 3, 3), (4,), (10, 4), (10,)]
    targets = [torch.randn(s, generator=gen) for s in shapes]
    grads = [torch.randn((seeds, *s), generator=gen, requires_grad=True) for s in shapes]
    grads[1].data[-1] = targets[1]  # one layer of one seed matches exactly: the norm's kink
    values, derivs = [], []
    for impl in ("foreach", "reference"):
        term = GradientMatching(targets, metric=metric, implementation=impl)
        loss = term(AttackState(images=torch.zeros(seeds, 1), grads=grads))
        values.append(loss.detach())
        derivs.append(torch.autograd.grad(loss, grads))
    torch.testing.assert_close(values[0], values[1], rtol=1e-6, atol=1e-6)
    for a, b in zip(*derivs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(torch.cat([d.flatten() for d in derivs[0]])).all()


def test_two_pass_bn_stats_equal_torch_var_even_far_from_zero_mean():
    x = torch.randn(4, 8, 5, 5, generator=torch.Generator().manual_seed(2)) * 0.5 + 30.0
    mean, var = channel_stats(x)
    torch.testing.assert_close(mean, x.mean(dim=[0, 2, 3]))
    torch.testing.assert_close(var, x.var(dim=[0, 2, 3], correction=0), rtol=1e-4, atol=1e-6)
    mean1, var1 = channel_stats(x[:, :, 0, 0])  # BN1d input (N, C)
    torch.testing.assert_close(var1, x[:, :, 0, 0].var(dim=0, correction=0), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("shape", [(3, 4, 6, 5, 5), (3, 5, 7)])
def test_fused_bn_stats_backward_equals_autograd_under_vmap(shape):
    x = (torch.randn(shape, generator=torch.Generator().manual_seed(6)) * 2 + 3).requires_grad_()
    weights = torch.linspace(-1, 1, shape[2])
    results = []
    for stats in (channel_stats, channel_stats_reference):
        mean, var = torch.func.vmap(stats)(x)
        loss = (mean * weights).sum() + var.sqrt().sum()
        first = torch.autograd.grad(loss, x, create_graph=True)[0]
        second = torch.autograd.grad((first * x).sum(), x)[0]  # differentiable backward too
        only_var = torch.autograd.grad(stats(x[0])[1].sum(), x)[0]  # mean's gradient is None
        results.append((mean, var, first, second, only_var))
    for fused, ref in zip(*results):
        torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-6)


def test_vmap_and_loop_seed_gradients_agree(setup):
    model, _, labels = setup
    x = torch.randn(3, B, 3, PX, PX, generator=torch.Generator().manual_seed(3), requires_grad=True)
    fast_g, fast_bn = per_seed_gradients(model, x, labels, with_bn=True, mode="vmap")
    ref_g, ref_bn = per_seed_gradients(model, x, labels, with_bn=True, mode="loop")
    for a, b in zip(fast_g, ref_g):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert fast_bn.keys() == ref_bn.keys() and len(fast_bn) == len(model.bn_layers())
    for k in fast_bn:
        torch.testing.assert_close(fast_bn[k][0], ref_bn[k][0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(fast_bn[k][1], ref_bn[k][1], rtol=1e-4, atol=1e-5)
    # double backward to the images agrees too
    da = torch.autograd.grad(sum(g.square().sum() for g in fast_g), x)[0]
    db = torch.autograd.grad(sum(g.square().sum() for g in ref_g), x)[0]
    torch.testing.assert_close(da, db, rtol=1e-3, atol=1e-5)


def test_one_seed_plain_pass_equals_vmap(setup):
    model, _, labels = setup
    x = torch.randn(1, B, 3, PX, PX, generator=torch.Generator().manual_seed(4))
    plain, plain_bn = per_seed_gradients(model, x, labels, with_bn=True, mode="vmap")
    vmapped, vmapped_bn = _vmap_gradients(model, x, labels, True, False)
    for a, b in zip(plain, vmapped):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    for k in plain_bn:
        torch.testing.assert_close(plain_bn[k][1], vmapped_bn[k][1], rtol=1e-4, atol=1e-5)


def test_fast_and_reference_loops_give_the_same_images(setup):
    model, update, labels = setup
    config = InversionConfig(iterations=4, warmup=1, seeds=2, group="lazy", seed=5, log_every=2)
    objective = build_objective(model, update, config)
    runs = {
        "fast": run_inversion(model, objective, labels, (3, PX, PX), config, progress=False),
        "reference": run_inversion(model, with_reference_matching(objective), labels, (3, PX, PX),
                                   config.replace(seed_mode="loop"), progress=False),
    }
    fast, ref = runs["fast"], runs["reference"]
    start = run_inversion(model, objective, labels, (3, PX, PX), config.replace(iterations=1),
                          progress=False).images
    assert (fast.images - start).abs().max() > 1e-3  # the images moved
    torch.testing.assert_close(fast.images, ref.images, rtol=0, atol=1e-4)
    for name in fast.history:
        torch.testing.assert_close(torch.tensor(fast.history[name]), torch.tensor(ref.history[name]),
                                   rtol=1e-4, atol=1e-6)


def test_loop_iteration_reads_nothing_back_to_the_host(setup, monkeypatch):
    model, update, labels = setup
    config = InversionConfig(iterations=100, warmup=2, seeds=2, group="registered")
    loop = InversionLoop(model, build_objective(model, update, config), labels, (3, PX, PX), config)

    real_item = torch.Tensor.item

    def forbidden(self, *args, **kwargs):
        # Adam's step counter is a CPU scalar even for CUDA images (capturable=False): no sync
        if any(self is state.get("step") for state in loop.opt.state.values()):
            return real_item(self, *args, **kwargs)
        raise AssertionError("host read in the loop's hot path")
    for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    for t in range(3):  # before registration starts (25% of the iterations)
        loop.step(t)
    monkeypatch.undo()
    assert torch.isfinite(loop.history[:3]).all() and (loop.history[:3, 0] > 0).all()
