"""The one interface every model in gradinv exposes: a classifier on normalised input that names
its final linear layer and its BatchNorm layers by module, and owns its input normalisation."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from gradinv_lib.errors import InputError


class ImageClassifier(nn.Module):
    """Wrap a classification network with its input normalisation and its attack-relevant modules.

    ``forward`` takes images already in the network's normalised space (what the attack optimises);
    ``normalize``/``denormalize`` convert from/to pixel space [0, 1].

    Args:
        body: the network; maps normalised (N, 3, H, W) images to (N, num_classes) logits.
        final_layer: dotted module path of the final ``nn.Linear`` inside ``body`` (e.g. ``"fc"``).
        mean, std: per-channel normalisation, ``x_norm = (x01 - mean) / std``.
        name: registry name of the architecture; ``input_size``: its native resolution.
    """

    def __init__(self, body: nn.Module, final_layer: str, mean, std, name: str, input_size: int):
        super().__init__()
        self.body = body
        self.final_layer_path = final_layer
        self.name = name
        self.input_size = int(input_size)
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        try:
            found = body.get_submodule(final_layer)
        except AttributeError:
            found = None
        if not isinstance(found, nn.Linear):
            what = "no such module" if found is None else type(found).__name__
            raise InputError(f"{name}: expected the final layer body.{final_layer} to be an nn.Linear "
                             f"(label recovery and the gradient targets need it), found {what}")

    def forward(self, x_normalized: torch.Tensor) -> torch.Tensor:
        return self.body(x_normalized)

    def normalize(self, images01: torch.Tensor) -> torch.Tensor:
        return (images01 - self.mean) / self.std

    def denormalize(self, x_normalized: torch.Tensor) -> torch.Tensor:
        return x_normalized * self.std + self.mean

    @property
    def final_layer(self) -> nn.Linear:
        return self.body.get_submodule(self.final_layer_path)

    @property
    def final_layer_name(self) -> str:
        """Prefix of the final layer's parameters in ``named_parameters()`` (e.g. ``"body.fc"``)."""
        return f"body.{self.final_layer_path}"

    @property
    def num_classes(self) -> int:
        return self.final_layer.out_features

    def bn_layers(self) -> "OrderedDict[str, nn.modules.batchnorm._BatchNorm]":
        """Every BatchNorm layer, keyed by its module name, in forward (registration) order."""
        return OrderedDict(
            (n, m) for n, m in self.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
        )
