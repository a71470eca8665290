"""Bring your own network (issue 12): ``wrap_model`` finds the final Linear, checks it produces
the logits and that the network is twice differentiable, and the attack runs on the result; a
network without BatchNorm runs with the BN prior off, and the result says so."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from gradinv_lib.attack.config import InversionConfig
from gradinv_lib.attack.pipeline import gradinversion
from gradinv_lib.errors import InputError
from gradinv_lib.federated.client import simulate_client
from gradinv_lib.models import wrap_model

TWO_STEPS = InversionConfig(iterations=2, seeds=1, group="none", warmup=0, log_every=1)


class NoBatchNorm(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Sigmoid(), nn.AdaptiveAvgPool2d(2))
        self.head = nn.Linear(32, classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def test_a_torchvision_architecture_is_wrapped_and_attacked():
    torch.manual_seed(0)
    model = wrap_model(torchvision.models.shufflenet_v2_x0_5(num_classes=20), input_size=32)
    assert model.final_layer_path == "fc" and model.num_classes == 20 and model.bn_layers()
    assert all(n.startswith("body.") for n, _ in model.named_parameters())
    x, y = torch.rand(3, 3, 32, 32), torch.tensor([2, 11, 17])
    update = simulate_client(model, x, y).without_labels()
    result = gradinversion(model, update, TWO_STEPS, progress=False)
    assert sorted(result.labels.tolist()) == [2, 11, 17]
    assert result.images.shape == (1, 3, 3, 32, 32) and torch.isfinite(result.images).all()


def test_without_batchnorm_the_bn_prior_is_off_and_recorded():
    model = wrap_model(NoBatchNorm(), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), input_size=16)
    assert model.final_layer_path == "head" and not model.bn_layers()
    update = simulate_client(model, torch.rand(2, 3, 16, 16), torch.tensor([1, 4])).without_labels()
    with pytest.warns(UserWarning, match="no BatchNorm layers: the BN prior is off"):
        result = gradinversion(model, update, TWO_STEPS.replace(bn_target="exact"), progress=False)
    assert result.config.bn_target == "none" and "bn" not in result.history


def test_frozen_parameters_are_not_part_of_the_update():
    net = NoBatchNorm()
    net.features[0].requires_grad_(False)
    model = wrap_model(net, input_size=16)
    update = simulate_client(model, torch.rand(2, 3, 16, 16), torch.tensor([1, 4]))
    assert set(update.gradients) == {"body.head.weight", "body.head.bias"}
    result = gradinversion(model, update.without_labels(), TWO_STEPS.replace(bn_target="none"), progress=False)
    assert torch.isfinite(result.images).all()


class SoftmaxAfter(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 10)

    def forward(self, x):
        return self.fc(x.mean((2, 3))).softmax(1)


@pytest.mark.parametrize("make,kwargs,message", [
    (lambda: torchvision.models.squeezenet1_1(num_classes=10), {}, "found no nn.Linear"),
    (SoftmaxAfter, {}, "does not produce the logits"),
    (lambda: torchvision.models.mobilenet_v3_small(num_classes=10), {}, "no second derivative"),
    (NoBatchNorm, {"final_layer": "features"}, "expected the name of an nn.Linear.*found Sequential"),
    (NoBatchNorm, {"final_layer": "fc"}, "found no such module"),
    (lambda: nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 10)), {}, r"forward pass of \(2, 3, 32, 32\)"),
    (lambda: NoBatchNorm().requires_grad_(False), {}, "expected trainable parameters"),
    (lambda: "resnet18", {}, "expected a torch.nn.Module, found str"),
])
def test_networks_that_cannot_be_attacked_get_one_clear_error(make, kwargs, message):
    with pytest.raises(InputError, match=message) as info:
        wrap_model(make(), **{"input_size": 32, **kwargs})
    assert "\n" not in str(info.value)
