"""Defences (beyond the paper, issue 13): GradInversion's success against the utility each defence
leaves, per defence and strength, mean ± std over several batches; image grids per strength.

Attack success: label accuracy, plain and registered PSNR, SSIM, pretrained-Lite0 IIP and
pixel-correlation identification among the whole pool (``runs.identification``). Utility: the
cosine of the defended update to the clean update of the same images (``defences.clean_update``:
1 by construction for a larger batch and for secure aggregation, whose cost is elsewhere), over
the whole update and as the mean of each parameter tensor's cosine (the whole-update cosine is
ruled by the classifier's weights, about 90% of the quick network's squared gradient norm on a
measured batch), and the
cosine to the gradient of the whole pool (how well the update points along the training
objective); epsilon for DP. The attack is never told which defence ran: it reads the update
(an update without BN statistics, as DP's, gets BN_approx, the running statistics).

The run itself (client, attack, scoring, utility) is :func:`defence_runs.defence_job`; words and
figures come from the cache only (``defence_report``, re-exported here for the notebook).

Every point's batches are prefixes of one draw per batch seed (``sample_batch`` is prefix-stable),
so a larger batch or an aggregation holds the client's own images first, and runs with the same
update (run key of the images and the defence, a larger batch being FedSGD on more images) are
computed once: FedAvg's K = 1 is the larger batch of factor 2's first batches.

Quick-profile budget, measured twice (this 2-core CPU, 2 worker processes of one thread;
DEPARTURE: 400 iterations a run, not the profile's 800, ONE seed, no group term). Attack seconds
per run, quiet machine (busy with other work): ~8.9 (12.8) at batch 2, ~10.8 (15) at 4, ~19 (17.6)
at 8; FedAvg unrolls K steps: ~28 s at (K, b) = (2, 2), ~37 at (4, 1), ~79 at (8, 1), ~27 at (2, 4):
  batch 2, 5 batches: clean, pruning x2, DP x3, MixUp x2       = 40 runs  ~  360 (510) CPU-s
  larger batch and aggregation at 4 and 8 images, 5 batches      = 20 runs  ~  300 (330) CPU-s
  FedAvg at batch 4, 3 batches, K = 1 reused from the larger batch =  9 runs  ~  280 (320) CPU-s
  the whole notebook with K = 8 as well: 10.8 min wall, 20.9 CPU-min (13.0 and 24.9 when busy),
  with scoring, the pool's Lite0 features and per-image norms and the workers' start. K = 8
  (b = 1, two local epochs) was dropped from the default sweep to fit the 45-minute reproduction:
  its 3 runs cost ~240 CPU-s and gave what K = 4, b = 1 gives (IIP 0, pixel identification 0.17,
  PSNR 12.7 against 12.9 dB); ``STRENGTHS={"fedavg": [[8, 1]]}`` runs it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from gradinv_lib.data import sample_batch
from gradinv_lib.defences import (DPSGD, Defence, FedAvg, GradientPruning, LargerBatch, MixUp, NoDefence, PrivateBN,
                                  SecureAggregation, images_needed)
from gradinv_lib.errors import InputError
from gradinv_lib.federated.fedavg import is_fedsgd
from gradinv_lib.runtime.sweeps import Job, run_jobs

from .aggregate import aggregate_rows
from .batch_scaling import scaling_config
from .common import StudyContext, pick, save_results, save_tensors
from .defence_report import (claims, conclusion, plot_grids, plot_tradeoff,  # noqa: F401 (the notebook's study.*)
                             with_privacy_words)
from .defence_runs import defence_job, defence_key, dp_clip
from .runs import ID_METRICS, METRICS, batch_seeds, client_bn_mode, pool_gallery
from .tables import reusable_runs

QUICK_ITERATIONS = 400          # budget departure: see the module docstring
BATCH = {"quick": 2, "paper": 8}
FEDAVG_BATCH = {"quick": 4, "paper": 8}
BATCHES, FEDAVG_BATCHES = 5, 3
FEDAVG_LR = 0.1                 # the client's SGD rate (its update is (w0 - wK) / lr either way)
DP_DELTA = 1e-5
STRENGTHS = {                   # curve -> strengths, weakest first (FedAvg: (K, local batch))
    "pruning": (0.1, 0.01),
    "dp": (0.0, 1e-4, 1e-3),
    "dp_parts": (1, 2, 3),      # the DP client without noise, one part at a time (DP_PARTS)
    "mixup": (0.75, 0.5),
    "larger_batch": (2, 4),
    "secure_aggregation": (2, 4),
    "fedavg": ((2, 2), (4, 1), (2, None)),   # (8, 1): 2.1x (4, 1)'s cost, the same result (below)
}
STRENGTH_NAMES = {"pruning": "keep", "dp": "noise", "mixup": "weight", "larger_batch": "factor",
                  "secure_aggregation": "clients", "fedavg": "K", "dp_parts": "part"}
# what the DP client does besides adding noise, added one at a time: 3 is DP at noise 0
DP_PARTS = {1: "BN statistics withheld", 2: "+ BN frozen (eval mode)", 3: "+ per-image clipping (DP, noise 0)"}
REFERENCE_METRICS = (*METRICS, *ID_METRICS)
SUMMARY_METRICS = (*METRICS, "label_accuracy", *ID_METRICS, "utility", "utility_layers", "utility_population",
                   "seconds")
RESULTS = "defences"


@dataclass(frozen=True)
class Point:
    """One point of a curve: ``defence`` on clients of ``batch_size`` own images, ``batches`` batches."""

    curve: str
    strength: float
    label: str
    defence: Defence
    batch_size: int
    batches: int


def make_defence(curve: str, strength, batch_size: int, pool_size: int, clip: float = 1.0) -> Defence:
    """The defence of ``curve`` at ``strength`` (DP: ``clip``, delta 1e-5, sampling rate B / pool)."""
    if curve == "fedavg":
        steps, local = strength
        return NoDefence() if is_fedsgd(batch_size, steps, local) else FedAvg(int(steps), FEDAVG_LR, local)
    return {"pruning": lambda v: GradientPruning(float(v)),
            "dp": lambda v: DPSGD(clip, float(v), DP_DELTA, batch_size / pool_size, 1),
            "dp_parts": lambda v: {1: PrivateBN(False), 2: PrivateBN(True),
                                   3: DPSGD(clip, 0.0, DP_DELTA, batch_size / pool_size, 1)}[int(v)],
            "mixup": lambda v: MixUp(float(v)),
            "larger_batch": lambda v: LargerBatch(int(v)),
            "secure_aggregation": lambda v: SecureAggregation(int(v))}[curve](strength)


def point_label(curve: str, strength) -> str:
    """"keep=0.1", "noise=0.0001"; the DP parts by name."""
    if curve == "dp_parts":
        if int(strength) not in DP_PARTS:
            raise InputError(f"STRENGTHS dp_parts: expected parts from {sorted(DP_PARTS)}, found {strength!r}")
        return DP_PARTS[int(strength)]
    return f"{STRENGTH_NAMES[curve]}={strength:g}"


def plan_points(ctx: StudyContext, strengths=None, batch_size=None, batches=None, fedavg_batch=None,
                fedavg_batches=None) -> list[Point]:
    """The clean point and every curve's strengths (``strengths``: curve -> values, default
    :data:`STRENGTHS`; a curve left out is not run); FedAvg's clean point is at its own batch."""
    b = int(pick(batch_size, BATCH.get(ctx.profile.name, 2)))
    fb = int(pick(fedavg_batch, FEDAVG_BATCH.get(ctx.profile.name, 4)))
    n, fn = int(pick(batches, BATCHES)), int(pick(fedavg_batches, FEDAVG_BATCHES))
    pool = len(ctx.dataset())
    strengths = STRENGTHS if strengths is None else strengths
    unknown = sorted(set(strengths) - set(STRENGTHS))
    if unknown:
        raise InputError(f"STRENGTHS: expected defences from {', '.join(STRENGTHS)}, found {unknown}")
    clip = dp_clip(ctx) if {"dp", "dp_parts"} & set(strengths) else None
    points = [Point("none", 0.0, "clean", NoDefence(), b, n)]
    for curve, values in strengths.items():
        if curve == "fedavg":
            steps = [(1, None), *[tuple(v) for v in values]]
            points += [Point(curve, float(k), f"K={k}, b={local or fb}", make_defence(curve, (k, local), fb, pool),
                             fb, fn) for k, local in steps]
            continue
        points += [Point(curve, float(v), point_label(curve, v), make_defence(curve, v, b, pool, clip), b, n)
                   for v in values]
    return points


@dataclass(frozen=True)
class PlannedRun:
    point: Point
    batch_seed: int
    indices: tuple
    key: str


def plan_runs(ctx: StudyContext, points: list[Point], config) -> list[PlannedRun]:
    """Each point's batches: seed s draws ``batch_size + images_needed`` distinct labels (the
    client's own images first); its run key names the update and the attack."""
    data = ctx.dataset()
    where = {image_id: k for k, image_id in enumerate(data.ids)}
    planned = []
    for p in points:
        for s in batch_seeds(ctx, p.batches):
            batch = sample_batch(data, p.batch_size + images_needed(p.defence, p.batch_size), seed=s)
            planned.append(PlannedRun(p, s, tuple(where[i] for i in batch.ids),
                                      defence_key(ctx, config, p.defence, batch.ids, s)))
    return planned


def _cost(run: PlannedRun) -> float:
    steps = [p.local_steps for p in run.point.defence.parts() if isinstance(p, FedAvg)]
    return len(run.indices) * (steps[0] if steps else 1)


def point_name(point: Point) -> str:
    return f"{point.curve}: {point.label}"


def defence_sweep(ctx: StudyContext, points: list[Point], config, reuse=(), executor: str | None = None,
                  **executor_options) -> tuple[list[dict], dict]:
    """Run every planned batch of ``points`` once per run key (the costliest first), runs in the
    cached results ``reuse`` (e.g. "../04_batch_scaling/batch_scaling" when the iterations are
    04's) taken from there. Returns (per-batch rows with ``curve``, ``strength``, ``point``
    and ``run_key``; {point name: the first batch's reconstruction (and MixUp's trained images)})."""
    pool_gallery(ctx, ctx.resolution)         # once here: the workers read the cached features
    previous = reusable_runs(ctx, reuse)
    planned = plan_runs(ctx, points, config)
    found = {r.key: previous.get(r.key) or previous.get(f"{r.key}/reconstruction") for r in planned}
    todo = {}
    for r in sorted(planned, key=lambda r: -_cost(r)):
        if found[r.key] is None and r.key not in todo:
            todo[r.key] = Job(f"{r.point.curve}_{len(todo)}_s{r.batch_seed}", defence_job,
                              {"defence": r.point.defence.to_dict(), "batch_size": r.point.batch_size,
                               "batch_seed": r.batch_seed, "indices": list(r.indices), "config": config})
    done = dict(zip(todo, run_jobs(ctx, list(todo.values()), executor, **executor_options)))
    first = {p: batch_seeds(ctx, p.batches)[0] for p in points}
    widest = max((r for r in planned if r.batch_seed == first[r.point]), key=lambda r: len(r.indices))
    rows, images = [], {"original": ctx.dataset().subset(list(widest.indices)).images}
    for r in planned:
        out = done.get(r.key)
        row = out["row"] if out else found[r.key]
        rows.append({**row, "curve": r.point.curve, "strength": r.point.strength, "label": r.point.label,
                     "point": point_name(r.point), "run_key": r.key})
        if out and r.batch_seed == first[r.point]:
            images[point_name(r.point)] = out["images"]
            if out["trained_on"] is not None:
                images[f"{point_name(r.point)} (trained on)"] = out["trained_on"]
    return rows, images


PER_BATCH = ("batch_seed", "batch_ids", "run_key", "references", "reused_from", "lpips_unavailable", "row",
             "population")


def summarise_points(batch_rows: list[dict]) -> list[dict]:
    """One row per point: mean and spread of each metric over its batches (``aggregate_rows``)."""
    summary = aggregate_rows(batch_rows, "point", SUMMARY_METRICS)
    for row in summary:
        for name in PER_BATCH:
            row.pop(name, None)
    return summary


def summarise_references(batch_rows: list[dict]) -> list[dict]:
    """The noise-start and mean-colour rows of every FedSGD batch, mean ± std per (row, images)."""
    refs = [{**ref, "slot": f"{ref['row']} ({row['images']} images)", "images": row["images"]}
            for row in {r["run_key"]: r for r in batch_rows}.values() for ref in row.get("references", [])]
    return [{k: v for k, v in r.items() if k not in PER_BATCH or k == "row"}
            for r in aggregate_rows(refs, "slot", REFERENCE_METRICS)]


def defences(ctx: StudyContext, strengths=None, batch_size: int | None = None, batches: int | None = None,
             fedavg_batch: int | None = None, fedavg_batches: int | None = None, iterations: int | None = None,
             seeds: int | None = None, executor: str | None = None, **executor_options) -> dict:
    """The defence sweep (:func:`plan_points`, :func:`defence_sweep`) with the attack of Figs. 6-8
    (``batch_scaling.scaling_config``) at ``iterations`` (quick default: 400, see the module
    docstring); summary rows per point, per-batch rows under ``batch_rows``, grids' tensors."""
    started = time.perf_counter()
    quick = ctx.profile.name != "paper"
    config = scaling_config(ctx, pick(iterations, QUICK_ITERATIONS if quick else None), seeds)
    points = plan_points(ctx, strengths, batch_size, batches, fedavg_batch, fedavg_batches)
    batch_rows, images = defence_sweep(ctx, points, config, executor=executor, **executor_options)
    save_tensors(ctx, "defence_images", images)
    settings = {"batch_size": points[0].batch_size, "batches": points[0].batches,
                "fedavg_batch": next((p.batch_size for p in points if p.curve == "fedavg"), None),
                "fedavg_batches": next((p.batches for p in points if p.curve == "fedavg"), None),
                "fedavg_lr": FEDAVG_LR, "dp_delta": DP_DELTA,
                "dp_clip": next((p.defence.clip for p in points if isinstance(p.defence, DPSGD)), None),
                "iterations": config.iterations,
                "profile_iterations": ctx.profile.config.iterations, "seeds": config.seeds, "group": config.group,
                "bn_mode": client_bn_mode(ctx), "pool_size": len(ctx.dataset()), "config": config.to_dict(),
                "points": [{"curve": p.curve, "label": p.label, "strength": p.strength, "defence": p.defence.to_dict(),
                            "batch_size": p.batch_size, "batches": p.batches} for p in points]}
    return save_results(ctx, RESULTS, summarise_points(batch_rows), settings, started,
                        extra={"references": summarise_references(batch_rows), "batch_rows": batch_rows})

