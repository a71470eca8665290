"""The README's Flower example runs as written (with 2 attack iterations instead of 400): a
torchvision architecture wrapped in one call, attacked from a Flower client's .npz of local weights
plus the global weights and the client's learning rate, recovers the batch's labels."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_flower_example_recovers_the_labels(tmp_path, monkeypatch):
    block = next(b for b in python_blocks() if "wrap_model(" in b and "client.npz" in b)
    assert "iterations=400" in block
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block.replace("iterations=400", "iterations=2"), "README.md", "exec"), {})
    assert out.getvalue().strip().splitlines()[-1] == "True"
    assert (tmp_path / "client.npz").is_file() and (tmp_path / "global.npz").is_file()
