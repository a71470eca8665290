"""ImageNet (ILSVRC2012) from a local folder, for the paper profile. Nothing is downloaded.

Supported layouts of the split folder (``root/<split>`` if that exists, else ``root``):

(a) ImageFolder: ``<wnid>/*.JPEG``. Labels are positions in the sorted list of class folders,
    as torchvision assigns them; with all 1000 folders these are the standard ImageNet indices.
    A subset of folders needs ``classes=`` (the wnids in index order, or a file of them one per
    line) so that indices still mean ImageNet classes.
(b) Official flat validation folder: ``ILSVRC2012_val_XXXXXXXX.JPEG`` plus one labels file:
    - ``val_labels.txt`` / ``val_labels.csv``: lines ``filename,index`` (comma or whitespace),
      index 0-based in sorted-wnid order (the order torchvision and pretrained models use); or
    - ``ILSVRC2012_validation_ground_truth.txt`` (devkit; line i is the 1-based ILSVRC2012_ID of
      image i) together with the devkit's ``meta.mat`` (in the folder, or ``devkit_meta=``) to
      map ILSVRC2012_IDs to wnids. Those ids are not the sorted-wnid indices.
Images are read lazily, one per ``__getitem__``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from gradinv_lib.errors import InputError, MissingAssetError

from .images import LabelledImages, load_rgb, preprocess, stack_labelled

ENV_VAR = "GRADINV_IMAGENET"
NUM_CLASSES = 1000
IMAGE_EXTS = {".jpeg", ".jpg", ".png"}
VAL_FILE = re.compile(r"^ILSVRC2012_val_(\d{8})\.JPEG$", re.IGNORECASE)
SIMPLE_LABEL_FILES = ("val_labels.txt", "val_labels.csv")
GROUND_TRUTH_FILE = "ILSVRC2012_validation_ground_truth.txt"
LAYOUT_HELP = (
    "either class folders <wnid>/*.JPEG, or ILSVRC2012_val_*.JPEG files with val_labels.txt "
    "(filename,index) or ILSVRC2012_validation_ground_truth.txt + meta.mat"
)


def imagenet_root(path=None) -> Path:
    """The ImageNet folder: ``path`` if given, else the ``GRADINV_IMAGENET`` environment variable."""
    chosen = path if path is not None else os.environ.get(ENV_VAR)
    if not chosen:
        raise MissingAssetError(
            f"expected an ImageNet folder as an argument or in ${ENV_VAR}, found neither "
            f"(ImageNet cannot be downloaded here; layout: {LAYOUT_HELP})"
        )
    root = Path(chosen).expanduser()
    if not root.is_dir():
        raise MissingAssetError(f"expected an ImageNet folder at {root}, found no such directory")
    return root


def _is_image(entry: os.DirEntry) -> bool:
    return entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTS


def _read_class_list(classes) -> list:
    if isinstance(classes, (str, Path)):
        path = Path(classes)
        if not path.is_file():
            raise MissingAssetError(f"expected a class list file (one wnid per line) at {path}, found nothing")
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [str(c) for c in classes]


def _scan_class_folders(folder: Path, classes) -> list:
    """(path, label) of every image in class sub-folders."""
    found = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    if classes is None:
        if len(found) != NUM_CLASSES:
            raise InputError(
                f"expected {NUM_CLASSES} class folders in {folder} (sorted-folder indices only match "
                f"ImageNet's with all of them), found {len(found)}; pass classes=<the wnids in index order>"
            )
        classes = found
    index = {wnid: i for i, wnid in enumerate(_read_class_list(classes))}
    unknown = [name for name in found if name not in index]
    if unknown:
        raise InputError(f"expected class folders named in classes, found unknown folders {unknown[:5]} in {folder}")
    items = []
    for name in found:
        files = sorted(e.name for e in os.scandir(folder / name) if _is_image(e))
        items.extend((folder / name / f, index[name]) for f in files)
    return items


def _parse_simple_labels(path: Path) -> dict:
    """filename -> 0-based index from ``filename,index`` lines (comma or whitespace; '#' comments)."""
    labels = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        parts = [p for p in re.split(r"[,\s]+", line) if p]
        if not parts or (n == 1 and not parts[-1].isdigit()):  # blank line or a header row
            continue
        if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) >= NUM_CLASSES:
            raise InputError(f"expected 'filename,index' with index in [0, {NUM_CLASSES}) at {path}:{n}, found {line!r}")
        labels[parts[0]] = int(parts[1])
    return labels


def _devkit_id_to_index(meta_path: Path) -> dict:
    """ILSVRC2012_ID -> sorted-wnid index, from the devkit's meta.mat (the 1000 leaf synsets)."""
    from scipy.io import loadmat

    try:
        synsets = loadmat(str(meta_path), squeeze_me=True)["synsets"]
        leaves = [(int(s["ILSVRC2012_ID"]), str(s["WNID"])) for s in synsets if int(s["num_children"]) == 0]
    except (KeyError, ValueError, TypeError, OSError) as exc:
        raise InputError(f"expected the ILSVRC2012 devkit meta.mat with a 'synsets' table at {meta_path}, "
                         f"found something else ({exc!r})") from exc
    order = {wnid: i for i, wnid in enumerate(sorted(w for _, w in leaves))}
    return {ilsvrc_id: order[wnid] for ilsvrc_id, wnid in leaves}


def _parse_ground_truth(path: Path, meta_path: Path | None) -> dict:
    """filename -> 0-based sorted-wnid index from the devkit ground truth and meta.mat."""
    if meta_path is None or not Path(meta_path).is_file():
        raise MissingAssetError(
            f"found {path.name} (1-based ILSVRC2012_IDs, not model indices) but no devkit meta.mat to "
            f"map them (looked for {meta_path}); pass devkit_meta=<ILSVRC2012_devkit_t12/data/meta.mat> "
            f"or provide val_labels.txt with 'filename,index' lines"
        )
    id_to_index = _devkit_id_to_index(Path(meta_path))
    ids = [int(tok) for tok in path.read_text().split()]
    bad = sorted({i for i in ids if i not in id_to_index})
    if bad:
        raise InputError(f"expected ILSVRC2012_IDs of leaf classes in {path}, found unknown ids {bad[:5]}")
    return {f"ILSVRC2012_val_{i:08d}.JPEG": id_to_index[v] for i, v in enumerate(ids, 1)}


def _flat_labels(folder: Path, devkit_meta) -> dict:
    for name in SIMPLE_LABEL_FILES:
        if (folder / name).is_file():
            return _parse_simple_labels(folder / name)
    if (folder / GROUND_TRUTH_FILE).is_file():
        meta = Path(devkit_meta) if devkit_meta is not None else folder / "meta.mat"
        return _parse_ground_truth(folder / GROUND_TRUTH_FILE, meta)
    raise MissingAssetError(
        f"found ILSVRC2012_val_*.JPEG files in {folder} but no labels file: expected one of "
        f"{', '.join(SIMPLE_LABEL_FILES)} ('filename,index' lines) or {GROUND_TRUTH_FILE} + meta.mat"
    )


def _scan_flat(folder: Path, devkit_meta) -> list:
    """(path, label) of every ILSVRC2012_val_*.JPEG in ``folder``, which all need a label."""
    files = sorted(e.name for e in os.scandir(folder) if e.is_file() and VAL_FILE.match(e.name))
    labels = _flat_labels(folder, devkit_meta)
    missing = [f for f in files if f not in labels]
    if missing:
        raise InputError(f"expected a label for every image in {folder}, found {len(missing)} without one "
                         f"(e.g. {missing[0]})")
    return [(folder / f, labels[f]) for f in files]


class ImageNetFolder:
    """Lazily loaded ImageNet split; ``dataset[i] -> ((3, R, R) float in [0, 1], label)``."""

    def __init__(self, root=None, split: str = "val", resolution: int = 224, classes=None,
                 devkit_meta=None):
        base = imagenet_root(root)
        self.folder = base / split if (base / split).is_dir() else base
        self.resolution = resolution
        self.split = split
        has_dirs = any(e.is_dir() for e in os.scandir(self.folder))
        has_flat = any(e.is_file() and VAL_FILE.match(e.name) for e in os.scandir(self.folder))
        if has_flat:
            self.layout, self.items = "flat", _scan_flat(self.folder, devkit_meta)
        elif has_dirs:
            self.layout, self.items = "folders", _scan_class_folders(self.folder, classes)
        else:
            raise MissingAssetError(
                f"expected {LAYOUT_HELP}; found no class folders and no ILSVRC2012_val_*.JPEG files in {self.folder}"
            )
        if not self.items:
            raise MissingAssetError(f"expected images ({LAYOUT_HELP}), found none in {self.folder}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        path, label = self.items[index]
        return preprocess(load_rgb(path), self.resolution), label

    @property
    def labels(self) -> torch.Tensor:
        """(N,) labels of every image, without reading any image."""
        return torch.tensor([label for _, label in self.items], dtype=torch.long)

    def as_labelled(self, indices=None) -> LabelledImages:
        """The images at ``indices`` (default: all; mind the memory) as ground-truth LabelledImages."""
        indices = range(len(self)) if indices is None else torch.as_tensor(indices).reshape(-1).tolist()
        rows = [self[i] for i in indices]
        return stack_labelled([x for x, _ in rows], [y for _, y in rows],
                              [self.items[i][0].name for i in indices], [False] * len(rows),
                              source=self.source)

    # ``sample_batch`` draws from this folder as from LabelledImages, reading only the batch.
    subset = as_labelled

    @property
    def source(self) -> str:
        return f"ImageNet {self.split} ({self.folder})"
