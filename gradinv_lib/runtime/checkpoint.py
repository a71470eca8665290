"""Atomic checkpoints of a running inversion, and a guard that turns SIGINT/SIGTERM into a
checkpoint-then-stop, so a long run resumes exactly where it was interrupted."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from pathlib import Path

import torch

from gradinv_lib.errors import InputError
from gradinv_lib.io import torch_save_atomic

FORMAT = "gradinv-checkpoint"
VERSION = 1
FILENAME = "checkpoint.pt"
REQUIRED_KEYS = ("iteration", "images", "optimizer", "rng", "consensus", "history", "start",
                 "config", "labels", "shape")


class InversionInterrupted(KeyboardInterrupt):
    """Raised after a signal stopped the loop; ``checkpoint`` is where its state was saved."""

    def __init__(self, iteration: int, checkpoint: Path | None):
        self.iteration, self.checkpoint = iteration, checkpoint
        where = f"; resume with --resume from {checkpoint}" if checkpoint else " (no checkpoint dir)"
        super().__init__(f"interrupted at iteration {iteration}{where}")


def save_checkpoint(directory: str | Path, state: dict) -> Path:
    """Write ``state`` to ``directory/checkpoint.pt`` atomically (write then rename)."""
    return torch_save_atomic({"format": FORMAT, "version": VERSION, **state},
                             Path(directory) / FILENAME)


def load_checkpoint(directory: str | Path, device="cpu") -> dict | None:
    """The saved state, or None where the directory holds no checkpoint yet."""
    path = Path(directory) / FILENAME
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # truncated or foreign file
        raise InputError(f"{path} is not a readable gradinv checkpoint ({exc.__class__.__name__}: "
                         f"{str(exc).splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError(f"{path} is not a gradinv checkpoint (no '{FORMAT}' tag)")
    if state.get("version") != VERSION:
        raise InputError(f"{path}: expected checkpoint version {VERSION}, found {state.get('version')!r}")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise InputError(f"{path}: expected a complete gradinv checkpoint, found it lacks {missing}")
    return state


class StopFlag:
    """Set by SIGINT/SIGTERM while :func:`stop_on_signals` is active; the loop polls it."""

    def __init__(self):
        self.signal: int | None = None

    def __bool__(self):
        return self.signal is not None


@contextmanager
def stop_on_signals():
    """Within the block, SIGINT/SIGTERM set the yielded flag instead of killing the process.

    A second signal falls back to the previous handler. Outside the main thread it is a no-op.
    """
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame):
        if flag:
            signal.signal(signum, previous[signum])
            signal.raise_signal(signum)
        flag.signal = signum

    for s in previous:
        signal.signal(s, handler)
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
