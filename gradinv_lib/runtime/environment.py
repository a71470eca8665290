"""An environment variable set for the processes started inside a block (a notebook's kernel and
what it starts), and restored after it."""

from __future__ import annotations

import os
from contextlib import contextmanager


@contextmanager
def environment_variable(name: str, value: str):
    """``$name = value`` inside the block; afterwards the value it had, or unset."""
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        os.environ.pop(name) if saved is None else os.environ.update({name: saved})
