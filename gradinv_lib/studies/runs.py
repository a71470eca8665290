"""One attack run as a study row: simulate the client on a batch (in the profile's BN mode), run
GradInversion or a prior attack (``experiments.attack_batch``), flatten the metrics, identify
each reconstruction among the whole pool, keep the images for the figures.

:func:`attack_job` is the same as a ``sweeps.Job`` function: a batch named by (size, seed), so
the study's table rows can run in worker processes or on a cluster."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import torch

from gradinv_lib.attack.config import InversionConfig
from gradinv_lib.data import sample_batch
from gradinv_lib.errors import InputError, MissingAssetError
from gradinv_lib.experiments.run import attack_batch, available_lpips
from gradinv_lib.io import torch_save_atomic
from gradinv_lib.metrics import lite0_features, nearest_neighbour_hits, pixel_correlation_nn, pool_source_groups
from gradinv_lib.metrics.features import lite0_input_side
from gradinv_lib.runtime.nodes import node_facts

from .common import StudyContext

METRICS = ("feature_dist", "fft2d", "psnr", "psnr_registered", "ssim", "lpips")
# identification among the whole pool: exact hits and hits on another crop of the same photo
ID_METRICS = ("pixel_nn_hit", "pixel_nn_sibling", "iip", "iip_sibling")
TABLE_METRICS = (*METRICS, "label_accuracy", *ID_METRICS)
MIN_GROUP_SEEDS = 4    # seeds G of every group-consistency row (paper: 8)

_LPIPS: dict = {}
_GALLERY: dict = {}


def lpips_for(device: str):
    """(LPIPS callable or None, reason) once per device: real LPIPS only, never a random backbone."""
    if device not in _LPIPS:
        _LPIPS[device] = available_lpips(device)
    return _LPIPS[device]


def client_bn_mode(ctx: StudyContext) -> str:
    """BN mode of the client's forward in this profile ("train": its batch's statistics)."""
    return getattr(ctx.profile, "client_bn_mode", "train")


def study_config(ctx: StudyContext, iterations: int | None = None, **changes) -> InversionConfig:
    """The profile's attack configuration with the study's changes (seed = the context's); every
    study runs the profile's iterations unless a notebook parameter says otherwise."""
    config = ctx.profile.config.replace(seed=ctx.seed, **changes)
    return config.replace(iterations=int(iterations)) if iterations else config


def full_method_iterations(ctx: StudyContext, iterations: int | None = None) -> int | None:
    """``iterations``, else the profile's budget for the full method and the attacks compared
    with it (``Profile.full_method_iterations``; None: the profile's config)."""
    return iterations or ctx.profile.full_method_iterations


def objective_configs(ctx: StudyContext, seeds: int | None = None, iterations: int | None = None) -> dict:
    """Table 2's objectives, each adding one term of eqs. 3, 9, 12 to the one before (BN_exact):
    name -> InversionConfig. The group rows use ``seeds`` (default: the profile's, at least 4)."""
    seeds = int(seeds or max(MIN_GROUP_SEEDS, ctx.profile.config.seeds))
    fidelity = study_config(ctx, iterations, seeds=1, group="none", bn_target="exact")
    return {
        "grad": fidelity.replace(alpha_tv=0.0, alpha_l2=0.0, bn_target="none"),
        "fidelity": fidelity,
        "group_lazy": fidelity.replace(seeds=seeds, group="lazy"),
        "group_registered": fidelity.replace(seeds=seeds, group="registered"),
    }


def batch_seeds(ctx: StudyContext, batches: int) -> list[int]:
    """The batches of every table: seeds ctx.seed .. ctx.seed + batches - 1."""
    if int(batches) < 1:
        raise InputError(f"batches: expected a positive integer, found {batches!r}")
    return [ctx.seed + k for k in range(int(batches))]


def run_key(method: str, config, model: str, weights: str, bn_mode: str, batch_ids) -> str:
    """A run's identity (same key: same update, same attack, same result): a short hash. The
    GradInversion rows' names ("gradinversion_bn_exact", ...) all mean "gradinversion": their
    config says which variant."""
    method = "gradinversion" if method.startswith("gradinversion") else method
    text = json.dumps({"method": method, "config": config.to_dict(), "model": model, "weights": weights,
                       "bn_mode": bn_mode, "batch": list(batch_ids)}, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- identification
def pool_gallery(ctx: StudyContext, resolution: int) -> dict:
    """The identification gallery (the whole pool; for CIFAR-10 every real 32 px image on hand,
    ``profiles.identification_gallery``), once per process, data set and resolution: pixels,
    pretrained-Lite0 features, source-photo groups (None outside the embedded pool)."""
    key = (ctx.profile.dataset, resolution)
    if key not in _GALLERY:
        from gradinv_lib.profiles import identification_gallery
        data = identification_gallery(ctx.profile.dataset, ctx.dataset(resolution))
        try:
            groups = pool_source_groups(ids=data.ids)
        except (InputError, MissingAssetError, FileNotFoundError):
            groups = None
        features = _pool_features(ctx, data, resolution)
        _GALLERY[key] = {"data": data, "groups": groups, "features": features,
                         "index": {i: k for k, i in enumerate(data.ids)}}
    return _GALLERY[key]


def _pool_features(ctx: StudyContext, data, resolution: int) -> torch.Tensor | None:
    """Pretrained-Lite0 features of the pool, cached on disk beside the study's results (every
    worker process of a sweep would otherwise spend ~15 s recomputing them); None without Lite0."""
    path = ctx.out / f"pool_lite0_features_{resolution}px.pt"
    side = lite0_input_side(resolution)   # features of another input side are not these
    if path.exists():
        cached = torch.load(path, weights_only=True)  # a planted pickle is refused, never run
        if cached.get("ids") == list(data.ids) and cached.get("lite0_side") == side:
            return cached["features"]
    try:
        features = lite0_features(data.images)
    except MissingAssetError:
        return None
    torch_save_atomic({"ids": list(data.ids), "features": features, "lite0_side": side}, path)
    return features


def identification(ctx: StudyContext, ids, images01: torch.Tensor) -> dict:
    """Exact and sibling hits of ``images01`` (one per pool id in ``ids``, in that order) as
    nearest neighbours among the whole pool: by pixel correlation (mean removed) and by
    pretrained-Lite0 features (IIP). Empty when the images are not from the study's data set."""
    gallery = pool_gallery(ctx, int(images01.shape[-1]))
    if any(i not in gallery["index"] for i in ids):
        return {}
    idx = torch.tensor([gallery["index"][i] for i in ids])
    images01 = images01.detach().cpu().float()
    pixel = pixel_correlation_nn(images01, gallery["data"].images, idx, gallery["groups"])
    out = {"pixel_nn_hit": pixel["hit"], "pixel_nn_sibling": pixel["sibling_hit"]}
    if gallery["features"] is not None:
        iip = nearest_neighbour_hits(lite0_features(images01), gallery["features"], idx, gallery["groups"])
        out.update(iip=iip["hit"], iip_sibling=iip["sibling_hit"])   # IIP on pretrained-Lite0 features
    return out


# ----------------------------------------------------------------------------- one run
@dataclass
class AttackRun:
    row: dict          # flat metrics of the consensus, plus the noise start's
    originals: torch.Tensor   # (B, 3, H, W) paired with ``reconstruction``
    reconstruction: torch.Tensor
    start: torch.Tensor
    evaluation: dict
    seconds: float

    def in_batch_order(self, batch) -> torch.Tensor:
        """The reconstruction reordered so that image i goes with ``batch.images[i]``."""
        ordered = torch.empty_like(self.reconstruction)
        ordered[torch.as_tensor(self.evaluation["pairing"])] = self.reconstruction
        return ordered


def run_attack(ctx: StudyContext, batch, config, model=None, callback=None, method: str = "gradinversion",
               attack_options: dict | None = None, **row_info) -> AttackRun:
    """Attack ``batch`` (LabelledImages) with ``method`` and its ``config`` (``attack_options``
    go to a prior attack, e.g. a GAN row's generator); GradInversion never sees the labels. The
    row carries the metrics, the noise start's (``noise_*``), label accuracy, identification
    among the pool, the terms' forces and the client's BN mode."""
    model = model or ctx.model()
    lpips, lpips_reason = lpips_for(ctx.device)
    options = ({"progress": False, "callback": callback} if method.startswith("gradinversion")
               else dict(attack_options or {}))
    result, ev = attack_batch(model, batch.images.to(ctx.device), batch.labels.to(ctx.device), config,
                              bn_mode=client_bn_mode(ctx), lpips=lpips, method=method, score_seeds=False,
                              **options)
    m, n = ev["metrics"], ev["noise_metrics"]
    perm = torch.as_tensor(ev["pairing"])
    row = {**row_info, "method": method, "model": model.name, "weights": model.weights_source,
           "bn_mode": client_bn_mode(ctx), "batch_size": len(batch), "iterations": result.iterations,
           "seeds": getattr(config, "seeds", getattr(config, "restarts", 1)),
           **{k: m.get(k) for k in METRICS}, **{f"noise_{k}": n.get(k) for k in METRICS},
           "label_accuracy": ev["labels"].get("accuracy"),
           **identification(ctx, [batch.ids[int(i)] for i in perm], result.consensus),
           "seconds": round(result.seconds, 2), "forces": ev.get("forces"), "node": node_facts(ctx.device),
           "lpips_unavailable": lpips_reason}
    return AttackRun(row, batch.images[perm], result.consensus, result.start, ev, result.seconds)


def attack_job(ctx: StudyContext, batch_size: int, batch_seed: int | None, config, method: str = "gradinversion",
               model: str | None = None, weights: str | None = None, resolution: int | None = None,
               indices=None, **row_info) -> dict:
    """One table cell's run as a ``sweeps.Job`` function: the batch of ``batch_size`` distinct
    labels drawn with ``batch_seed`` at ``resolution`` (or the data set's images at ``indices``),
    attacked on ``model`` (default: the profile's). A GAN row loads its generator here.
    Returns {"row": the row with its batch and run key, "images": the reconstruction in batch
    order}."""
    data = ctx.dataset(resolution)
    batch = (data.subset(list(indices)) if indices is not None
             else sample_batch(data, int(batch_size), seed=int(batch_seed)))
    net = ctx.model(model, weights)
    options = {}
    if method == "gan_projection":
        from gradinv_lib.experiments.compare import gan_generator
        options, reason = gan_generator(None, None, None, batch.images.shape[-1], ctx.device)
        if reason:
            raise MissingAssetError(reason)
    run = run_attack(ctx, batch, config, model=net, method=method, attack_options=options, **row_info)
    key = run_key(method, config, net.name, net.weights_source, client_bn_mode(ctx), batch.ids)
    row = {**run.row, "batch_seed": batch_seed, "batch_ids": list(batch.ids), "run_key": key}
    return {"row": row, "images": run.in_batch_order(batch)}

