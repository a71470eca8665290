"""A user's own architecture by import path, for the command line (``--model-module``): the user's
code builds the network, :func:`models.wrap_model` wraps it with the given input size and
normalisation. Nothing is downloaded: the factory is called as the user wrote it.

Spec: ``package.module:factory`` (an importable module, e.g. ``torchvision.models:mobilenet_v2``)
or ``path/to/file.py:factory``. The factory is called with ``num_classes=N`` when it takes that
argument, else with none; it must return an ``nn.Module`` mapping normalised images to logits.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os

import torch
from torch import nn

from gradinv_lib.errors import InputError, MissingAssetError

from . import wrap_model
from .weights import load_checkpoint, load_into, unwrap_state_dict


def first_run_config(**changes):
    """A first attack on a user's own network: 800 iterations, 2 seeds (registered consensus),
    BN_approx (real update files carry no batch statistics), warm-up 20, checkpoints every 100.
    ``InversionConfig()`` keeps the paper's 20K iterations and 8 seeds (sec. 4), hours on a GPU;
    this is minutes on a CPU for a small network at 32 px, enough to see whether it leaks.
    ``changes`` override any field."""
    from gradinv_lib.attack.config import InversionConfig
    return InversionConfig(iterations=800, seeds=2, bn_target="running", warmup=20,
                           checkpoint_every=100).replace(**changes)


def load_factory(spec: str):
    """The callable named by ``spec`` (``module:attr`` or ``file.py:attr``)."""
    module_name, sep, attr = str(spec).rpartition(":")
    if not sep or not module_name or not attr:
        raise InputError(f"--model-module: expected 'package.module:factory' or 'file.py:factory', "
                         f"found {spec!r}")
    if module_name.endswith(".py"):
        if not os.path.isfile(module_name):
            raise MissingAssetError(f"--model-module: expected a Python file at {module_name}, found none")
        loader = importlib.util.spec_from_file_location(f"gradinv_user_model_{abs(hash(module_name))}", module_name)
        module = importlib.util.module_from_spec(loader)
        loader.loader.exec_module(module)  # the user's own file, run as they asked
    else:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise InputError(f"--model-module {spec}: cannot import {module_name!r} ({exc})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise InputError(f"--model-module {spec}: expected a callable {attr!r} in {module_name}, "
                         f"found {type(factory).__name__ if factory is not None else 'nothing'}")
    return factory


def build_user_model(spec: str, *, num_classes: int, input_size: int | None, mean, std,
                     weights: str | None = None, seed: int = 0, device="cpu"):
    """The network ``spec`` builds (random init seeded by ``seed``; ``weights``: a state-dict file
    loaded strictly, or None/"random"), wrapped for the attack at ``input_size``."""
    factory = load_factory(spec)
    if input_size is None:
        raise InputError("--input-size: expected the side in pixels of the client's images for "
                         f"--model-module {spec} (a network with global pooling takes any size, so "
                         "it is never guessed), found none")
    params = inspect.signature(factory).parameters.values()  # torchvision's take **kwargs
    takes_classes = any(p.name == "num_classes" or p.kind is p.VAR_KEYWORD for p in params)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = factory(num_classes=num_classes) if takes_classes else factory()
    if not isinstance(net, nn.Module):
        raise InputError(f"--model-module {spec}: expected the factory to return a torch.nn.Module, "
                         f"found {type(net).__name__}")
    if weights not in (None, "random", "default"):
        load_into(net, unwrap_state_dict(load_checkpoint(weights)), f"weights file {weights}")
    model = wrap_model(net.to(device), mean=mean, std=std, input_size=input_size,
                       name=spec.rpartition(":")[2])
    if model.num_classes != num_classes:
        raise InputError(f"--model-module {spec}: the network has {model.num_classes} classes, "
                         f"expected {num_classes} (--num-classes)")
    model.weights_source = (f"user module {spec}, " + (f"weights {weights}" if weights not in
                            (None, "random", "default") else f"random init (seed {seed})"))
    return model
