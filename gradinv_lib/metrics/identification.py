"""Identification metrics: Image Identifiability Precision (sec. 4.3, Fig. 8) on pretrained
features, and its pixel-space counterpart, with crops of the same photo ("siblings") counted apart."""

from __future__ import annotations

import torch
from torch import Tensor

from gradinv_lib.errors import InputError

from .features import features_of


def pool_source_groups(ids=None, manifest_path=None) -> Tensor:
    """Group ids of the pool: images cropped from the same source photo share one id.

    Taken from the ``source`` field of the pool manifest (``data/pseudo_pool.json``); ids are
    numbered in order of first appearance. ``ids=None``: one id per manifest entry, in the order
    of ``load_pool()``; otherwise one per given image id (``LabelledImages.ids``, e.g. a subset),
    looked up by ``data.pool.entry_id``.

    Shape: returns (P,) long.
    """
    from gradinv_lib.data.pool import entry_id, read_manifest  # data imports are heavy; only when asked

    entries = read_manifest(manifest_path)["entries"]
    numbers: dict[str, int] = {}
    by_id = {entry_id(e): numbers.setdefault(e["source"], len(numbers)) for e in entries}
    if ids is None:
        return torch.tensor([numbers[e["source"]] for e in entries], dtype=torch.long)
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise InputError(f"ids: expected ids of pool manifest entries, found unknown {missing[:3]}")
    return torch.tensor([by_id[i] for i in ids], dtype=torch.long)


def nearest_neighbour_hits(query: Tensor, gallery: Tensor, originals_idx, groups=None) -> dict:
    """Nearest gallery row of every query row by cosine similarity, as one (N, P) matrix.

    ``hit``: the neighbour is the query's own original ``originals_idx[i]``; ``sibling_hit``: it
    is a DIFFERENT gallery entry with the same group id as the original (``groups``, (P,)).
    An all-zero query (e.g. a flat image in pixel space) gets ``nearest = -1`` and no hit.

    Shape: query (N, D), gallery (P, D). Returns dict(hit=float, sibling_hit=float,
    hits=(N,) bool, sibling_hits=(N,) bool, nearest=(N,) long, similarity=(N,) float).
    """
    idx = torch.as_tensor(originals_idx, dtype=torch.long).flatten().cpu()
    if idx.numel() != query.shape[0]:
        raise InputError(f"originals_idx: expected {query.shape[0]} indices, found {idx.numel()}")
    p = gallery.shape[0]
    if idx.numel() and (idx.min() < 0 or idx.max() >= p):
        raise InputError(f"originals_idx: expected indices in [0, {p}), found range "
                         f"[{idx.min().item()}, {idx.max().item()}]")
    q = torch.nn.functional.normalize(query.double(), dim=1)
    g = torch.nn.functional.normalize(gallery.double().to(q.device), dim=1)
    best, nearest = (q @ g.T).max(dim=1)
    nearest = torch.where(query.norm(dim=1) > 0, nearest, -1).cpu()  # an empty query matches nothing
    hits = nearest == idx
    if groups is None:
        siblings = torch.zeros_like(hits)
    else:
        groups = torch.as_tensor(groups, dtype=torch.long).flatten().cpu()
        if groups.numel() != p:
            raise InputError(f"groups: expected one group id per gallery image ({p}), found {groups.numel()}")
        siblings = ~hits & (nearest >= 0) & (groups[nearest.clamp_min(0)] == groups[idx])
    n = max(1, idx.numel())
    return dict(hit=hits.sum().item() / n, sibling_hit=siblings.sum().item() / n, hits=hits,
                sibling_hits=siblings, nearest=nearest, similarity=best.cpu())


def identifiability_precision(model, reconstructions01: Tensor, originals_idx: Tensor,
                              pool_images01: Tensor | None = None, batch: int = 64,
                              pool_features: Tensor | None = None, groups=None) -> dict:
    """Image Identifiability Precision (sec. 4.3, Fig. 8).

    Each reconstruction's nearest neighbour in the pool by cosine similarity of avg-pool
    features; IIP is the fraction whose neighbour is its own original (``originals_idx[i]``, a
    pool index). ``model=None`` (default for the studies): features of the PRETRAINED
    EfficientNet-Lite0 (:func:`lite0_features`), not the attacked network; a classifier may be
    passed to use its features. ``pool_features`` (precomputed with the SAME extractor) saves
    recomputing the pool. ``groups`` (P,): source-photo ids (:func:`pool_source_groups`); a
    neighbour that is another crop of the original's photo counts as ``sibling_hit``, not a hit.

    Returns:
        dict(iip=float, hits=(N,) bool, nearest=(N,) long, similarity=(N,) float,
        sibling_hit=float, sibling_hits=(N,) bool).
    """
    if pool_features is None:
        if pool_images01 is None:
            raise InputError("identifiability_precision: expected pool_images01 or pool_features, found neither")
        pool_features = features_of(model, pool_images01, batch)
    out = nearest_neighbour_hits(features_of(model, reconstructions01, batch), pool_features,
                                 originals_idx, groups)
    out["iip"] = out.pop("hit")
    return out


def pixel_correlation_nn(reconstructions01: Tensor, gallery01: Tensor, originals_idx, groups=None) -> dict:
    """Identification in pixel space: each reconstruction's nearest gallery image by Pearson
    correlation of pixels after removing each image's per-channel mean (colour alone identifies
    nothing: a flat image correlates 0 with everything).

    Shape: reconstructions01 (N, C, H, W), gallery01 (P, C, H, W) of the same C, H, W. Returns
    dict(hit, sibling_hit, hits, sibling_hits, nearest, similarity) as :func:`nearest_neighbour_hits`.
    """
    if reconstructions01.dim() != 4 or reconstructions01.shape[1:] != gallery01.shape[1:]:
        raise InputError(f"expected reconstructions (N, C, H, W) and gallery (P, C, H, W) of one image shape, "
                         f"found {tuple(reconstructions01.shape)} and {tuple(gallery01.shape)}")

    def centred(x: Tensor) -> Tensor:
        x = x.double()
        return (x - x.mean(dim=(-2, -1), keepdim=True)).flatten(1)

    return nearest_neighbour_hits(centred(reconstructions01), centred(gallery01), originals_idx, groups)
