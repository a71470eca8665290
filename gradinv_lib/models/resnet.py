"""ResNets: torchvision ResNet-18/50, a CIFAR-style ResNet-18 for 32 px, and conversion of MoCo
checkpoints (pretraining ``module.encoder_q.*`` and linear-classifier ``module.fc.*``) to them."""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torchvision.models import resnet18, resnet50
from torchvision.models.resnet import BasicBlock, ResNet

from gradinv_lib.errors import InputError

from .weights import load_checkpoint, load_into, unwrap_state_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

MOCO_PREFIX = "module.encoder_q."


def torchvision_resnet18(num_classes: int = 1000) -> ResNet:
    return resnet18(weights=None, num_classes=num_classes)


def torchvision_resnet50(num_classes: int = 1000) -> ResNet:
    return resnet50(weights=None, num_classes=num_classes)


def cifar_resnet18(num_classes: int = 10) -> ResNet:
    """ResNet-18 for 32 px input: 3x3 stride-1 stem, no max-pool, BasicBlocks [2, 2, 2, 2]."""
    net = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes)
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    net.maxpool = nn.Identity()
    return net


def load_plain(body: nn.Module, path, classifier=None) -> str:
    """Load a plain (optionally ``module.``-prefixed / ``state_dict``-wrapped) state dict, strictly."""
    if classifier is not None:
        raise InputError("classifier_weights: expected None for this model (only resnet50_moco takes "
                         f"a separate classifier file), found {classifier}")
    load_into(body, unwrap_state_dict(load_checkpoint(path)), f"weights file {path}")
    return f"pretrained: {path}"


def convert_moco_state_dict(ckpt: dict) -> dict:
    """ResNet state dict from a MoCo checkpoint.

    Pretraining checkpoints (``module.encoder_q.*``): the query encoder, projection head
    (``fc.*``: MLP for v2, 128-d linear for v1) dropped. Linear-classification checkpoints
    (``module.*`` with ``fc`` the trained classifier): kept whole.
    """
    sd = ckpt["state_dict"] if isinstance(ckpt.get("state_dict"), dict) else ckpt
    if any(k.startswith(MOCO_PREFIX) for k in sd):
        return {k[len(MOCO_PREFIX):]: v for k, v in sd.items()
                if k.startswith(MOCO_PREFIX) and not k[len(MOCO_PREFIX):].startswith("fc.")}
    return unwrap_state_dict(sd)


def classifier_from_checkpoint(ckpt: dict, source: str) -> dict:
    """``{"weight", "bias"}`` of the final linear layer from a MoCo lincls (or plain) checkpoint."""
    sd = unwrap_state_dict(ckpt)
    if "fc.weight" in sd and "fc.bias" in sd:
        return {"weight": sd["fc.weight"], "bias": sd["fc.bias"]}
    if set(sd) >= {"weight", "bias"}:
        return {"weight": sd["weight"], "bias": sd["bias"]}
    raise InputError(f"classifier file {source}: expected keys 'module.fc.weight'/'module.fc.bias' "
                     f"(MoCo lincls) or 'fc.weight'/'fc.bias', found {sorted(sd)[:8]}")


def load_moco(body: ResNet, path, classifier=None) -> str:
    """Load a MoCo (v1/v2) ResNet-50 checkpoint, plus an optional linear-classifier checkpoint.

    Without a classifier (in either file) ``fc`` keeps its random initialisation: a warning says so.
    """
    sd = convert_moco_state_dict(load_checkpoint(path))
    has_fc = "fc.weight" in sd
    if classifier is not None:
        fc = classifier_from_checkpoint(load_checkpoint(classifier), classifier)
        sd.update({"fc.weight": fc["weight"], "fc.bias": fc["bias"]})
    elif not has_fc:
        sd.update({f"fc.{k}": v for k, v in body.fc.state_dict().items()})
    load_into(body, sd, f"MoCo checkpoint {path}")
    if classifier is not None:
        return f"pretrained: {path} (MoCo backbone) + classifier: {classifier}"
    if has_fc:
        return f"pretrained: {path} (MoCo, with its linear classifier)"
    warnings.warn(f"MoCo checkpoint {path} has no linear classifier: fc is RANDOMLY initialised; "
                  "pass classifier_weights=<MoCo lincls checkpoint> for a trained classifier",
                  stacklevel=3)
    return f"pretrained: {path} (MoCo backbone); fc random init (no classifier file given)"
