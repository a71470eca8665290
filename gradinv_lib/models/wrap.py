"""Bring your own network: :func:`wrap_model` turns any image classifier (``nn.Module``) into the
``ImageClassifier`` the attack needs, finding its final ``nn.Linear`` (eq. 8's label recovery
reads that layer's gradient) and taking its input normalisation. BatchNorm layers are optional:
without them the attack runs with the BN prior off (eq. 9's R_BN needs BN statistics)."""

from __future__ import annotations

import torch
from torch import nn

from gradinv_lib.errors import InputError

from .base import ImageClassifier
from .resnet import IMAGENET_MEAN, IMAGENET_STD


def linear_layers(module: nn.Module) -> list[str]:
    """Dotted names of every ``nn.Linear`` in ``module``, in registration order."""
    return [n for n, m in module.named_modules() if isinstance(m, nn.Linear) and n]


def check_produces_logits(module: nn.Module, final_layer: str, input_size: int) -> None:
    """Raise InputError unless ``module.<final_layer>``'s output IS the module's output (nothing
    after it) and the network is twice differentiable (eq. 3 backpropagates through its
    parameter gradients), checked on two random images of side ``input_size``."""
    layer = module.get_submodule(final_layer)
    ref = next(module.parameters())
    params = [p for p in module.parameters() if p.requires_grad]
    x = torch.randn(2, 3, input_size, input_size, device=ref.device, dtype=ref.dtype, requires_grad=True)
    seen = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        out = module(x)
    except Exception as exc:  # any failure of the user's forward at this input size
        raise InputError(f"{type(module).__name__}: a forward pass of (2, 3, {input_size}, "
                         f"{input_size}) images failed ({type(exc).__name__}: {exc}); pass the "
                         "input_size the network expects") from exc
    finally:
        handle.remove()
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise InputError(f"{type(module).__name__}: expected (N, classes) logits from the forward "
                         f"pass, found {type(out).__name__} {getattr(out, 'shape', '')}")
    if not seen or seen[-1].shape != out.shape or not torch.equal(seen[-1], out):
        raise InputError(f"{type(module).__name__}: the nn.Linear {final_layer!r} does not produce "
                         "the logits (it is unused or something follows it); pass final_layer= "
                         "with the name of the layer that does")
    grads = torch.autograd.grad(out.logsumexp(1).sum(), params, create_graph=True, allow_unused=True)
    try:
        torch.autograd.grad(sum(g.square().sum() for g in grads if g is not None), x, allow_unused=True)
    except RuntimeError as exc:
        raise InputError(f"{type(module).__name__}: the attack differentiates the parameter "
                         f"gradients, and an operation of this network has no second derivative "
                         f"({str(exc).splitlines()[0]}); replace it (e.g. Hardswish -> SiLU)") from exc


def wrap_model(module: nn.Module, mean=IMAGENET_MEAN, std=IMAGENET_STD, *, final_layer: str | None = None,
               input_size: int | None = None, name: str | None = None) -> ImageClassifier:
    """Wrap ``module`` (normalised (N, 3, H, W) images -> (N, classes) logits) for the attack.

    ``final_layer``: the dotted name of the ``nn.Linear`` producing the logits; None finds the
    last-registered one and checks by a forward pass that its output is the network's output.
    ``mean``/``std``: the per-channel input normalisation the client applies to [0, 1] pixels
    (default ImageNet's). ``input_size``: the side of the client's images, required (a network
    with global pooling accepts any size, so it is never guessed). The module is put in eval mode and used as it is (its weights are
    the global model's); parameter names gain the prefix ``body.`` (update readers accept both).
    """
    if not isinstance(module, nn.Module):
        raise InputError(f"wrap_model: expected a torch.nn.Module, found {type(module).__name__}")
    if not any(p.requires_grad for p in module.parameters()):
        raise InputError(f"{type(module).__name__}: expected trainable parameters (their gradients "
                         "are the update), found none")
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 8:
        raise InputError(f"wrap_model: input_size: expected the side in pixels (>= 8) of the "
                         f"client's images, found {input_size!r}")
    modules = dict(module.named_modules())
    if final_layer is None:
        found = linear_layers(module)
        if not found:
            raise InputError(f"{type(module).__name__}: expected a final nn.Linear (label recovery "
                             "reads its gradient), found no nn.Linear; a network ending in a 1x1 "
                             "convolution needs a Linear head to be attacked")
        final_layer = found[-1]
    elif not isinstance(modules.get(final_layer), nn.Linear):
        what = type(modules[final_layer]).__name__ if final_layer in modules else "no such module"
        raise InputError(f"final_layer={final_layer!r}: expected the name of an nn.Linear in "
                         f"{type(module).__name__}, found {what}")
    module.eval()
    check_produces_logits(module, final_layer, input_size)
    model = ImageClassifier(module, final_layer, mean, std, name or type(module).__name__.lower(),
                            input_size)
    model.weights_source = f"user module {type(module).__name__} (weights as given)"
    return model.eval().to(next(module.parameters()).device)
