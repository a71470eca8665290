"""Damaged client updates (issue 21, list 3) are refused by ``gradinv invert --update`` with one
line naming the tensor and the likely mistake, on a batch of 8 CIFAR-10 images with repeated
labels (where 2B >= classes, so the old sign check was off); correct updates pass."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_update_formats import local_weights, quick_model, save_npz_list

from gradinv_lib.cli.app import main
from gradinv_lib.data import embedded_cifar10
from gradinv_lib.errors import InputError
from gradinv_lib.federated.client import simulate_client
from gradinv_lib.federated.update_checks import absent_class_calibration, check_plausible
from gradinv_lib.federated.update_formats import read_update

LR = 0.1
MODEL = ["--model", "lenet_bn", "--weights", "random", "--dataset", "cifar10", "--device", "cpu"]


@pytest.fixture(scope="module")
def flower(tmp_path_factory):
    """A FedSGD client on the first 8 embedded CIFAR-10 images (labels 0,1,3,6,6,6,8,8) and its
    Flower-style files: global and local weights as .npz lists in state_dict order."""
    folder = tmp_path_factory.mktemp("flower")
    model, data = quick_model(), embedded_cifar10()
    update = simulate_client(model, data.images[:8], data.labels[:8])
    local = local_weights(model, update, LR)
    files = {"global": save_npz_list(model.body.state_dict(), folder / "global.npz"),
             "local": save_npz_list(local, folder / "local.npz")}
    np.savez(folder / "half.npz", *[t.numpy().astype(np.float16) if t.is_floating_point() else t.numpy()
                                     for t in local.values()])
    files["half"] = str(folder / "half.npz")
    swapped = dict(local)
    swapped["features.1.weight"], swapped["features.1.bias"] = local["features.1.bias"], local["features.1.weight"]
    files["bn swapped"] = save_npz_list(swapped, folder / "bn_swapped.npz")
    torch.save({n: -LR * g for n, g in _user(update.gradients).items()}, folder / "delta.pt")
    torch.save({n: LR * g for n, g in _user(update.gradients).items()}, folder / "flipped_delta.pt")
    files.update(delta=str(folder / "delta.pt"), flipped_delta=str(folder / "flipped_delta.pt"))
    return model, update, files


def _user(tensors: dict) -> dict:
    return {n.removeprefix("body."): t.detach().clone() for n, t in tensors.items()}


def invert(capsys, tmp_path, update, *extra):
    """``gradinv invert`` in-process: (exit code, stderr lines)."""
    capsys.readouterr()
    code = main(["invert", *MODEL, "--update", str(update), "--iterations", "1", "--seeds", "1",
                 "--bn", "running", "--no-progress", "--out", str(tmp_path / "out"), *extra])
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


CASES = {  # name -> (update file key, options (@key: that file), expected cause)
    "delta with flipped sign": ("flipped_delta", ["--format", "delta", "--client-lr", str(LR)],
                                "the sign looks flipped"),
    "global and local swapped": ("global", ["--global-weights", "@local", "--format", "weights",
                                            "--client-lr", str(LR)], "the global and local weights look swapped"),
    "zero update": ("local", ["--global-weights", "@local", "--client-lr", str(LR)], "every gradient is zero"),
    "BN weight and bias swapped": ("bn swapped", ["--global-weights", "@global", "--client-lr", str(LR)],
                                   "'features.1.weight' and 'features.1.bias' look swapped"),
    "float16 weights": ("half", ["--global-weights", "@global", "--client-lr", str(LR)],
                        "'features.0.weight' is torch.float16: local weights rounded to half precision"),
    "lr 100x too large": ("local", ["--global-weights", "@global", "--client-lr", str(100 * LR)],
                          "look ~100x too small: is the client's learning rate right"),
    "batch size too small": ("delta", ["--client-lr", str(LR)], "is the batch size right (batch_size=4"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_damaged_update_refused_in_one_line(flower, tmp_path, capsys, case):
    _, _, files = flower
    key, options, expected = CASES[case]
    options = [files[o[1:]] if o.startswith("@") else o for o in options]
    batch = ["--batch-size", "4" if case == "batch size too small" else "8"]
    code, err = invert(capsys, tmp_path, files[key], *options, *batch)
    assert code == 2 and len(err) == 1, err
    assert expected in err[0], err[0]


def test_correct_files_pass_and_no_update_checks_skips(flower, tmp_path, capsys):
    _, _, files = flower
    for key, options in (("local", ["--global-weights", files["global"]]), ("delta", [])):
        code, err = invert(capsys, tmp_path, files[key], *options, "--client-lr", str(LR), "--batch-size", "8")
        assert code == 0, err
    code, err = invert(capsys, tmp_path, files["flipped_delta"], "--format", "delta", "--client-lr",
                       str(LR), "--batch-size", "8", "--no-update-checks")
    assert code == 0, err


def test_half_precision_gradients_are_read_exactly(flower, tmp_path):
    model, update, _ = flower
    half = {n: g.half() for n, g in _user(update.gradients).items()}
    torch.save(half, tmp_path / "half_grads.pt")
    read = read_update(tmp_path / "half_grads.pt", model, "gradients", batch_size=8)
    assert all(torch.equal(read.gradients[f"body.{n}"], g.float()) for n, g in half.items())


@pytest.mark.parametrize("steps,lr", [(1, None), (3, 0.01), (3, 0.1)])
def test_calibration_of_correct_updates(flower, steps, lr):
    """Fact 3 of update_checks: r ~ 1 for FedSGD, >= ~1 after K steps; 100x smaller is refused."""
    model, _, _ = flower
    data = embedded_cifar10()
    update = simulate_client(model, data.images[8:16], data.labels[8:16], local_steps=steps, lr=lr)
    fc = model.final_layer
    r = absent_class_calibration(update.gradients["body.fc.weight"], update.gradients["body.fc.bias"],
                                 fc.weight, fc.bias)
    assert 0.8 < r < 1.2 if steps == 1 else r > 0.8
    check_plausible(update, model, "correct")
    small = dataclasses.replace(update, gradients={n: g / 100 for n, g in update.gradients.items()})
    with pytest.raises(InputError, match="too small"):
        check_plausible(small, model, "lr 100x")
