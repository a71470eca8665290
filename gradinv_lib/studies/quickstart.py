"""The quickstart: one batch end to end (client gradient -> labels -> images -> metrics) with the
profile's full method, a live preview while it optimises (ipywidgets in Jupyter; snapshots kept
for a static strip when run headless, e.g. by papermill), the reconstruction's metrics beside the
content-free references, its identification among the whole pool, and each weighted term's force
on the images at the start and the end (does one term drown the others?).

Quick-profile budget: one batch of 8, 4 seeds (vmap), the profile's full-method budget (1200
iterations; 800 took ~52 s on 2 threads), + ~15 s for the pool's pretrained-Lite0 features and
scoring (``figures/README.md`` gives the notebook's wall and CPU time)."""

from __future__ import annotations

import time

import torch

from gradinv_lib.data import sample_batch
from gradinv_lib.runtime.checkpoint import InversionInterrupted
from gradinv_lib.widgets.preview import ReconstructionPreview

from .aggregate import METRIC_NAMES, VERDICT_WORDS, direction_holds
from .common import (StudyContext, load_results, load_tensors, pick, save_results, save_study_figure, save_tensors,
                     stopping_text)
from .runs import full_method_iterations, run_attack, study_config
from .tables import reference_rows

BATCH_SIZE = 8
DROWNED = 1e-2   # a term whose force is below this fraction of the largest one is drowned


def quickstart(ctx: StudyContext, batch_size: int | None = None, iterations: int | None = None,
               live: bool = True, preview_every: int | None = None, seeds: int | None = None) -> dict:
    """Attack one batch of distinct labels (seed ctx.seed) with the profile's configuration.
    Rows: the reconstruction, the noise start and the mean-colour oracle (metrics, label
    accuracy, identification among the pool); ``forces``: each weighted term's force."""
    started = time.perf_counter()
    batch_size = int(pick(batch_size, BATCH_SIZE))
    config = study_config(ctx, full_method_iterations(ctx, iterations),
                          **({} if seeds is None else {"seeds": int(seeds)}))
    preview_every = int(pick(preview_every, max(1, config.iterations // 100)))
    config = config.replace(log_every=min(config.log_every, preview_every))
    batch = sample_batch(ctx.dataset(), batch_size, seed=ctx.seed)
    preview = ReconstructionPreview(batch.images[batch.labels.argsort()], config.seeds, config.iterations, live=live)
    try:
        run = run_attack(ctx, batch, config, callback=preview)
    except KeyboardInterrupt as stop:   # Kernel > Interrupt: hand back what the preview holds
        return partial_result(ctx, preview, batch_size, config, stop)
    references = reference_rows(ctx, batch, ctx.model(), config, ctx.seed)
    per_image = run.evaluation["metrics"]["per_image"]
    row = {**run.row, "row": "reconstruction", **{f"{k}_std": _spread(v) for k, v in per_image.items()}}
    save_tensors(ctx, "quickstart_images", {"original": run.originals, "noise start": run.start,
                                            "reconstruction": run.reconstruction})
    save_tensors(ctx, "quickstart_progress", preview.strip())
    settings = {"batch_size": batch_size, "iterations": config.iterations, "seeds": config.seeds,
                "model": run.row["model"], "weights": run.row["weights"], "amp": config.amp,
                "group": config.group, "bn_mode": row.get("bn_mode"),
                "stopping": stopping_text(ctx, config.iterations, full_method_iterations(ctx)),
                "config": config.to_dict(), "batch_ids": batch.ids, "true_labels": batch.labels.tolist(),
                "recovered_labels": run.evaluation["labels"]["recovered"], "pseudo_labels": batch.pseudo.tolist()}
    return save_results(ctx, "quickstart", [row, *references], settings, started,
                        extra={"forces": force_rows(run.row.get("forces"))})


def partial_result(ctx: StudyContext, preview: ReconstructionPreview, batch_size: int, config,
                   stop: KeyboardInterrupt) -> dict:
    """The record of an interrupted quickstart: nothing saved, ``images`` the preview's last
    snapshot (originals, every seed, their mean), and one line printed instead of a traceback."""
    done = stop.iteration if isinstance(stop, InversionInterrupted) else preview.iteration
    print(f"interrupted at iteration {done} of {config.iterations}: record['images'] holds the partial result "
          f"(last snapshot: iteration {preview.iteration}); nothing was saved", flush=True)
    settings = {"batch_size": batch_size, "iterations": preview.iteration, "seeds": config.seeds,
                "group": config.group, "bn_mode": "interrupted"}
    return {"partial": True, "rows": [], "forces": [], "settings": settings, "images": dict(preview.latest)}


def _spread(values) -> float:
    """Sample standard deviation over the batch's images (0 for one image)."""
    return float(torch.tensor(values, dtype=torch.float64).std()) if len(values) > 1 else 0.0


def force_rows(forces: dict | None) -> list[dict]:
    """{"start"|"end": {term: force}} -> one row per term: its force at the start and the end and
    each as a fraction of the largest force at that time."""
    if not forces:
        return []
    largest = {when: max(forces[when].values(), default=0.0) or 1.0 for when in ("start", "end")}
    return [{"term": term, **{when: forces[when].get(term) for when in ("start", "end")},
             **{f"{when}_share": (forces[when].get(term) or 0.0) / largest[when] for when in ("start", "end")}}
            for term in forces["start"]]


def force_verdict(rows: list[dict], threshold: float = DROWNED) -> str:
    """One sentence from :func:`force_rows`: which terms are drowned (force below ``threshold``
    of the largest) at the start or the end, or that none is; zero-force terms are off."""
    if not rows:
        return "No forces were recorded for this run."
    off = [r["term"] for r in rows if not r["start"] and not r["end"]]
    parts = []
    for when in ("start", "end"):
        top = max(rows, key=lambda r: r[f"{when}_share"])["term"]
        weak = [f"{r['term']} ({r[f'{when}_share']:.1e} of {top})" for r in rows
                if r["term"] not in off and r[f"{when}_share"] < threshold]
        if weak:
            parts.append(f"at the {when}, {', '.join(weak)} is drowned (below 1/{1 / threshold:.0f} of the largest force)")
    text = ("; ".join(parts).capitalize() + "." if parts else
            f"No active term's force is below 1/{1 / threshold:.0f} of the largest one, at the start or the end: "
            "none drowns the others.")
    return text + (f" Off (zero force, weight 0): {', '.join(off)}." if off else "")


def claims(out) -> str:
    """Markdown measured from the cached quickstart: settings, the reconstruction against the
    noise start (plain PSNR) and the mean-colour oracle (SSIM), each beyond the spread over the
    batch's images, identification among the pool, and the force verdict."""
    record = load_results(out, "quickstart")
    s = record["settings"]
    rows = {r["row"]: r for r in record["rows"]}
    ours = rows["reconstruction"]
    lines = [f"**Quickstart** (batch {s['batch_size']}, {s['iterations']} iterations, {s['seeds']} seed(s), "
             f"group {s['group']}, client BN mode {s['bn_mode']}; stopping: {s['stopping']}; mean ± std "
             "over the batch's images):", ""]
    for ref, metric in (("noise start", "psnr"), ("mean colour", "ssim"), ("mean colour", "psnr")):
        if ref in rows and ours.get(metric) is not None:
            other = rows[ref]
            lines.append(f"- {METRIC_NAMES[metric]}: reconstruction {ours[metric]:.3g} ± {ours[f'{metric}_std']:.2g} "
                         f"vs {ref} {other[metric]:.3g} — better: "
                         f"{VERDICT_WORDS[direction_holds(ours, other, metric)]}.")
    n = s["batch_size"]
    for key, name in (("pixel_nn_hit", "pixel correlation (mean removed)"), ("iip", "pretrained-Lite0 IIP")):
        if ours.get(key) is not None:
            sibling = ours.get(key.replace("_hit", "") + "_sibling") or 0.0
            lines.append(f"- Identified among the whole pool by {name}: {round(ours[key] * n)} of {n} images "
                         f"(another crop of the same photo: {round(sibling * n)}); content-free references: "
                         + ", ".join(f"{r} {round((rows[r].get(key) or 0) * n)}" for r in rows if r != "reconstruction")
                         + ".")
    lines.append(f"- Forces: {force_verdict(record.get('forces', []))}")
    return "\n".join(lines)


def plot_quickstart(out, pdf: bool = True):
    """Originals, noise start and reconstruction; and the progress strip (snapshots over time)."""
    from gradinv_lib.plotting import class_names, image_grid
    record = load_results(out, "quickstart")
    from gradinv_lib.profiles import DATASET_CLASSES, get_profile
    classes = DATASET_CLASSES[get_profile(record["context"]["profile"]).dataset]
    fig = image_grid(load_tensors(out, "quickstart_images"),
                     column_titles=class_names(record["settings"]["recovered_labels"], classes))
    fig.suptitle(f"batch {record['settings']['batch_size']}, {record['settings']['iterations']} iterations",
                 fontsize=9, y=1.01)
    paths = [save_study_figure(fig, out, "quickstart", pdf)]
    strip = load_tensors(out, "quickstart_progress")
    if strip:
        paths.append(save_study_figure(image_grid(strip, scale=1.2), out, "quickstart_progress", pdf))
    return paths
