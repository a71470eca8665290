"""A table of Tables 2-4: every row (an attack configuration) on the same several batches, run as
``sweeps.Job`` s, plus the two content-free reference rows of each batch, summarised as mean and
spread over the batches. Runs another table already made (same update, same attack: same run
key) are reused from its cached JSON instead of recomputed."""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from gradinv_lib.data import sample_batch
from gradinv_lib.errors import MissingAssetError
from gradinv_lib.metrics import noise_start_like
from gradinv_lib.registration import REGISTRATIONS
from gradinv_lib.runtime.sweeps import Job, run_jobs

from .aggregate import aggregate_rows, claim_lines, reference_scores
from .common import StudyContext, load_results, result_candidates
from .runs import (TABLE_METRICS, attack_job, batch_seeds, client_bn_mode, identification, lpips_for, pool_gallery,
                   run_key)

PER_BATCH_FIELDS = ("batch_seed", "batch_ids", "run_key", "forces", "reused_from", "lpips_unavailable")
SUMMARY_METRICS = (*TABLE_METRICS, "seconds")


@dataclass(frozen=True)
class RowSpec:
    """One table row: ``method`` ("gradinversion" or a prior attack) with its ``config`` on
    ``model`` / ``weights`` (None: the profile's); ``info`` adds columns to the row."""

    name: str
    config: object
    method: str = "gradinversion"
    model: str | None = None
    weights: str | None = None
    info: tuple = ()   # ((column, value), ...)


def reusable_runs(ctx: StudyContext, sources) -> dict:
    """run key -> per-batch row, from the ``batch_rows`` of cached results ``sources`` (paths
    relative to the study's folder without ".json", e.g. "../02_ablation/table2_ablation")."""
    found = {}
    for source in sources:
        for path in result_candidates(ctx, source):
            for row in json.loads(path.read_text()).get("batch_rows", []):
                if row.get("run_key"):
                    found[row["run_key"]] = {**row, "reused_from": source}
    return found


def start_of(batch, model, config) -> torch.Tensor:
    """The attacks' starting images for ``batch`` (pixel space): ``config.seed``'s N(0, init_std^2)
    noise in ``model``'s normalised space, in the pixel box (as the attacks draw it on CPU)."""
    return noise_start_like(batch.images, seed=config.seed, init_std=getattr(config, "init_std", 1.0),
                            mean=model.mean.flatten().tolist(), std=model.std.flatten().tolist())


def reference_rows(ctx: StudyContext, batch, model, config, batch_seed: int) -> list[dict]:
    """"noise start" (:func:`start_of`) and "mean colour" (each original's flat mean colour) of
    one batch, scored like the attacks, with identification among the pool."""
    originals, start = batch.images, start_of(batch, model, config)
    lpips, reason = lpips_for(ctx.device)
    scores = reference_scores(originals, start, registration=REGISTRATIONS["similarity"], lpips=lpips)
    images = {"noise start": start, "mean colour": originals.mean(dim=(-2, -1), keepdim=True).expand_as(originals)}
    return [{"row": name, "method": "reference", "batch_size": len(batch), "iterations": 0,
             **{k: v for k, v in metrics.items() if k != "n"}, "label_accuracy": None,
             **identification(ctx, batch.ids, images[name]), "seconds": 0.0, "batch_seed": batch_seed,
             "batch_ids": list(batch.ids), "lpips_unavailable": reason}
            for name, metrics in scores.items()]


def run_table(ctx: StudyContext, specs: list[RowSpec], batch_size: int, batches: int,
              resolution: int | None = None, reuse=(), executor: str | None = None,
              **executor_options) -> tuple[list[dict], dict]:
    """Every row of ``specs`` on each of ``batches`` batches of ``batch_size`` distinct labels
    (seeds ctx.seed ..), plus the reference rows of each batch (from the first spec's model and
    starting noise). Returns (per-batch rows, {"original": first batch, row name: its images}),
    the images of reused runs excepted."""
    resolution = int(resolution or ctx.resolution)
    seeds = batch_seeds(ctx, batches)
    drawn = {s: sample_batch(ctx.dataset(resolution), int(batch_size), seed=s) for s in seeds}
    pool_gallery(ctx, resolution)   # computed once here, read by every worker from its cache file
    previous = reusable_runs(ctx, reuse)
    rows, jobs, slots = {}, [], {}
    for spec in specs:
        net = ctx.model(spec.model, spec.weights)
        for s in seeds:
            key = run_key(spec.method, spec.config, net.name, net.weights_source, client_bn_mode(ctx), drawn[s].ids)
            if key in previous:
                rows[(spec.name, s)] = {**previous[key], **dict(spec.info)}
                continue
            slots[len(jobs)] = (spec.name, s)
            jobs.append(Job(f"{spec.name}_b{s}", attack_job,
                            {"batch_size": int(batch_size), "batch_seed": s, "config": spec.config,
                             "method": spec.method, "model": spec.model, "weights": spec.weights,
                             "resolution": resolution, **dict(spec.info)}))
    order = sorted(range(len(jobs)), key=lambda j: -_cost(jobs[j]))   # longest first: workers stay busy
    first = ctx.model(specs[0].model, specs[0].weights)
    images = {"original": drawn[seeds[0]].images, "noise start": start_of(drawn[seeds[0]], first, specs[0].config)}
    for j, out in zip(order, run_jobs(ctx, [jobs[j] for j in order], executor, **executor_options)):
        rows[slots[j]] = out["row"]
        if slots[j][1] == seeds[0]:
            images[slots[j][0]] = out["images"]
    refs = [r for s in seeds for r in reference_rows(ctx, drawn[s], first, specs[0].config, s)]
    ordered = [{**rows[(spec.name, s)], "row": spec.name} for spec in specs for s in seeds]
    return refs + ordered, images


def _cost(job: Job) -> int:
    config = job.kwargs["config"]
    return getattr(config, "seeds", None) or getattr(config, "restarts", 1)


def summarise(batch_rows: list[dict], metrics=SUMMARY_METRICS) -> list[dict]:
    """One row per table row: mean and spread (``<metric>_std``) of each metric over its batches,
    the per-batch fields left out, and the mean force of each term at the start and the end."""
    summary = aggregate_rows(batch_rows, "row", metrics)
    for row in summary:
        members = [r for r in batch_rows if r["row"] == row["row"]]
        for name in PER_BATCH_FIELDS:
            row.pop(name, None)
        row["batch_seeds"] = [r.get("batch_seed") for r in members]
        row["reused"] = sum(1 for r in members if r.get("reused_from"))
        forces = [r["forces"] for r in members if r.get("forces")]
        if forces:
            row["forces"] = {when: {term: float(torch.tensor([f[when][term] for f in forces]).mean())
                                    for term in forces[0][when]} for when in forces[0]}
    return summary


def claims_markdown(out, tables) -> str:
    """Markdown measured from cached tables ((result name, title), ...): each table's settings
    (batches, iterations, client BN mode) and :func:`aggregate.claim_lines` of its rows."""
    lines = []
    for name, title in tables:
        try:
            record = load_results(out, name)
        except MissingAssetError:
            lines += [f"*{title}: not computed yet.*", ""]
            continue
        s = record["settings"]
        lines.append(f"**{title}** ({s.get('batches', 1)} batch(es) of {s.get('batch_size', 1)}, "
                     f"{s['iterations']} iterations a run, client BN mode {s.get('bn_mode')}; "
                     "mean ± std over batches):")
        lines += claim_lines(record["rows"]) + [""]
    return "\n".join(lines)


TABLE_COLUMNS = {"row": "row", "feature_dist": "feature dist (Lite0) ↓", "paper_feature_dist": "paper",
                 "fft2d": "FFT-2D ↓", "paper_fft2d": "paper", "psnr": "PSNR ↑", "psnr_registered": "PSNR reg. ↑",
                 "paper_psnr": "paper (reg.)", "ssim": "SSIM ↑", "lpips": "LPIPS ↓", "paper_lpips": "paper",
                 "label_accuracy": "labels", "pixel_nn_hit": "pixel NN hit", "pixel_nn_sibling": "sibling",
                 "iip": "IIP (Lite0)", "iip_sibling": "sibling", "direction_text": "paper's direction?"}


def display_columns(rows: list[dict], **extra) -> dict:
    """:data:`TABLE_COLUMNS` (plus ``extra`` columns after the row name) without the columns no
    row has a value for (LPIPS without its real backbone, the paper's values where it has none)."""
    columns = {"row": "row", **extra, **{k: v for k, v in TABLE_COLUMNS.items() if k != "row"}}
    shown = {k for k in columns if k == "row" or any(r.get(k) is not None for r in rows)}
    return {k: v for k, v in columns.items()
            if k in shown and not (k.startswith("paper_") and k[6:] in columns and k[6:] not in shown)}
