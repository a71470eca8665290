"""DP-SGD's client step through Opacus (per-sample gradients, clipping, Gaussian noise) and its
privacy accounting (epsilon for a stated delta, sampling rate and number of steps).

Opacus refuses BatchNorm (its running statistics are buffers, and batch statistics mix the
samples whose gradients DP-SGD must keep apart). The DP client therefore trains a copy of the
network whose BN layers are frozen: the eval-mode affine map with the running statistics held as
constants (same parameter names), which is what a BN network in eval mode computes.
"""

from __future__ import annotations

import copy
import math
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradinv_lib.federated.client import ClientUpdate, trainable_parameters, validate_images01, validate_labels

from .configs import DPSGD


class FrozenBatchNorm(nn.Module):
    """BatchNorm in eval mode with its running statistics as constants (no buffers), keeping the
    original layer's ``weight`` and ``bias`` parameters. Shape: (N, C, ...) -> (N, C, ...)."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        self.weight, self.bias, self.eps = bn.weight, bn.bias, bn.eps
        self.mean = bn.running_mean.detach().clone()
        self.var = bn.running_var.detach().clone()

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.mean, self.var, self.weight, self.bias, False, 0.0, self.eps)


def frozen_bn_copy(model) -> nn.Module:
    """A deep copy of ``model`` with every BatchNorm layer replaced by :class:`FrozenBatchNorm`
    (``named_parameters()`` unchanged), so Opacus can compute per-sample gradients."""
    net = copy.deepcopy(model)
    for name, module in list(net.named_modules()):
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            parent, _, child = name.rpartition(".")
            setattr(net.get_submodule(parent) if parent else net, child, FrozenBatchNorm(module))
    return net


def _per_sample_backward(model, images01: Tensor, labels: Tensor):
    """Opacus' per-sample gradients (``p.grad_sample``) of the cross-entropy on the frozen-BN copy:
    (the copy's trainable parameters by name, the GradSampleModule; call ``remove_hooks`` after)."""
    from opacus import GradSampleModule

    validate_images01(images01)
    validate_labels(labels, images01.shape[0], model.num_classes)
    net = frozen_bn_copy(model).train()     # Opacus records activations only in training mode
    params = trainable_parameters(net)
    device = next(iter(params.values())).device
    with warnings.catch_warnings():         # full backward hooks on inputs that need no gradient
        warnings.simplefilter("ignore")
        wrapped = GradSampleModule(net)
        F.cross_entropy(wrapped(model.normalize(images01.to(device))), labels.to(device)).backward()
    return params, wrapped


def per_sample_norms(model, images01: Tensor, labels: Tensor) -> Tensor:
    """The L2 norm of each image's own gradient (all trainable parameters, frozen BN), as DP-SGD
    clips it. Shape: images01 (B, 3, H, W), labels (B,) -> (B,)."""
    params, wrapped = _per_sample_backward(model, images01, labels)
    norms = torch.stack([p.grad_sample.flatten(1).norm(dim=1) for p in params.values()], 1).norm(dim=1)
    wrapped.remove_hooks()
    return norms.detach().cpu()


def dp_sgd_update(model, images01: Tensor, labels: Tensor, config: DPSGD, seed: int = 0) -> ClientUpdate:
    """One DP-SGD step's gradient: Opacus' per-sample gradients of the cross-entropy on the
    frozen-BN copy, each clipped to ``config.clip``, summed, plus N(0, (noise * clip)^2) noise
    (``seed``), divided by B (Opacus' DPOptimizer.pre_step). No BN statistics are shared.

    Shape: images01 (B, 3, H, W) in [0, 1]; labels (B,).
    """
    from opacus.optimizers import DPOptimizer

    params, wrapped = _per_sample_backward(model, images01, labels)
    device = next(iter(params.values())).device
    with warnings.catch_warnings():         # secure_mode off: noise from torch's generator, seeded
        warnings.simplefilter("ignore")
        optimizer = DPOptimizer(torch.optim.SGD(list(params.values()), lr=0.0), noise_multiplier=config.noise,
                                max_grad_norm=config.clip, expected_batch_size=int(images01.shape[0]),
                                generator=torch.Generator(device=device).manual_seed(int(seed)))
        optimizer.pre_step()
    gradients = {n: p.grad.detach().clone() for n, p in params.items()}
    wrapped.remove_hooks()
    return ClientUpdate(gradients=gradients, bn_stats={}, batch_size=int(images01.shape[0]),
                        image_shape=tuple(int(s) for s in images01.shape[1:]), model_name=str(model.name),
                        bn_mode="eval", labels=labels.detach().cpu().clone())


def dp_epsilon(config: DPSGD, steps: int | None = None) -> float:
    """epsilon of ``steps`` (default ``config.steps``) DP-SGD steps at ``config.sample_rate`` for
    ``config.delta``, from Opacus' RDP accountant; inf without noise. The subsampling
    amplification assumes Poisson-sampled batches from a data set of about 1/sample_rate batches."""
    if config.noise == 0:
        return math.inf
    from opacus.accountants import RDPAccountant
    accountant = RDPAccountant()
    accountant.history = [(config.noise, config.sample_rate, int(steps or config.steps))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(accountant.get_epsilon(config.delta))
