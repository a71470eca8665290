"""What a network's structure says about eq. 8's premises, probed by one forward pass of random
images: are the final layer's inputs nonnegative, is its output the network's output, and does the
client's training forward drop units at random (dropout, stochastic depth)?

Label recovery (sec. 3.2) and the update checks (:mod:`gradinv_lib.federated.update_checks`) read the final
layer's gradient dW = mean_i (p_i - onehot(y_i)) o_i^T; they rely on o >= 0 and on p being the
softmax of that layer's own output. These probes say where that fails.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

from gradinv_lib.attack.factored_gradient import final_layer_io
from gradinv_lib.errors import InputError

# module class names that drop units at random in a training forward (torchvision's
# StochasticDepth is matched by name: torchvision is not a dependency of the library)
STOCHASTIC_TYPES = (nn.modules.dropout._DropoutNd,)
STOCHASTIC_NAMES = ("StochasticDepth", "DropPath")


_PROBES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _probe(model, image_shape, images: int = 4) -> dict:
    """The fraction of negative final-layer inputs and whether the network's output is that
    layer's, on ``images`` random images, the model in eval mode (modes restored, no gradients);
    one forward pass per model and image shape (the answers are structural)."""
    key = tuple(int(s) for s in image_shape)
    cached = _PROBES.setdefault(model, {})
    if key not in cached:
        seen = _forward(model, key, images)
        same = seen["output"].shape == seen["layer"].shape and torch.equal(seen["output"], seen["layer"])
        cached[key] = {"negative": float((seen["input"] < 0).double().mean()), "output_is_layer": same}
    return cached[key]


def _forward(model, image_shape, images: int) -> dict:
    """The final layer's input and output and the network's output on random images."""
    ref = next(model.parameters())
    x = torch.rand(images, *image_shape, generator=torch.Generator().manual_seed(0))
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad(), final_layer_io(model) as seen:
            out = model(model.normalize(x.to(device=ref.device, dtype=ref.dtype)))
    except RuntimeError as exc:  # e.g. "mat1 and mat2 shapes cannot be multiplied"
        raise InputError(f"images of shape {tuple(image_shape)} do not fit {model.name!r} (its "
                         f"input size is {model.input_size} px): {str(exc).splitlines()[0][:160]}; "
                         "give the client's image size (--resolution, --input-size)") from None
    finally:
        for m, training in modes:
            m.train(training)
    return {"input": seen["input"].flatten(1), "layer": seen["output"], "output": out}


def check_images_fit(model, image_shape) -> None:
    """Raise InputError (one line) unless the network takes images of ``image_shape`` (C, H, W)."""
    _probe(model, image_shape)


def negative_feature_fraction(model, image_shape) -> float:
    """Fraction of the final layer's input features that are negative on random images (0 for
    ReLU/sigmoid networks; EfficientNet's SiLU gives many): eq. 8 assumes 0."""
    return _probe(model, image_shape)["negative"]


def output_is_final_layer(model, image_shape) -> bool:
    """Whether the network returns the final Linear layer's output unchanged (no ReLU or other op
    after it): p = softmax of that layer's output, as eq. 8 assumes."""
    return _probe(model, image_shape)["output_is_layer"]


def stochastic_modules(model) -> list[str]:
    """Names of the modules that drop units at random in a training forward (p > 0)."""
    found = []
    for name, m in model.named_modules():
        if isinstance(m, STOCHASTIC_TYPES) or type(m).__name__ in STOCHASTIC_NAMES:
            if float(getattr(m, "p", 1.0)) > 0:
                found.append(name.removeprefix("body."))
    return found
