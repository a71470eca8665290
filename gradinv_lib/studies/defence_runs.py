"""One run of the defence sweep (``studies.defences``) as a ``sweeps.Job``: the client runs a
defence, GradInversion inverts what the server receives, the run is scored like every study's
(``runs.identification``, the content-free ``tables.reference_rows``) and the defence's utility
and epsilon are measured on the same update."""

from __future__ import annotations

import hashlib
import json
import math

import torch

from gradinv_lib.attack.pipeline import gradinversion
from gradinv_lib.defences import (DPSGD, Defence, LargerBatch, MixUp, NoDefence, clean_update, defence_from_dict,
                                  defended_update, epsilon, mix_batch, per_sample_norms, update_cosine)
from gradinv_lib.experiments.run import evaluate_attack
from gradinv_lib.federated.client import simulate_client

from .common import StudyContext
from .runs import METRICS, client_bn_mode, identification, lpips_for, run_key
from .tables import reference_rows

POOL_SAMPLE = 512               # images standing for the data set in dp_clip and pool_gradient


def pool_sample(ctx: StudyContext):
    """The data set, or ``POOL_SAMPLE`` of its images drawn with the context's seed when larger."""
    data = ctx.dataset()
    if len(data) <= POOL_SAMPLE:
        return data
    return data.subset(torch.randperm(len(data), generator=torch.Generator().manual_seed(ctx.seed))[:POOL_SAMPLE])


def dp_clip(ctx: StudyContext) -> float:
    """DP-SGD's clipping norm: the median per-image gradient norm over the pool at the global
    weights (3 significant digits; Abadi et al. advise clipping near the median norm). With a
    clip far below every norm, clipping only rescales the update, and that alone defeats the
    L2 matching of eq. 3, which is not scale-free: the noise would then have nothing left to do."""
    data = pool_sample(ctx)
    norms = per_sample_norms(ctx.model(), data.images.to(ctx.device), data.labels.to(ctx.device))
    return float(f"{float(norms.median()):.3g}")


def attacked_parts(defence: Defence) -> list[Defence]:
    """The parts that change the update of the images it covers (all but NoDefence, LargerBatch)."""
    return [p for p in defence.parts() if not isinstance(p, (NoDefence, LargerBatch))]


def defence_key(ctx: StudyContext, config, defence: Defence, ids, seed: int) -> str:
    """The run's identity: ``runs.run_key`` of the images (all of them) for an undefended or
    larger-batch run (FedSGD on those images), else that key hashed with the defence and seed."""
    model = ctx.model()
    base = run_key("gradinversion", config, model.name, model.weights_source, client_bn_mode(ctx), ids)
    rest = [p.to_dict() for p in attacked_parts(defence)]
    return base if not rest else hashlib.sha1(json.dumps([base, rest, seed]).encode()).hexdigest()[:16]


_POOL_GRADIENT: dict = {}


def pool_gradient(ctx: StudyContext) -> dict:
    """The FedSGD gradient of the whole pool (the training objective's direction; ``pool_sample``
    of a larger data set), once a process."""
    key = (ctx.resolution, client_bn_mode(ctx))
    if key not in _POOL_GRADIENT:
        data = pool_sample(ctx)
        _POOL_GRADIENT[key] = simulate_client(ctx.model(), data.images.to(ctx.device), data.labels.to(ctx.device),
                                              client_bn_mode(ctx)).gradients
    return _POOL_GRADIENT[key]


def privacy(defence: Defence) -> dict:
    """epsilon of the one update attacked, and of one epoch (1 / sample_rate steps), None
    without DP or without noise (infinite)."""
    dp = [p for p in defence.parts() if isinstance(p, DPSGD)]
    if not dp:
        return {"epsilon": None, "epsilon_epoch": None}
    values = (epsilon(defence), epsilon(defence, math.ceil(1 / dp[0].sample_rate)))
    return {k: None if math.isinf(v) else v for k, v in zip(("epsilon", "epsilon_epoch"), values)}


def defence_job(ctx: StudyContext, defence: dict, batch_size: int, batch_seed: int, indices, config) -> dict:
    """One run as a ``sweeps.Job`` function: the client holding the first ``batch_size`` images at
    ``indices`` runs ``defence`` (the rest are the images it needs besides, ``images_needed``),
    the attack inverts what the server receives, and every image at ``indices`` is scored.
    Returns {"row", "images": the reconstruction in batch order, "trained_on": MixUp's images}."""
    model, batch, mode = ctx.model(), ctx.dataset().subset(list(indices)), client_bn_mode(ctx)
    chosen = defence_from_dict(defence)
    x, y = batch.images.to(ctx.device), batch.labels.to(ctx.device)
    own, others = (x[:batch_size], y[:batch_size]), ((x[batch_size:], y[batch_size:]) if len(x) > batch_size else None)
    update = defended_update(model, *own, chosen, mode, others, batch_seed)
    reference = clean_update(model, *own, chosen, mode, others)
    attack = config if update.bn_stats or config.bn_target != "exact" else config.replace(bn_target="running")
    result = gradinversion(model, update.without_labels(), attack, progress=False)
    lpips, reason = lpips_for(ctx.device)
    ev = evaluate_attack(model, result, batch.images, batch.labels, lpips=lpips, score_seeds=False)
    pairing = torch.as_tensor(ev["pairing"])
    row = {"defence": chosen.to_dict(), "batch_size": batch_size, "images": len(batch), "batch_seed": batch_seed,
           "batch_ids": list(batch.ids), "iterations": result.iterations, "bn_target": attack.bn_target,
           **{k: ev["metrics"].get(k) for k in METRICS}, "label_accuracy": ev["labels"].get("accuracy"),
           **identification(ctx, [batch.ids[int(i)] for i in pairing], result.consensus),
           "utility": update_cosine(update, reference), "utility_layers": update_cosine(update, reference, True),
           "utility_population": update_cosine(update, pool_gradient(ctx)),
           **privacy(chosen), "seconds": round(result.seconds, 2), "lpips_unavailable": reason}
    if not attacked_parts(chosen):    # FedSGD on these images: the batch's content-free references too
        row["references"] = reference_rows(ctx, batch, model, config, batch_seed)
    images = torch.empty_like(result.consensus)
    images[pairing] = result.consensus
    mixup = [p for p in chosen.parts() if isinstance(p, MixUp)]
    trained = (mix_batch(batch.images[:batch_size], mixup[0].weight, torch.Generator().manual_seed(batch_seed))[0]
               if mixup else None)
    return {"row": row, "images": images.cpu(), "trained_on": trained}
