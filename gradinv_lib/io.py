"""Atomic result files and provenance: a result is either complete on disk or absent."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path

import torch


def atomic_write(path: str | Path, write) -> Path:
    """Write through ``write(fileobj)`` to a temporary file beside ``path``, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json_atomic(path: str | Path, data) -> Path:
    text = json.dumps(data, indent=2, sort_keys=False, default=json_default) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


def torch_save_atomic(obj, path: str | Path) -> Path:
    return atomic_write(path, lambda f: torch.save(obj, f))


def json_default(value):
    """``json.dumps(default=...)`` for tensors, paths and NumPy/torch scalars."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def provenance(device: str | torch.device = "cpu") -> dict:
    """Versions and machine facts recorded beside every result."""
    import gradinv_lib
    device = torch.device(device)
    info = {
        "gradinv": gradinv_lib.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
