"""Update formats of real federated-learning clients (update_formats): one simulated client batch
saved in every format reads back to the same labels and the same first-iteration loss as gradinv's
tagged file; FedAvg weights too; names with and without 'body.'; frozen parameters; global
weights loaded into the model; the scale and sign checks on the cases they are meant for."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from gradinv_lib.attack.config import InversionConfig
from gradinv_lib.attack.labels import recover_labels_from_update
from gradinv_lib.attack.pipeline import gradinversion
from gradinv_lib.errors import InputError
from gradinv_lib.federated.client import save_update, simulate_client, trainable_parameters
from gradinv_lib.federated.update_checks import check_plausible
from gradinv_lib.federated.update_formats import read_update
from gradinv_lib.profiles import build_for_dataset

LR = 0.1
LABELS = torch.tensor([1, 3, 5, 8])
# one iteration, one seed, BN prior on running statistics (only the tagged file has batch ones)
ONE_STEP = InversionConfig(iterations=1, seeds=1, group="none", warmup=0, bn_target="running")


def quick_model(seed: int = 0):
    """The CLI's model for ``--model lenet_bn --weights random --dataset cifar10`` (10 classes)."""
    return build_for_dataset("lenet_bn", "random", "cifar10", seed=seed)


def client_images(batch: int = 4):
    return torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def user_names(tensors: dict) -> dict:
    """gradinv's names -> the user's network's own (no 'body.' prefix)."""
    return {n.removeprefix("body."): t.detach().clone() for n, t in tensors.items()}


def local_weights(model, update, lr: float = LR) -> dict:
    """The client's state dict after training (buffers as sent: unchanged), as the user names it."""
    local = user_names(model.body.state_dict())
    for name, g in update.gradients.items():
        local[name.removeprefix("body.")] -= lr * g
    return local


def save_npz_list(state: dict, path) -> str:
    """Flower's legacy NumPy API: the arrays in state_dict order, keys arr_0..arr_N."""
    np.savez(path, *[t.numpy() for t in state.values()])
    return str(path)


def write_update_files(model, update, folder) -> dict:
    """``update`` (FedSGD) in every format: name -> (path, read_update keywords)."""
    grads, local = user_names(update.gradients), local_weights(model, update)
    files = {"tagged": (folder / "tagged.pt", {})}
    save_update(update, files["tagged"][0])
    files["gradients_pt"] = (folder / "grads.pt", {"batch_size": 4})
    torch.save(grads, files["gradients_pt"][0])
    files["gradients_body_prefix"] = (folder / "grads_body.pt", {"batch_size": 4})
    torch.save(dict(update.gradients), files["gradients_body_prefix"][0])
    files["gradients_safetensors"] = (folder / "grads.safetensors", {"batch_size": 4})
    save_file({k: v.contiguous() for k, v in grads.items()}, folder / "grads.safetensors")
    files["weights_pt"] = (folder / "local.pt", {"batch_size": 4, "lr": LR})
    torch.save(local, files["weights_pt"][0])
    files["weights_npz_flower"] = (save_npz_list(local, folder / "local.npz"),
                                   {"batch_size": 4, "lr": LR, "format": "weights",
                                    "global_weights": save_npz_list(model.body.state_dict(), folder / "global.npz")})
    files["delta_pt"] = (folder / "delta.pt", {"batch_size": 4, "lr": LR, "format": "delta"})
    torch.save({n: -LR * g for n, g in grads.items()}, files["delta_pt"][0])
    return {name: (str(path), kwargs) for name, (path, kwargs) in files.items()}


def first_loss(model, update) -> float:
    return gradinversion(model, update, ONE_STEP, progress=False).history["total"][0]


@pytest.fixture(scope="module")
def model():
    return quick_model()


@pytest.fixture(scope="module")
def fedsgd(model):
    return simulate_client(model, client_images(), LABELS)


@pytest.fixture(scope="module")
def files(model, fedsgd, tmp_path_factory):
    return write_update_files(model, fedsgd, tmp_path_factory.mktemp("formats"))


def test_every_format_gives_the_tagged_labels_and_first_loss(model, fedsgd, files):
    tagged = read_update(files["tagged"][0], model)
    labels, loss = recover_labels_from_update(tagged, model).tolist(), first_loss(model, tagged)
    assert labels == LABELS.tolist()
    for name, (path, kwargs) in files.items():
        update = read_update(path, model, **kwargs)
        assert update.batch_size == 4 and update.is_fedsgd and set(update.gradients) == set(fedsgd.gradients)
        assert recover_labels_from_update(update, model).tolist() == labels, name
        assert first_loss(model, update) == pytest.approx(loss, rel=1e-4), name
        for n, g in fedsgd.gradients.items():  # weights carry float32 rounding of w - lr g
            torch.testing.assert_close(update.gradients[n], g, rtol=0, atol=5e-6 / LR)


@pytest.mark.parametrize("name, fmt", [("gradients_pt", "gradients"), ("gradients_body_prefix", "gradients"),
                                       ("gradients_safetensors", "gradients"), ("weights_pt", "weights"),
                                       ("delta_pt", "delta")])
def test_auto_detection_tells_weights_from_deltas_and_gradients(model, files, name, fmt):
    path, kwargs = files[name]
    kwargs = {k: v for k, v in kwargs.items() if k != "format"}
    torch.testing.assert_close(read_update(path, model, **kwargs).gradients,
                               read_update(path, model, fmt, **kwargs).gradients)


def test_fedavg_local_weights_match_the_tagged_fedavg_update(model, tmp_path):
    update = simulate_client(model, client_images(), LABELS, local_steps=2, lr=LR, local_batch_size=2)
    save_update(update, tmp_path / "tagged.pt")
    local = save_npz_list(local_weights(model, update), tmp_path / "local.npz")
    read = read_update(local, model, lr=LR, local_steps=2, local_batch_size=2, batch_size=4)
    tagged = read_update(tmp_path / "tagged.pt", model)
    assert not read.is_fedsgd and (read.local_steps, read.lr, read.local_batch_size) == (2, LR, 2)
    assert recover_labels_from_update(read, model).tolist() == recover_labels_from_update(tagged, model).tolist()
    assert first_loss(model, read) == pytest.approx(first_loss(model, tagged), rel=1e-4)


def test_global_weights_file_is_loaded_into_the_model(model, fedsgd, files):
    other = quick_model(seed=1)  # other random weights: the file must set them to the client's start
    path, kwargs = files["weights_npz_flower"]
    update = read_update(path, other, **kwargs)
    for (n, p), q in zip(other.state_dict().items(), model.state_dict().values()):
        torch.testing.assert_close(p, q, msg=n)
    assert other.weights_source.startswith("global weights")
    torch.testing.assert_close(update.gradients, fedsgd.gradients, rtol=0, atol=5e-6 / LR)


def test_frozen_parameters_are_skipped_and_the_sign_check_uses_weight_rows(tmp_path):
    """A frozen final bias: its state-dict entry is read and skipped, the update lacks it, and
    the sign check falls back on dW's rows (LeNet's sigmoid features are nonnegative)."""
    model = quick_model()
    model.final_layer.bias.requires_grad_(False)
    update = simulate_client(model, client_images(), LABELS)
    torch.save(local_weights(model, update), tmp_path / "local.pt")
    read = read_update(tmp_path / "local.pt", model, lr=LR, batch_size=4)
    assert set(read.gradients) == set(trainable_parameters(model)) and "body.fc.bias" not in read.gradients
    assert recover_labels_from_update(read, model).tolist() == LABELS.tolist()
    flipped = {n: -g for n, g in user_names(update.gradients).items()}
    torch.save(flipped, tmp_path / "flipped.pt")
    with pytest.raises(InputError, match="'body.fc.weight' has negative entries for .* sign looks flipped"):
        read_update(tmp_path / "flipped.pt", model, batch_size=4)


def test_scale_and_sign_checks_hold_for_fedsgd_and_fedavg_and_catch_errors(model):
    """The bounds of check_plausible on simulated clients: ||db||_1 <= 2K, at most B negative
    entries of db; a flipped update or one 10x too large is refused."""
    for steps, local_batch in ((1, None), (2, 2), (4, 1), (4, None)):
        update = simulate_client(model, client_images(), LABELS, local_steps=steps,
                                 lr=LR, local_batch_size=local_batch)
        db = update.gradients["body.fc.bias"]
        assert db.abs().sum() <= 2 * steps and (db < 0).sum() <= 4
        check_plausible(update, model, "simulated")
        update.gradients = {n: -g for n, g in update.gradients.items()}
        with pytest.raises(InputError, match="sign looks flipped"):
            check_plausible(update, model, "flipped")
        update.gradients = {n: -g * 2 * steps * 10 / db.abs().sum() for n, g in update.gradients.items()}
        with pytest.raises(InputError, match=f"L1 norm of {steps} mean cross-entropy step"):
            check_plausible(update, model, "scaled")


def test_gradinv_file_metadata_given_must_agree(files, model):
    with pytest.raises(InputError, match="batch_size: the gradinv update records 4, found 3"):
        read_update(files["tagged"][0], model, batch_size=3)
    with pytest.raises(InputError, match="expected gradients, found a gradinv update file"):
        read_update(files["tagged"][0], model, "gradients", batch_size=4)


def test_torchvision_network_from_flower_npz_with_its_own_names(tmp_path):
    """A user's torchvision ResNet-18 (wrap_model), FedAvg K=2: the local weights and the global
    ones as Flower's .npz lists in the network's own state_dict order (no 'body.')."""
    import torchvision

    from gradinv_lib.models import wrap_model
    net = torchvision.models.resnet18(num_classes=10)
    model = wrap_model(net, input_size=32)
    update = simulate_client(model, client_images(), LABELS, local_steps=2, lr=LR)
    save_npz_list(net.state_dict(), tmp_path / "global.npz")
    save_npz_list(local_weights(model, update), tmp_path / "local.npz")
    server = wrap_model(torchvision.models.resnet18(num_classes=10), input_size=32)  # other weights
    read = read_update(tmp_path / "local.npz", server, lr=LR, local_steps=2, batch_size=4,
                       global_weights=tmp_path / "global.npz")
    assert recover_labels_from_update(read, server).tolist() == LABELS.tolist()
    torch.testing.assert_close(read.gradients, update.gradients, rtol=0, atol=5e-6 / LR)
