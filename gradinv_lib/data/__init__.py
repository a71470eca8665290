"""Real images and labels for gradinv: foolbox's embedded ImageNet/CIFAR-10 photos, a larger
pseudo-labelled pool of real photo crops, a local ImageNet folder, and a batch sampler."""

from .embedded import embedded_cifar10, embedded_cifar100, embedded_imagenet, foolbox_data_dir
from .imagenet import ImageNetFolder, imagenet_root
from .images import LabelledImages, concat_labelled, crop_box, load_rgb, preprocess
from .pool import build_pool_manifest, load_pool, read_manifest, write_manifest
from .sampler import sample_batch

__all__ = [
    "LabelledImages",
    "ImageNetFolder",
    "build_pool_manifest",
    "concat_labelled",
    "crop_box",
    "embedded_cifar10",
    "embedded_cifar100",
    "embedded_imagenet",
    "foolbox_data_dir",
    "imagenet_root",
    "load_pool",
    "load_rgb",
    "preprocess",
    "read_manifest",
    "sample_batch",
    "write_manifest",
]
