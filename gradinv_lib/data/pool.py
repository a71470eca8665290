"""A larger pool of real photos with many distinct labels, for batches of up to ~100 distinct labels.

The pool is foolbox's 20 labelled ImageNet photos (ground truth, ``pseudo=False``) plus square
crops of the real photos that installed packages ship (foolbox, scikit-image, matplotlib), each
labelled with EfficientNet-Lite0's prediction (``pseudo=True``): one crop per predicted label,
the most confident one, for labels no ground-truth photo has. The crops and labels are stored in
``data/pseudo_pool.json`` so that loading needs no model; ``build_pool_manifest`` regenerates it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import math
from pathlib import Path

import torch

from gradinv_lib.errors import InputError, MissingAssetError

from .embedded import FOOLBOX_PIN, embedded_files
from .images import LabelledImages, crop_box, load_rgb, preprocess, stack_labelled

MANIFEST_PATH = Path(__file__).resolve().parents[2] / "data" / "pseudo_pool.json"
MANIFEST_VERSION = 1

# package -> (folder inside the package, pip requirement that provides it)
PACKAGE_FOLDERS = {
    "foolbox": ("data", FOOLBOX_PIN),
    "skimage": ("data", "scikit-image>=0.21"),
    "matplotlib": ("mpl-data/sample_data", "matplotlib>=3.7"),
}
# Colour photographs bundled inside the wheels (no download). Scientific images (retina, cells,
# galaxies), drawings and grey textures are left out: they are not natural photographs.
EXTRA_PHOTOS = (
    "skimage:astronaut.png",
    "skimage:chelsea.png",
    "skimage:coffee.png",
    "skimage:rocket.jpg",
    "skimage:motorcycle_left.png",
    "matplotlib:grace_hopper.jpg",
)
CROP_FRACTIONS = (1.0, 0.7, 0.5, 0.35)  # crop side / shorter image side
CROP_OVERLAP = 0.5                     # neighbouring crops of one size overlap by about half
LABEL_RESOLUTION = 224
MIN_CONFIDENCE = 0.25  # 0.3 leaves ~101 labels in all, too close to Table 1's batch 96


def default_sources() -> list:
    """Source ids ``package:file`` of every photo the pool draws crops from."""
    return [f"foolbox:{p.name}" for p, _ in embedded_files("imagenet")] + list(EXTRA_PHOTOS)


def source_path(source_id: str) -> Path:
    """Resolve ``package:file`` to the file inside the installed package (without importing it)."""
    package, _, name = source_id.partition(":")
    if package not in PACKAGE_FOLDERS or not name:
        raise InputError(
            f"expected a source id 'package:file' with package in {sorted(PACKAGE_FOLDERS)}, found {source_id!r}"
        )
    folder, requirement = PACKAGE_FOLDERS[package]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise MissingAssetError(
            f"expected package {package} (it ships the photo {name}), found it not installed: "
            f"run `pip install '{requirement}'`"
        )
    path = Path(spec.origin).resolve().parent / folder / name
    if not path.is_file():
        raise MissingAssetError(
            f"expected {name} inside {package} at {path}, found nothing: run `pip install '{requirement}'`"
        )
    return path


def _positions(extent: int, side: int) -> list:
    """Evenly spaced offsets of a window of ``side`` along ``extent`` with about CROP_OVERLAP overlap."""
    if side >= extent:
        return [0]
    steps = math.ceil((extent - side) / (side * (1 - CROP_OVERLAP)))
    return sorted({round(i * (extent - side) / steps) for i in range(steps + 1)})


def crop_grid(width: int, height: int, fractions=CROP_FRACTIONS) -> list:
    """Deterministic square crop boxes (left, top, right, bottom) at several scales and positions."""
    boxes = []
    for frac in fractions:
        side = max(1, round(frac * min(width, height)))
        for top in _positions(height, side):
            for left in _positions(width, side):
                boxes.append((left, top, left + side, top + side))
    return boxes


@torch.no_grad()
def predict(model, images01: torch.Tensor, batch_size: int = 32):
    """(argmax labels, softmax probabilities) of ``model`` on pixel-space images (sets eval mode)."""
    model.eval()
    labels, confidences = [], []
    for chunk in images01.split(batch_size):
        probs = model(model.normalize(chunk)).softmax(dim=1)
        conf, lab = probs.max(dim=1)
        labels.append(lab)
        confidences.append(conf)
    return torch.cat(labels), torch.cat(confidences)


def _ground_truth_entries() -> list:
    return [
        {"source": f"foolbox:{p.name}", "box": None, "hflip": False, "label": label,
         "confidence": None, "pseudo": False}
        for p, label in embedded_files("imagenet")
    ]


def _candidate_crops(sources, fractions) -> tuple:
    """Every (source, box, hflip) candidate, its image at LABEL_RESOLUTION, and source sizes."""
    keys, tensors, sizes = [], [], {}
    for source in sources:
        img = load_rgb(source_path(source))
        sizes[source] = list(img.size)
        for box in crop_grid(*img.size, fractions=fractions):
            for hflip in (False, True):
                keys.append((source, box, hflip))
                tensors.append(crop_box(img, box, hflip, LABEL_RESOLUTION))
    return keys, torch.stack(tensors), sizes


def _best_crop_per_label(keys, labels, confidences, exclude, min_confidence) -> list:
    """For each predicted label not in ``exclude``, the single most confident crop (ties: first)."""
    best = {}
    for key, label, conf in zip(keys, labels.tolist(), confidences.tolist()):
        if label in exclude or conf < min_confidence:
            continue
        if label not in best or conf > best[label][1]:
            best[label] = (key, conf)
    entries = []
    for label in sorted(best):
        (source, box, hflip), conf = best[label]
        entries.append({"source": source, "box": list(box), "hflip": hflip, "label": label,
                        "confidence": round(conf, 4), "pseudo": True})
    return entries


def build_pool_manifest(model, sources=None, fractions=CROP_FRACTIONS,
                        min_confidence: float = MIN_CONFIDENCE, weights_file: str | None = None,
                        date: str | None = None) -> dict:
    """Label every candidate crop with ``model`` and return the pool manifest (a JSON-able dict).

    ``model`` is an ``ImageClassifier`` (e.g. ``build_model("efficientnet_lite0")``); crops are
    labelled at 224 px exactly as ``load_pool(224)`` renders them. Deterministic for a given model.
    """
    sources = list(sources) if sources is not None else default_sources()
    gt = _ground_truth_entries()
    keys, crops, sizes = _candidate_crops(sources, fractions)
    labels, confidences = predict(model, crops)
    pseudo = _best_crop_per_label(keys, labels, confidences, {e["label"] for e in gt}, min_confidence)
    entries = gt + pseudo
    return {
        "version": MANIFEST_VERSION,
        "model": getattr(model, "name", type(model).__name__),
        "weights_file": weights_file,
        "built_by": "gradinv_lib.data.pool.build_pool_manifest",
        "method": (
            f"square crops of each source photo at fractions {list(fractions)} of its shorter side, "
            f"overlap {CROP_OVERLAP}, with and without horizontal flip, resized to {LABEL_RESOLUTION} px "
            f"(bicubic, antialiased); labelled by the model's argmax; per predicted label the most "
            f"confident crop with confidence >= {min_confidence} is kept, except labels that a "
            f"ground-truth foolbox image already has. Pseudo-labels are model predictions, not ground truth."
        ),
        "label_resolution": LABEL_RESOLUTION,
        "min_confidence": min_confidence,
        "date": date or _dt.date.today().isoformat(),
        "n_candidates": len(keys),
        "n_entries": len(entries),
        "n_labels": len({e["label"] for e in entries}),
        "source_sizes": sizes,
        "entries": entries,
    }


def _json_block(value, indent: str) -> str:
    """Dicts and lists one item per line (one level deep), everything else compact JSON."""
    if isinstance(value, dict) and value:
        items = [f"{indent} {json.dumps(k)}: {json.dumps(v)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return "[\n" + ",\n".join(f"{indent} {json.dumps(v)}" for v in value) + f"\n{indent}]"
    return json.dumps(value)


def write_manifest(manifest: dict, path=MANIFEST_PATH) -> Path:
    """Write ``manifest`` as diff-friendly JSON (one entry per line) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = ",\n".join(f" {json.dumps(k)}: {_json_block(v, ' ')}" for k, v in manifest.items())
    path.write_text("{\n" + body + "\n}\n")
    return path


def read_manifest(path=None) -> dict:
    """Parse the pool manifest (default: ``data/pseudo_pool.json`` at the repository top)."""
    path = Path(path) if path is not None else MANIFEST_PATH
    if not path.is_file():
        raise MissingAssetError(
            f"expected the pool manifest at {path}, found nothing: restore data/pseudo_pool.json from "
            f"the repository or rebuild it with `python -m gradinv_lib.data.pool --rebuild`"
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"expected JSON in the pool manifest {path}, found unparsable text ({exc})") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("entries"), list):
        raise InputError(f"expected a JSON object with an 'entries' list in {path}, found {type(manifest).__name__}")
    return manifest


def _load_source(source: str, expected_size, cache: dict):
    if source not in cache:
        img = load_rgb(source_path(source))
        if expected_size is not None and list(img.size) != list(expected_size):
            raise InputError(
                f"expected {source} to be {expected_size[0]}x{expected_size[1]} as when the pool was "
                f"built, found {img.size[0]}x{img.size[1]}: the installed package version differs"
            )
        cache[source] = img
    return cache[source]


def render_entry(entry: dict, resolution: int, cache: dict, sizes=None) -> torch.Tensor:
    """The (3, R, R) image of one manifest entry: a crop, or the standard preprocess if no box."""
    img = _load_source(entry["source"], (sizes or {}).get(entry["source"]), cache)
    if entry.get("box") is None:
        x = preprocess(img, resolution)
        return x.flip(-1) if entry.get("hflip") else x
    return crop_box(img, entry["box"], bool(entry.get("hflip")), resolution)


def entry_id(entry: dict) -> str:
    """Readable id: the source file, plus ``@l,t,r,b`` and ``:flip`` for crops."""
    name = entry["source"].partition(":")[2]
    if entry.get("box") is not None:
        name += "@" + ",".join(str(v) for v in entry["box"])
    return name + (":flip" if entry.get("hflip") else "")


def load_pool(resolution: int = 224, manifest_path=None) -> LabelledImages:
    """The pool as LabelledImages: ground-truth foolbox photos first, then the pseudo-labelled crops."""
    manifest = read_manifest(manifest_path)
    cache, sizes = {}, manifest.get("source_sizes")
    entries = manifest["entries"]
    try:
        tensors = [render_entry(e, resolution, cache, sizes) for e in entries]
        labels = [int(e["label"]) for e in entries]
        pseudo = [bool(e["pseudo"]) for e in entries]
    except (KeyError, TypeError) as exc:
        raise InputError(
            f"expected manifest entries with source, box, hflip, label and pseudo, found a malformed entry ({exc!r})"
        ) from exc
    return stack_labelled(tensors, labels, [entry_id(e) for e in entries], pseudo,
                          source=f"gradinv pool ({manifest.get('model')} pseudo-labels + foolbox ImageNet)")


def main(argv=None) -> None:
    """``python -m gradinv_lib.data.pool --rebuild``: regenerate data/pseudo_pool.json."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--rebuild", action="store_true", help="relabel all crops and rewrite the manifest")
    parser.add_argument("--out", default=str(MANIFEST_PATH))
    parser.add_argument("--min-confidence", type=float, default=MIN_CONFIDENCE)
    args = parser.parse_args(argv)
    if not args.rebuild:
        pool = load_pool()
        print(f"{len(pool)} images, {len(pool.distinct_labels())} distinct labels, "
              f"{int(pool.pseudo.sum())} pseudo-labelled")
        return
    from gradinv_lib.models import build_model, describe_weights

    model = build_model("efficientnet_lite0")
    weights_file = Path(describe_weights("efficientnet_lite0")["path"]).name
    manifest = build_pool_manifest(model, min_confidence=args.min_confidence, weights_file=weights_file)
    print(f"wrote {write_manifest(manifest, args.out)}: {manifest['n_entries']} entries, "
          f"{manifest['n_labels']} labels from {manifest['n_candidates']} candidate crops")


if __name__ == "__main__":
    main()
