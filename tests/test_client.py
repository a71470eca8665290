"""Client simulation and BN statistics: gradients, BN stats and persistence are exact."""

import os
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradinv_lib.attack.bn_stats import bn_mode, record_bn_inputs, running_bn_stats
from gradinv_lib.errors import InputError, MissingAssetError
from gradinv_lib.federated.client import (ClientUpdate, check_update_fits, load_update, save_update, simulate_client,
                                          target_gradients)
from gradinv_lib.models.base import ImageClassifier

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def tiny_bn_net(seed=0):
    """conv-BN2d-ReLU x2, avg-pool, linear-BN1d-ReLU, fc: both BN kinds, cheap on CPU."""
    torch.manual_seed(seed)
    body = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 8, 3, stride=2, padding=1), bn1=nn.BatchNorm2d(8), relu1=nn.ReLU(),
        conv2=nn.Conv2d(8, 16, 3, stride=2, padding=1), bn2=nn.BatchNorm2d(16), relu2=nn.ReLU(),
        pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(),
        lin=nn.Linear(16, 32), bn3=nn.BatchNorm1d(32), relu3=nn.ReLU(), fc=nn.Linear(32, 10)))
    model = ImageClassifier(body=body, final_layer="fc", mean=MEAN, std=STD, name="t", input_size=32)
    # non-trivial running statistics so "eval" and "train" differ
    with torch.no_grad():
        for m in model.bn_layers().values():
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.fixture(scope="module")
def model():
    return tiny_bn_net()


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(4, 3, 32, 32, generator=g), torch.tensor([3, 1, 7, 1])


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_gradients_equal_manual_autograd(model, batch, mode):
    x, y = batch
    upd = simulate_client(model, x, y, bn_mode=mode)
    model.zero_grad()
    if mode == "train":
        model.train()
        for m in model.bn_layers().values():
            m.momentum = 0.0  # reference: batch statistics, running stats left alone
    loss = F.cross_entropy(model(model.normalize(x)), y)
    loss.backward()
    model.eval()
    for m in model.bn_layers().values():
        m.momentum = 0.1
    names = [n for n, _ in model.named_parameters()]
    assert list(upd.gradients) == names
    for n, p in model.named_parameters():
        torch.testing.assert_close(upd.gradients[n], p.grad, rtol=1e-5, atol=1e-7)
    model.zero_grad(set_to_none=True)
    assert upd.batch_size == 4 and upd.image_shape == (3, 32, 32) and upd.bn_mode == mode
    assert torch.equal(upd.labels, y)


def test_bn_stats_are_biased_batch_stats(model, batch):
    x, y = batch
    upd = simulate_client(model, x, y)
    first = model.bn_layers()["body.bn1"]
    with torch.no_grad():
        a = model.body.conv1(model.normalize(x))  # input of body.bn1
    mean = a.mean(dim=(0, 2, 3))
    var = ((a - mean.view(1, -1, 1, 1)) ** 2).mean(dim=(0, 2, 3))  # divide by N*H*W
    torch.testing.assert_close(upd.bn_stats["body.bn1"][0], mean)
    torch.testing.assert_close(upd.bn_stats["body.bn1"][1], var)
    assert set(upd.bn_stats) == set(model.bn_layers())
    assert upd.bn_stats["body.bn1"][0].shape == (first.num_features,)


def test_train_mode_keeps_running_stats_and_modes(model, batch):
    x, y = batch
    before = {k: v.clone() for k, v in model.state_dict().items()}
    simulate_client(model, x, y, bn_mode="train")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not model.training and all(not m.training for m in model.modules())
    assert all(m.track_running_stats for m in model.bn_layers().values())


def test_train_mode_uses_batch_statistics(model, batch):
    x, y = batch
    g_eval = simulate_client(model, x, y, "eval").gradients["body.fc.weight"]
    g_train = simulate_client(model, x, y, "train").gradients["body.fc.weight"]
    assert not torch.allclose(g_eval, g_train)


def test_record_bn_inputs_keeps_graph_and_removes_hooks_on_error(model, batch):
    x, _ = batch
    xn = model.normalize(x).requires_grad_(True)
    with pytest.raises(RuntimeError, match="boom"):
        with record_bn_inputs(model) as stats:
            model(xn)
            raise RuntimeError("boom")
    assert stats["body.bn1"][0].requires_grad
    assert all(len(m._forward_hooks) == 0 for m in model.bn_layers().values())


def test_record_bn_inputs_under_vmap_and_grad():
    body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 3))
    model = ImageClassifier(body, "5", MEAN, STD, "tiny", 8).eval()
    xs = torch.rand(2, 5, 3, 8, 8)  # 2 independent candidate batches of 5 images

    def f(x):
        with record_bn_inputs(model) as stats:
            out = model(x).sum()
        return out, stats

    grads, stats = torch.func.vmap(torch.func.grad(f, has_aux=True))(xs)
    assert grads.shape == xs.shape
    with torch.no_grad():
        a = model.body[0](xs[1])
    torch.testing.assert_close(stats["body.1"][1][1], a.var(dim=(0, 2, 3), correction=0))


def test_running_stats_bias_correction(model):
    raw = running_bn_stats(model)
    bn1 = model.bn_layers()["body.bn1"]
    assert torch.equal(raw["body.bn1"][1], bn1.running_var)
    corr = running_bn_stats(model, batch_size=2, image_shape=(3, 32, 32))
    n = 2 * 16 * 16  # body.bn1 sees 16x16 maps at 32 px input (stride-2 conv1)
    torch.testing.assert_close(corr["body.bn1"][1], bn1.running_var * (n - 1) / n)
    n1d = 2  # BatchNorm1d: one element per image and channel
    torch.testing.assert_close(corr["body.bn3"][1], model.bn_layers()["body.bn3"].running_var * (n1d - 1) / n1d)


def test_bn_mode_rejects_unknown(model):
    with pytest.raises(InputError, match="found 'batch'"):
        with bn_mode(model, "batch"):
            pass


@pytest.mark.parametrize("bad, msg", [
    (lambda x: x[0], "expected shape \\(B, 3, H, W\\)"),
    (lambda x: x * 2, "range"),
    (lambda x: (x * 255).to(torch.uint8), "floating"),
    (lambda x: x.masked_fill(x > 0.99, float("nan")), "finite"),
])
def test_image_validation(model, batch, bad, msg):
    x, y = batch
    with pytest.raises(InputError, match=msg):
        simulate_client(model, bad(x), y)


@pytest.mark.parametrize("labels, msg", [
    (torch.tensor([1, 2, 3]), "expected shape \\(4,\\)"),
    (torch.tensor([1, 2, 3, 10]), "\\[0, 10\\)"),
    (torch.tensor([1.0, 2, 3, 4]), "int64"),
])
def test_label_validation(model, batch, labels, msg):
    with pytest.raises(InputError, match=msg):
        simulate_client(model, batch[0], labels)


def test_save_load_roundtrip_bit_exact(model, batch, tmp_path):
    upd = simulate_client(model, *batch, bn_mode="train")
    path = tmp_path / "sub" / "u.pt"
    save_update(upd, path)
    back = load_update(path)
    assert [f for f in os.listdir(path.parent)] == ["u.pt"]  # no temporary file left
    assert list(back.gradients) == list(upd.gradients)
    assert all(torch.equal(back.gradients[n], g) for n, g in upd.gradients.items())
    assert all(torch.equal(back.bn_stats[n][i], s[i]) for n, s in upd.bn_stats.items() for i in (0, 1))
    assert (back.batch_size, back.image_shape, back.model_name, back.bn_mode) == (4, (3, 32, 32), "t", "train")
    assert torch.equal(back.labels, upd.labels)
    save_update(upd.without_labels(), path)
    assert load_update(path).labels is None
    check_update_fits(back, model)


def test_load_errors(model, batch, tmp_path):
    with pytest.raises(MissingAssetError, match="expected a file at"):
        load_update(tmp_path / "nope.pt")
    good = tmp_path / "u.pt"
    save_update(simulate_client(model, *batch), good)
    data = good.read_bytes()
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="not a gradinv client update: .*trunc.pt"):
        load_update(trunc)
    foreign = tmp_path / "foreign.pt"
    torch.save(model.state_dict(), foreign)
    with pytest.raises(InputError, match="not a gradinv client update: .*format tag"):
        load_update(foreign)
    text = tmp_path / "text.pt"
    text.write_text("hello")
    with pytest.raises(InputError, match="not a gradinv client update"):
        load_update(text)


def test_check_update_fits_names_offending_tensor(model, batch):
    upd = simulate_client(model, *batch)
    grads = dict(upd.gradients)
    grads["body.fc.weight"] = torch.zeros(10, 7)
    bad = ClientUpdate(grads, upd.bn_stats, 4, (3, 32, 32), "t")
    with pytest.raises(InputError, match=r"'body.fc.weight'.*expected shape \(10, 32\), found \(10, 7\)"):
        check_update_fits(bad, model)
    grads = dict(upd.gradients)
    del grads["body.conv1.weight"]
    with pytest.raises(InputError, match="body.conv1.weight"):
        check_update_fits(ClientUpdate(grads, upd.bn_stats, 4, (3, 32, 32), "t"), model)
    grads = dict(upd.gradients)
    grads["body.bn2.bias"] = grads["body.bn2.bias"] * float("nan")
    with pytest.raises(InputError, match="body.bn2.bias.*finite"):
        check_update_fits(ClientUpdate(grads, upd.bn_stats, 4, (3, 32, 32), "t"), model)
    stats = dict(upd.bn_stats)
    stats["body.bn1"] = (torch.zeros(3), torch.ones(3))
    with pytest.raises(InputError, match=r"body.bn1.*expected shape \(8,\), found \(3,\)"):
        check_update_fits(ClientUpdate(upd.gradients, stats, 4, (3, 32, 32), "t"), model)


def test_target_gradients_order(model, batch):
    upd = simulate_client(model, *batch)
    tg = target_gradients(upd, model)
    assert len(tg) == len(list(model.parameters()))
    assert all(t.shape == p.shape for t, p in zip(tg, model.parameters()))
