"""FedAvg clients and the unrolled attack (issue 12): K local SGD steps over mini-batches, shared
as (w0 - wK) / lr; K = 1 over the whole batch is FedSGD exactly."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_classifier

from gradinv_lib.attack.bn_stats import bn_mode
from gradinv_lib.attack.config import InversionConfig
from gradinv_lib.attack.labels import recover_labels_from_update
from gradinv_lib.attack.pipeline import gradinversion
from gradinv_lib.attack.seed_gradients import per_seed_gradients
from gradinv_lib.errors import InputError
from gradinv_lib.federated.client import ClientUpdate, load_update, save_update, simulate_client
from gradinv_lib.federated.fedavg import check_local_training, minibatch_indices, per_seed_local_updates

ONE_STEP = InversionConfig(iterations=1, seeds=1, group="none", warmup=0, log_every=1)


@pytest.fixture
def batch():
    torch.manual_seed(1)
    return torch.rand(4, 3, 16, 16), torch.tensor([0, 3, 5, 7])


def sgd_reference(model, images01, labels, steps, lr, local_batch):
    """(w0 - wK)/lr by torch.optim.SGD on a copy, BN normalising with batch statistics."""
    copy_ = copy.deepcopy(model)
    opt = torch.optim.SGD(copy_.parameters(), lr=lr)
    for idx in minibatch_indices(len(labels), steps, local_batch):
        with bn_mode(copy_, "train"):
            loss = F.cross_entropy(copy_(copy_.normalize(images01[idx])), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {n: (p0 - p1) / lr for (n, p0), p1 in zip(model.named_parameters(), copy_.parameters())}


def test_minibatches_cycle_through_the_batch_in_order():
    assert [i.tolist() for i in minibatch_indices(4, 3, 2)] == [[0, 1], [2, 3], [0, 1]]
    assert [i.tolist() for i in minibatch_indices(3, 2, None)] == [[0, 1, 2], [0, 1, 2]]


def test_fedavg_with_one_full_batch_step_is_fedsgd(tiny, batch):
    x, y = batch
    sgd = simulate_client(tiny, x, y)
    avg = simulate_client(tiny, x, y, local_steps=1, lr=0.3, local_batch_size=4)
    assert avg.is_fedsgd and avg.lr == 0.3
    for name, g in sgd.gradients.items():
        torch.testing.assert_close(avg.gradients[name], g, rtol=0, atol=0)
    # the unrolled attack pass with K = 1 is the FedSGD pass, in value and in its x-gradient
    xs = tiny.normalize(x).unsqueeze(0).requires_grad_(True)
    with bn_mode(tiny, "train"):
        plain, plain_bn = per_seed_gradients(tiny, xs, y, with_bn=True)
        unrolled, unrolled_bn = per_seed_local_updates(tiny, xs, y, with_bn=True, local_steps=1, lr=0.3)
    for a, b in zip(plain, unrolled):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(plain_bn, unrolled_bn)
    dx_plain, = torch.autograd.grad(sum(g.square().sum() for g in plain), xs)
    dx_unrolled, = torch.autograd.grad(sum(g.square().sum() for g in unrolled), xs)
    torch.testing.assert_close(dx_plain, dx_unrolled)
    # and the attack's first iteration is the same through either pass
    update = sgd.without_labels()
    first = gradinversion(tiny, update, ONE_STEP, progress=False).history["total"][0]
    forced = gradinversion(tiny, update, ONE_STEP, progress=False, client_step=functools.partial(
        per_seed_local_updates, local_steps=1, lr=0.3)).history["total"][0]
    assert first == pytest.approx(forced, rel=1e-5)


@pytest.mark.parametrize("steps,local_batch", [(2, 2), (3, 4), (4, 1)])
def test_simulated_update_equals_torch_sgd(tiny, batch, steps, local_batch):
    x, y = batch
    before = {n: p.detach().clone() for n, p in tiny.state_dict().items()}
    update = simulate_client(tiny, x, y, local_steps=steps, lr=0.5, local_batch_size=local_batch)
    reference = sgd_reference(tiny, x, y, steps, 0.5, local_batch)
    for name, g in update.gradients.items():
        torch.testing.assert_close(g, reference[name], rtol=1e-4, atol=1e-5)
    assert not update.is_fedsgd
    assert all(torch.equal(before[n], p) for n, p in tiny.state_dict().items())  # weights untouched


def test_unrolled_pass_at_the_true_images_reproduces_the_update(tiny, batch):
    x, y = batch
    update = simulate_client(tiny, x, y, local_steps=2, lr=0.5, local_batch_size=2)
    with bn_mode(tiny, "train"):
        grads, bn = per_seed_local_updates(tiny, tiny.normalize(x).unsqueeze(0), y, with_bn=True,
                                           local_steps=2, lr=0.5, local_batch_size=2)
    for g, (name, target) in zip(grads, update.gradients.items()):
        torch.testing.assert_close(g[0], target, rtol=1e-4, atol=1e-6)
    for name, (mean, var) in update.bn_stats.items():  # BN_exact: the whole batch at w0
        torch.testing.assert_close(bn[name][0][0], mean)
        torch.testing.assert_close(bn[name][1][0], var)


def test_attack_on_a_fedavg_update_lowers_its_loss(batch):
    model = tiny_classifier(seed=2, act=torch.nn.Sigmoid)
    x, y = batch
    update = simulate_client(model, x, y, local_steps=2, lr=0.5, local_batch_size=2).without_labels()
    config = InversionConfig(iterations=30, seeds=1, group="none", warmup=0, lr=0.1, log_every=10)
    result = gradinversion(model, update, config, progress=False)
    assert sorted(result.labels.tolist()) == sorted(y.tolist())
    assert result.history["grad"][-1] < 0.8 * result.history["grad"][0]


def test_labels_survive_several_local_steps(batch):
    """With nonnegative features (sigmoid) and few classes present, present classes still have the
    only negative rows of the summed final-layer gradient (README, FedAvg)."""
    model = tiny_classifier(seed=3, classes=40, act=torch.nn.Sigmoid)
    x, y = batch
    for steps, local_batch in [(2, 2), (4, 1), (4, 4)]:
        update = simulate_client(model, x, y, local_steps=steps, lr=0.1, local_batch_size=local_batch)
        assert sorted(recover_labels_from_update(update, model).tolist()) == sorted(y.tolist())


def test_local_training_is_validated(tiny, batch):
    x, y = batch
    with pytest.raises(InputError, match="needs the client's learning rate"):
        simulate_client(tiny, x, y, local_steps=2)
    with pytest.raises(InputError, match="local_steps"):
        simulate_client(tiny, x, y, local_steps=0, lr=0.1)
    with pytest.raises(InputError, match=r"local_batch_size: expected an integer in \[1, 4\]"):
        simulate_client(tiny, x, y, local_steps=2, lr=0.1, local_batch_size=5)
    with pytest.raises(InputError, match="positive finite learning rate"):
        check_local_training(4, 2, float("nan"), None)
    with pytest.raises(InputError, match="positive finite learning rate"):
        check_local_training(4, 2, -0.1, 2)


def test_local_training_metadata_is_saved_and_old_files_load_as_fedsgd(tiny, batch, tmp_path):
    x, y = batch
    update = simulate_client(tiny, x, y, local_steps=3, lr=0.25, local_batch_size=2)
    save_update(update, tmp_path / "u.pt")
    back = load_update(tmp_path / "u.pt")
    assert (back.local_steps, back.lr, back.local_batch_size) == (3, 0.25, 2)
    payload = torch.load(tmp_path / "u.pt", weights_only=True)
    for key in ("local_steps", "lr", "local_batch_size"):
        del payload[key]
    torch.save(payload, tmp_path / "old.pt")
    old = load_update(tmp_path / "old.pt")
    assert old.is_fedsgd and old.lr is None
    assert isinstance(old, ClientUpdate)
