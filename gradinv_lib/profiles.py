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
    notes: str = ""


PROFILES = {
    "quick": Profile(
        name="quick", model="resnet18_cifar", weights="random", resolution=32, dataset="pool",
        config=InversionConfig(iterations=1000, lr=0.1, warmup=20, seeds=1, group="none",
                               alpha_tv=3e-3, log_every=25, checkpoint_every=100,
                               register_every=25),
        label_trials=50, label_batch_sizes=(1, 8, 32, 64, 96), compare_iterations=250,
        notes="Randomly initialised CIFAR-style ResNet-18 (1000 classes) at 32 px on the embedded "
              "pool, 1000 iterations instead of the paper's 20K. Measured here: pretrained "
              "EfficientNet-Lite0 at 64 px stays at noise within such budgets (+1.6 dB after 300 "
              "iterations), so the quick inversions use this stated random-init network; label "
              "recovery uses the pretrained Lite0 (`--model efficientnet_lite0`). alpha_TV is 3e-3 "
              "(paper: 1e-4): with 20x fewer iterations the paper's TV leaves pixel noise; measured "
              "on one pool image at batch 1, PSNR gain over the noise start was +2.9 dB (1e-4), "
              "+3.5 dB (1e-3) and +4.5 dB (3e-3)."),
    "paper": Profile(
        name="paper", model="resnet50_moco", weights="default", resolution=224, dataset="imagenet",
        config=InversionConfig(), label_trials=10_000, label_batch_sizes=(1, 8, 32, 64, 96),
        notes="ResNet-50 (MoCo v2 + linear classifier, or torchvision weights), ImageNet 224 px, "
              "20K iterations, 8 seeds, registered group consistency; needs a GPU."),
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
