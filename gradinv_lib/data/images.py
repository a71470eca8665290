"""Image files to tensors: loading, the standard resize + centre-crop, square crops, and the
``LabelledImages`` container every data source in gradinv returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torchvision.transforms.functional as TF
from PIL import Image, UnidentifiedImageError

from gradinv_lib.errors import InputError, MissingAssetError

# ImageNet evaluation convention: resize the shorter side to R * 256/224, then centre-crop R.
RESIZE_RATIO = 256 / 224


def load_rgb(path) -> Image.Image:
    """Open an image file as an RGB PIL image (grey, palette and alpha are converted)."""
    path = Path(path)
    if not path.is_file():
        raise MissingAssetError(f"expected an image file at {path}, found nothing there")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"expected an image file at {path}, found a file PIL cannot read ({exc})") from exc


def to_tensor01(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) float32 tensor in [0, 1]."""
    if not isinstance(img, Image.Image):
        raise InputError(f"expected a PIL image, found {type(img).__name__}")
    return TF.pil_to_tensor(img.convert("RGB")).float().div_(255.0)


def _resize(img: Image.Image, size) -> Image.Image:
    """Bicubic resize of a PIL image (PIL's filter, antialiased when shrinking).

    This is EfficientNet's own evaluation resize: with it the shipped Lite0 weights classify 18
    of the 20 embedded ImageNet photos correctly (17 with bilinear or tensor-side bicubic).
    """
    return TF.resize(img, size, interpolation=TF.InterpolationMode.BICUBIC)


def _check_resolution(resolution: int) -> int:
    if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution < 8:
        raise InputError(f"expected an integer resolution >= 8, found {resolution!r}")
    return resolution


def preprocess(img: Image.Image, resolution: int = 224) -> torch.Tensor:
    """Resize the shorter side to round(R*256/224), centre-crop R x R; (3, R, R) float in [0, 1]."""
    resolution = _check_resolution(resolution)
    x = to_tensor01(_resize(img.convert("RGB"), round(resolution * RESIZE_RATIO)))
    return TF.center_crop(x, [resolution, resolution])


def crop_box(img: Image.Image, box: Sequence[int], hflip: bool, resolution: int) -> torch.Tensor:
    """Cut ``box`` = (left, top, right, bottom) out of ``img`` (source pixels), optionally mirror
    it, and resize it to (3, R, R) float in [0, 1]. The box must be square and inside the image."""
    resolution = _check_resolution(resolution)
    left, top, right, bottom = (int(v) for v in box)
    w, h = img.size
    if not (0 <= left < right <= w and 0 <= top < bottom <= h) or right - left != bottom - top:
        raise InputError(
            f"expected a square crop box inside the {w}x{h} image, found (l,t,r,b)={tuple(box)}"
        )
    crop = img.convert("RGB").crop((left, top, right, bottom))
    if hflip:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return to_tensor01(_resize(crop, [resolution, resolution]))


@dataclass
class LabelledImages:
    """A batch or data set of images in pixel space with their labels.

    images: (N, 3, R, R) float in [0, 1]; labels: (N,) long; ids: one name per image;
    pseudo: (N,) bool, True where the label is a model's prediction rather than ground truth;
    source: a short description of where the images come from.
    """

    images: torch.Tensor
    labels: torch.Tensor
    ids: list
    pseudo: torch.Tensor
    source: str

    def __post_init__(self):
        n = self.images.shape[0] if self.images.dim() == 4 else -1
        if self.images.dim() != 4 or self.images.shape[1] != 3:
            raise InputError(f"expected images of shape (N, 3, H, W), found {tuple(self.images.shape)}")
        self.labels = torch.as_tensor(self.labels, dtype=torch.long)
        self.pseudo = torch.as_tensor(self.pseudo, dtype=torch.bool)
        self.ids = list(self.ids)
        lengths = {"labels": self.labels.shape, "ids": (len(self.ids),), "pseudo": self.pseudo.shape}
        bad = {k: v for k, v in lengths.items() if tuple(v) != (n,)}
        if bad:
            raise InputError(f"expected labels, ids and pseudo of length {n} (one per image), found {bad}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, indices) -> "LabelledImages":
        """The images at ``indices`` (any sequence or 1-D tensor of ints), in that order."""
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        if idx.numel() and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise InputError(f"expected indices in [0, {len(self)}), found {idx.tolist()}")
        return LabelledImages(
            images=self.images[idx],
            labels=self.labels[idx],
            ids=[self.ids[i] for i in idx.tolist()],
            pseudo=self.pseudo[idx],
            source=self.source,
        )

    @property
    def resolution(self) -> int:
        return self.images.shape[-1]

    def distinct_labels(self) -> list:
        """Sorted list of the distinct labels present."""
        return sorted(set(self.labels.tolist()))


def stack_labelled(tensors, labels, ids, pseudo, source: str) -> LabelledImages:
    """Build a LabelledImages from lists of (3, R, R) tensors and per-image metadata."""
    if not tensors:
        raise InputError(f"expected at least one image for {source}, found none")
    return LabelledImages(torch.stack(tensors), torch.tensor(labels, dtype=torch.long), ids,
                          torch.tensor(pseudo, dtype=torch.bool), source)


def concat_labelled(parts, source: str) -> LabelledImages:
    """Several LabelledImages of one resolution as one (images, labels, ids and pseudo flags in order)."""
    sides = {tuple(p.images.shape[1:]) for p in parts}
    if len(sides) != 1:
        raise InputError(f"expected image sets of one shape to concatenate, found {sorted(sides)}")
    return LabelledImages(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]),
                          [i for p in parts for i in p.ids], torch.cat([p.pseudo for p in parts]), source)
