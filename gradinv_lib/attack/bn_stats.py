"""BatchNorm input statistics: the targets of the BN fidelity prior R_BN (paper eq. 9, sec. 3.3).

Two sources of targets:

* BN_exact: the statistics of the client's own batch at the input of every BN layer, recorded by
  :func:`record_bn_inputs` (what synchronised/global BN shares in distributed training).
* BN_approx: the network's running statistics, :func:`running_bn_stats`.

Variance convention. Everything in this module is a BIASED variance (divide by the number of
elements n per channel), because that is what the optimised batch's own variance is. PyTorch's
``running_var`` is an EMA of UNBIASED batch variances (Bessel correction with n = N*H*W elements
per channel for BN2d, n = N for BN1d), i.e. an estimate of the population variance sigma^2. The
expected biased variance of a batch of n elements is sigma^2 * (n - 1) / n, so the matching target
for a batch of ``batch_size`` images is ``running_var * (n - 1) / n`` with n = batch_size * H_l * W_l
at layer l. ``running_bn_stats`` applies this correction when given ``batch_size``; without it it
returns ``running_var`` unchanged (the population variance), whose difference to the corrected
value is at most 1/n (under 2% for a 7x7 map at batch 1, under 0.1% for typical conv layers).
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from gradinv_lib.errors import InputError

BN_MODES = ("eval", "train")


def _reduce_dims(x: Tensor) -> list[int]:
    """Every dimension but the channel one (dim 1): (N, C) -> [0]; (N, C, H, W) -> [0, 2, 3]."""
    return [d for d in range(x.dim()) if d != 1]


def channel_stats_reference(x: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`channel_stats` by plain autograd ops (the reference its fused backward is tested on)."""
    dims = _reduce_dims(x)
    mean = x.mean(dim=dims, keepdim=True)
    return mean.flatten(), (x - mean).square().mean(dim=dims)


class _ChannelStats(torch.autograd.Function):
    """Two-pass mean/biased variance with a one-pass backward, (g_mean + 2 g_var (x - mean)) / n,
    instead of autograd's six passes over the activation (issue #6). Works under torch.func."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return channel_stats_reference(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], output[0])

    @staticmethod
    def backward(ctx, g_mean, g_var):
        x, mean = ctx.saved_tensors
        shape = [1] * x.dim()
        shape[1] = -1
        n = x.numel() // x.shape[1]
        base = (g_mean / n).view(shape) if g_mean is not None else torch.zeros(shape, dtype=x.dtype, device=x.device)
        if g_var is None:
            return base.expand_as(x)
        return torch.addcmul(base, x - mean.view(shape), (g_var * (2.0 / n)).view(shape))


def channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and BIASED variance of a BN input, over N (and H, W).

    Pure tensor ops (no ``.item()``, no in-place), so it works under ``torch.func`` transforms.
    Two-pass (mean, then mean squared deviation): the same numbers as ``x.var(correction=0)``
    within float rounding, and on CPU many times faster than its strided reduction; its backward
    is one fused pass (issue #6).

    Shape:
        x: (N, C) or (N, C, *spatial); returns two (C,) tensors.
    """
    return _ChannelStats.apply(x)


@contextmanager
def _bn_input_hooks(model, fn: Callable[[str, Tensor], None]) -> Iterator[None]:
    """Call ``fn(name, input)`` at every forward of each BN layer of ``model.bn_layers()``;
    the hooks are removed on exit, also when the block raises."""
    handles = []
    try:
        for name, module in model.bn_layers().items():
            handles.append(module.register_forward_hook(
                lambda _m, inputs, _out, _name=name: fn(_name, inputs[0])))
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def bn_in_float32(model) -> Iterator[None]:
    """During the block every BN layer of ``model.bn_layers()`` computes in float32: its input is
    cast up before it runs (and before :func:`record_bn_inputs` reads it). Under bf16 autocast this
    is mixed precision's usual rule, and ``torch.func.vmap(grad(...))`` needs it: a bf16 input with
    float32 weights fails there ("expected scalar type BFloat16 but found Float")."""
    handles = [module.register_forward_pre_hook(lambda _m, inputs: (inputs[0].float(), *inputs[1:]),
                                                prepend=True)
               for module in model.bn_layers().values()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def record_bn_inputs(model) -> Iterator[dict[str, tuple[Tensor, Tensor]]]:
    """Record the (mean, biased variance) of the input of every BN layer during the block.

    The returned dict is filled by forward hooks, keyed by BN module name (as in
    ``model.bn_layers()``); a layer run twice keeps its last call. The values keep the autograd
    graph (detach them if needed). A fresh dict per call, so it can be returned as aux output from
    inside ``torch.func.vmap``/``grad``.

    Example::

        with record_bn_inputs(model) as stats:
            logits = model(x)
        mu, var = stats["body.bn1"]
    """
    stats: dict[str, tuple[Tensor, Tensor]] = OrderedDict()

    def store(name: str, x: Tensor) -> None:
        stats[name] = channel_stats(x)

    with _bn_input_hooks(model, store):
        yield stats


def bn_input_element_counts(model, image_shape: tuple[int, int, int] | None = None) -> dict[str, int]:
    """Elements per channel per image at each BN layer's input (H_l * W_l for BN2d, 1 for BN1d).

    Found with one forward pass of a zero image (no grad, BN in eval mode, modes restored).
    ``image_shape`` defaults to ``(3, model.input_size, model.input_size)``.
    """
    shape = tuple(image_shape) if image_shape is not None else (3, model.input_size, model.input_size)
    counts: dict[str, int] = OrderedDict()

    def count(name: str, x: Tensor) -> None:
        counts[name] = int(x[0, 0].numel())

    ref = next(iter(model.buffers()), None)
    x = torch.zeros((1, *shape), device=ref.device if ref is not None else None)
    with bn_mode(model, "eval"), _bn_input_hooks(model, count), torch.no_grad():
        model(x)
    return counts


def running_bn_stats(model, batch_size: int | None = None,
                     image_shape: tuple[int, int, int] | None = None) -> dict[str, tuple[Tensor, Tensor]]:
    """BN_approx targets: (running_mean, running variance) of every BN layer, detached clones.

    ``batch_size=None``: the variance is ``running_var`` as stored (unbiased, i.e. the population
    variance estimate). With ``batch_size``: the expected BIASED variance of a batch of that many
    images, ``running_var * (n - 1) / n`` with n = batch_size * H_l * W_l elements per channel at
    layer l (spatial sizes from :func:`bn_input_element_counts` at ``image_shape``). See the module
    docstring for why.
    """
    layers = model.bn_layers()
    missing = [n for n, m in layers.items() if m.running_mean is None or m.running_var is None]
    if missing:
        raise InputError(f"running_bn_stats: expected running statistics in every BN layer, "
                         f"found none in {missing[:3]} (track_running_stats=False)")
    if batch_size is not None and int(batch_size) < 1:
        raise InputError(f"running_bn_stats: expected batch_size >= 1, found {batch_size}")
    counts = bn_input_element_counts(model, image_shape) if batch_size is not None else None
    out: dict[str, tuple[Tensor, Tensor]] = OrderedDict()
    for name, m in layers.items():
        var = m.running_var.detach().clone()
        if counts is not None:
            n = int(batch_size) * counts[name]
            var = var * ((n - 1) / n)
        out[name] = (m.running_mean.detach().clone(), var)
    return out


@contextmanager
def bn_mode(model: nn.Module, mode: str) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with its BN layers normalising as the client does; restore on exit.

    ``"eval"``: BN uses the running statistics. ``"train"``: BN normalises with the batch's own
    statistics WITHOUT updating the running statistics (``track_running_stats`` is switched off
    for the block, so no in-place buffer update happens; this also keeps it usable under
    ``torch.func`` transforms). Dropout and other layers stay in eval mode in both cases.
    """
    if mode not in BN_MODES:
        raise InputError(f"bn_mode: expected one of {BN_MODES}, found {mode!r}")
    modes = {m: m.training for m in model.modules()}
    tracking = {m: m.track_running_stats for m in model.bn_layers().values()}
    try:
        model.eval()
        if mode == "train":
            for m in tracking:
                m.train()
                m.track_running_stats = False
        yield model
    finally:
        for m, t in tracking.items():
            m.track_running_stats = t
        for m, training in modes.items():
            m.training = training
