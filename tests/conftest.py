"""Shared fixtures: tiny differentiable classifiers that keep the suite fast on 2 CPU cores."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

from gradinv_lib.models.base import ImageClassifier


def tiny_classifier(seed=0, classes=10, width=8, act=nn.ReLU, dtype=torch.float32, bn=True):
    """conv-BN-act-conv-act-avgpool-fc on (N, 3, H, W), wrapped as an ImageClassifier."""
    torch.manual_seed(seed)
    layers = [("conv1", nn.Conv2d(3, width, 3, padding=1))]
    if bn:
        layers.append(("bn1", nn.BatchNorm2d(width)))
    layers += [("act1", act()), ("conv2", nn.Conv2d(width, width, 3, padding=1)), ("act2", act()),
               ("pool", nn.AdaptiveAvgPool2d(1)), ("flat", nn.Flatten()), ("fc", nn.Linear(width, classes))]
    body = nn.Sequential(OrderedDict(layers))
    if bn:  # non-trivial running statistics, as a trained network has
        body.bn1.running_mean.uniform_(-0.2, 0.2)
        body.bn1.running_var.uniform_(0.5, 1.5)
    model = ImageClassifier(body, "fc", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "tiny", 16)
    return model.to(dtype).eval()


@pytest.fixture
def tiny():
    return tiny_classifier()
