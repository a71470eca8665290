"""Named run profiles: ``quick`` (this laptop-class CPU, embedded offline assets, minutes) and
``paper`` (the paper's settings on a GPU with the user's ImageNet and weights)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .config import InversionConfig
from .errors import InputError


@dataclass(frozen=True)
class Profile:
    """Model, data and attack settings for one profile."""

    name: str
    model: str
    weights: str
    resolution: int
    dataset: str                      # "pool" | "imagenet" | "cifar10"
    config: InversionConfig
    label_trials: int
    label_batch_sizes: tuple = ()
    compare_iterations: int | None = None   # per attack in `gradinv compare` (None: config's)
    client_bn_mode: str = "train"   # BN in the client's forward: "train" (batch stats: BN_exact) | "eval"
    notes: str = ""


PROFILES = {
    "quick": Profile(
        name="quick", model="lenet_bn", weights="random", resolution=32, dataset="pool",
        config=InversionConfig(iterations=800, lr=0.1, warmup=20, seeds=4, group="registered",
                               log_every=25, checkpoint_every=100, register_every=25),
        label_trials=50, label_batch_sizes=(1, 8, 32, 64, 96), compare_iterations=800,
        client_bn_mode="train",
        notes="Randomly initialised LeNet with BatchNorm (DLG's network: four 5x5 convolutions, "
              "sigmoid, width 32; models/lenet.py) at 32 px on the embedded pool; batch 8, 800 "
              "iterations, 4 seeds with registered consensus, the 'balanced' term weighting, the "
              "client in train mode (BN normalises with its batch's statistics). Chosen by "
              "measurement at batch 8 (README, 'Quick profile'): the CIFAR ResNet-18 and ReLU "
              "networks stayed at colour blobs within CPU budgets, the pretrained EfficientNet-Lite0 "
              "at noise. Label recovery (Table 1) uses the pretrained Lite0 at 224 px."),
    "paper": Profile(
        name="paper", model="resnet50_moco", weights="default", resolution=224, dataset="imagenet",
        config=InversionConfig(weighting="paper"), label_trials=10_000,
        label_batch_sizes=(1, 8, 32, 64, 96), client_bn_mode="train",
        notes="ResNet-50 (MoCo v2 + linear classifier, or torchvision weights), ImageNet 224 px, "
              "20K iterations, 8 seeds, registered group consistency, the paper's raw loss "
              "constants (weighting 'paper'); needs a GPU."),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise InputError(f"profile: expected one of {', '.join(PROFILES)}, found {name!r}")
    return PROFILES[name]


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# Models are built with the class count of the labels they are attacked with.
DATASET_CLASSES = {"pool": 1000, "embedded": 1000, "imagenet": 1000, "cifar10": 10}


def build_for_dataset(name: str, weights: str, dataset: str, device="cpu", seed: int = 0):
    """``build_model`` with as many classes as ``dataset`` has labels."""
    from .models import build_model
    if dataset not in DATASET_CLASSES:
        raise InputError(f"dataset: expected one of {', '.join(DATASET_CLASSES)}, found {dataset!r}")
    return build_model(name, weights=weights, num_classes=DATASET_CLASSES[dataset], device=device,
                       seed=seed)


def load_dataset(name: str, resolution: int, imagenet: str | None = None):
    """The labelled images a profile draws batches from (LabelledImages or ImageNetFolder)."""
    from .data import ImageNetFolder, embedded_cifar10, embedded_imagenet, load_pool
    loaders = {
        "pool": lambda: load_pool(resolution),
        "embedded": lambda: embedded_imagenet(resolution),
        "cifar10": embedded_cifar10,
        "imagenet": lambda: ImageNetFolder(imagenet, resolution=resolution),
    }
    if name not in loaders:
        raise InputError(f"dataset: expected one of {', '.join(loaders)}, found {name!r}")
    return loaders[name]()
