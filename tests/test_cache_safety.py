"""No code from caches (issue 21): a pickle planted where gradinv reads a cached or user-given
.pt file is refused and its payload never runs; every torch.load in the package says
weights_only=True and every np.load allow_pickle=False."""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest
import torch

import gradinv_lib
from gradinv_lib.errors import GradInvError


class Payload:
    """Unpickling this creates ``marker``: proof that the file's code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def plant(path: Path, marker: Path, wrap=lambda p: {"payload": p}) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(wrap(Payload(marker)), path)
    return path


def _loaders(tmp: Path):
    """(name, where to plant, how to load) of every path that reads a .pt file."""
    from conftest import tiny_classifier

    from gradinv_lib.experiments.run import load_originals
    from gradinv_lib.federated.client import load_update
    from gradinv_lib.federated.update_formats import read_update
    from gradinv_lib.models.weights import load_checkpoint
    from gradinv_lib.runtime.checkpoint import load_checkpoint as load_run_checkpoint
    from gradinv_lib.studies.common import load_tensors
    from gradinv_lib.studies.runs import _pool_features
    update = types.SimpleNamespace(batch_size=1, image_shape=(3, 8, 8))
    data = types.SimpleNamespace(ids=["a"], images=torch.rand(1, 3, 32, 32))
    return [
        ("study tensors", tmp / "t.pt", lambda p: load_tensors(p.parent, "t")),
        ("pool features", tmp / "pool_lite0_features_32px.pt",
         lambda p: _pool_features(types.SimpleNamespace(out=p.parent), data, 32)),
        ("run checkpoint", tmp / "checkpoint.pt", lambda p: load_run_checkpoint(p.parent)),
        ("client update", tmp / "u.pt", lambda p: load_update(p)),
        ("update file", tmp / "g.pt", lambda p: read_update(p, tiny_classifier(), batch_size=1)),
        ("weights", tmp / "w.pt", lambda p: load_checkpoint(p)),
        ("originals", tmp / "o.pt", lambda p: load_originals(p, update, 10)),
    ]


@pytest.mark.parametrize("index", range(7))
def test_a_planted_pickle_is_refused_and_never_runs(tmp_path, index):
    name, path, load = _loaders(tmp_path / "cache")[index]
    marker = tmp_path / "ran"
    plant(path, marker)
    with pytest.raises((GradInvError, torch.serialization.pickle.UnpicklingError)):
        load(path)
    assert not marker.exists(), f"{name}: the planted payload ran"


def test_every_load_in_the_package_refuses_pickled_code():
    root = Path(gradinv_lib.__file__).parent
    for source in root.rglob("*.py"):
        text = source.read_text()
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{source.relative_to(root)}: {call}"
        for call in re.findall(r"np\.load\([^)]*\)", text):
            assert "allow_pickle=False" in call, f"{source.relative_to(root)}: {call}"
