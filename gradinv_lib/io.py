"""Atomic result files and provenance: a result is either complete on disk or absent."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path

import torch


def current_umask() -> int:
    """The process's umask, read without changing it (Linux reports it in /proc; elsewhere it is
    set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write) -> Path:
    """Write through ``write(fileobj)`` to a temporary file beside ``path``, then rename over it.
    The file gets the mode an ordinary ``open`` would give (0666 less the umask), not mkstemp's
    0600, so results stay readable on a shared server."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
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
