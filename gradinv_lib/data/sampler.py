"""Random batches from a LabelledImages set: distinct labels (the paper's setting), or with
repeated labels on purpose, reproducible from a seed."""

from __future__ import annotations

import math

import torch

from gradinv_lib.errors import InputError

from .images import LabelledImages


def make_generator(seed=None) -> torch.Generator | None:
    """A torch.Generator from an int seed; a Generator is used as is; None -> torch's global RNG."""
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"expected seed to be None, an int or a torch.Generator, found {seed!r}")
    return torch.Generator().manual_seed(seed)


def _indices_by_label(dataset: LabelledImages) -> dict:
    """label -> tensor of the indices of its images, labels in ascending order."""
    labels = dataset.labels
    return {int(lab): (labels == lab).nonzero().flatten() for lab in labels.unique()}


def _pick(pool: torch.Tensor, count: int, gen) -> list:
    """``count`` indices from ``pool``: distinct while the pool lasts, then with replacement."""
    order = pool[torch.randperm(len(pool), generator=gen)]
    extra = pool[torch.randint(len(pool), (max(0, count - len(pool)),), generator=gen)]
    return torch.cat([order, extra])[:count].tolist()


def sample_batch(dataset: LabelledImages, batch_size: int, seed=None, distinct_labels: bool = True,
                 repeats: int = 1) -> LabelledImages:
    """Draw a batch of ``batch_size`` images from ``dataset``.

    - ``distinct_labels=True`` (default, the paper's setting): ``batch_size`` distinct labels
      chosen uniformly, then one image per label chosen uniformly among that label's images.
    - ``distinct_labels=False, repeats=1``: ``batch_size`` distinct images uniformly (labels repeat
      only where the data set has several images of one label).
    - ``distinct_labels=False, repeats=k``: ceil(batch_size/k) distinct labels, each given k times
      (the last one fewer if k does not divide batch_size), for testing repeated-label behaviour.
      The images of a repeated label are distinct while the label has enough of them, then reused.

    ``seed``: int or torch.Generator (reproducible), or None for torch's global RNG.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"expected a positive integer batch_size, found {batch_size!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise InputError(f"expected repeats to be a positive integer, found {repeats!r}")
    if distinct_labels and repeats != 1:
        raise InputError(f"expected repeats=1 with distinct_labels=True, found repeats={repeats}")
    gen = make_generator(seed)
    if not distinct_labels and repeats == 1:
        if batch_size > len(dataset):
            raise InputError(f"batch_size {batch_size} exceeds the {len(dataset)} images of {dataset.source}")
        return dataset.subset(torch.randperm(len(dataset), generator=gen)[:batch_size])
    by_label = _indices_by_label(dataset)
    n_labels = math.ceil(batch_size / repeats)
    if n_labels > len(by_label):
        raise InputError(
            f"batch_size {batch_size} with {repeats} image(s) per label needs {n_labels} distinct labels, "
            f"but {dataset.source} has only {len(by_label)} distinct labels"
        )
    labels = list(by_label)
    chosen = [labels[i] for i in torch.randperm(len(labels), generator=gen)[:n_labels].tolist()]
    counts = [min(repeats, batch_size - i * repeats) for i in range(n_labels)]
    picks = [idx for lab, c in zip(chosen, counts) for idx in _pick(by_label[lab], c, gen)]
    return dataset.subset(picks)
