"""The real labelled images that PyPI ``foolbox`` 3.3.4 ships in ``foolbox/data/``: 20 ImageNet
validation photos (19 distinct labels) and 20 CIFAR-10 test images. They are read as files;
foolbox itself is never imported (that would need eagerpy). ImageNet's terms of use apply."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from gradinv_lib.errors import MissingAssetError

from .images import LabelledImages, load_rgb, preprocess, stack_labelled, to_tensor01

FOOLBOX_PIN = "foolbox==3.3.4"
_NAME = re.compile(r"^(?P<set>[A-Za-z0-9]+)_(?P<index>\d+)_(?P<label>\d+)\.(?:jpg|png)$")
EXPECTED_COUNT = {"imagenet": 20, "cifar10": 20, "cifar100": 20}


def foolbox_data_dir() -> Path:
    """The ``data/`` folder inside the installed foolbox package (located without importing it)."""
    spec = importlib.util.find_spec("foolbox")
    if spec is None or spec.origin is None:
        raise MissingAssetError(
            f"expected the foolbox package (it ships the 20 labelled ImageNet images); "
            f"found no installed foolbox: run `pip install {FOOLBOX_PIN}`"
        )
    folder = Path(spec.origin).resolve().parent / "data"
    if not folder.is_dir():
        raise MissingAssetError(
            f"expected foolbox's image folder at {folder}, found none: reinstall with `pip install {FOOLBOX_PIN}`"
        )
    return folder


def embedded_files(kind: str) -> list:
    """Sorted (path, label) pairs of foolbox's ``<kind>_<i>_<label>.*`` files (kind: imagenet, cifar10)."""
    folder = foolbox_data_dir()
    found = []
    for path in sorted(folder.iterdir()):
        m = _NAME.match(path.name)
        if m and m["set"] == kind:
            found.append((path, int(m["label"])))
    expected = EXPECTED_COUNT.get(kind)
    if expected is not None and len(found) != expected:
        raise MissingAssetError(
            f"expected {expected} {kind}_<i>_<label> files in {folder}, found {len(found)}: "
            f"reinstall with `pip install {FOOLBOX_PIN}`"
        )
    return found


def embedded_imagenet(resolution: int = 224) -> LabelledImages:
    """foolbox's 20 ImageNet validation photos, resized and centre-cropped to ``resolution``."""
    files = embedded_files("imagenet")
    return stack_labelled(
        [preprocess(load_rgb(p), resolution) for p, _ in files],
        [label for _, label in files],
        [p.name for p, _ in files],
        [False] * len(files),
        source="foolbox ImageNet validation images (ground-truth labels)",
    )


def _embedded_32px(kind: str, what: str) -> LabelledImages:
    files = embedded_files(kind)
    return stack_labelled(
        [to_tensor01(load_rgb(p)) for p, _ in files],
        [label for _, label in files],
        [p.name for p, _ in files],
        [False] * len(files),
        source=f"foolbox {what} test images (ground-truth labels)",
    )


def embedded_cifar10() -> LabelledImages:
    """foolbox's 20 CIFAR-10 test images at their native 32x32."""
    return _embedded_32px("cifar10", "CIFAR-10")


def embedded_cifar100() -> LabelledImages:
    """foolbox's 20 CIFAR-100 test images at their native 32x32 (labels are CIFAR-100 classes:
    a gallery for identification, never a CIFAR-10 network's batch)."""
    return _embedded_32px("cifar100", "CIFAR-100")
