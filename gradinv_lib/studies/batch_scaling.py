"""Figs. 6-7: how much of a batch GradInversion recovers as the batch grows (metrics and image
grids versus batch size), one batch of distinct labels per size."""

from __future__ import annotations

import time

from ..data import sample_batch
from ..sweeps import Job, run_jobs
from .common import StudyContext, load_results, load_tensors, pick, save_results, save_tensors, save_study_figure
from .runs import run_attack, scaled_iterations, study_config

QUICK_BATCH_SIZES = (1, 2, 4, 8)
PAPER_BATCH_SIZES = (1, 8, 16, 32, 48)
QUICK_ITERATION_FRACTION = 0.2


def batch_scaling(ctx: StudyContext, batch_sizes=None, iterations: int | None = None,
                  executor: str | None = None, **executor_options) -> dict:
    """Attack one batch per size with the profile's configuration; rows of consensus metrics.

    One job per size, run by ``sweeps.run_jobs`` (``executor`` 'local', 'slurm', ...)."""
    started = time.perf_counter()
    paper = ctx.profile.name == "paper"
    sizes = [int(b) for b in pick(batch_sizes, PAPER_BATCH_SIZES if paper else QUICK_BATCH_SIZES)]
    iterations = int(pick(iterations, scaled_iterations(ctx, QUICK_ITERATION_FRACTION)))
    config = study_config(ctx, iterations)
    jobs = [Job(f"batch_{b}", attack_batch_size, {"batch_size": b, "config": config}) for b in sizes]
    rows = []
    for b, (row, tensors) in zip(sizes, run_jobs(ctx, jobs, executor, **executor_options)):
        rows.append(row)
        save_tensors(ctx, f"batch_{b}_images", tensors)
    return save_results(ctx, "batch_scaling", rows,
                        {"batch_sizes": sizes, "iterations": iterations, "config": config.to_dict()}, started)


def attack_batch_size(ctx: StudyContext, batch_size: int, config) -> tuple[dict, dict]:
    """One job of the sweep: attack one batch of ``batch_size``; its row and its image tensors."""
    batch = sample_batch(ctx.dataset(), batch_size, seed=ctx.seed + batch_size)
    run = run_attack(ctx, batch, config)
    return run.row, {"original": run.originals, "reconstruction": run.reconstruction,
                     "labels": batch.labels, "ids": batch.ids}


# ----------------------------------------------------------------------------- plots (cache only)
def plot_metrics(out, pdf: bool = True):
    """Fig. 6-7 summary: PSNR (registered), FFT-2D and feature distance versus batch size,
    with the noise start for reference."""
    import matplotlib.pyplot as plt

    rows = load_results(out, "batch_scaling")["rows"]
    sizes = [r["batch_size"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3))
    for ax, metric, label in zip(axes, ("psnr_registered", "fft2d", "feature_dist"),
                                 ("PSNR after registration (dB) ↑", "FFT-2D ↓", "feature distance ↓")):
        ax.plot(sizes, [r[metric] for r in rows], "o-", label="reconstruction")
        ax.plot(sizes, [r[f"noise_{metric}"] for r in rows], "x--", color="grey", label="noise start")
        ax.set_xscale("log", base=2), ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.set_xlabel("batch size"), ax.set_title(label, fontsize=9), ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return save_study_figure(fig, out, "fig6_metrics_vs_batch", pdf)


def plot_grids(out, pdf: bool = True, max_columns: int = 8):
    """Fig. 7: originals above reconstructions for every batch size (first ``max_columns`` images)."""
    from ..plotting import image_grid
    record = load_results(out, "batch_scaling")
    rows = {}
    for b in record["settings"]["batch_sizes"]:
        t = load_tensors(out, f"batch_{b}_images")
        rows[f"B={b} original"] = t["original"][:max_columns]
        rows[f"B={b} recovered"] = t["reconstruction"][:max_columns]
    fig = image_grid(rows, scale=1.2)
    return save_study_figure(fig, out, "fig7_grids_vs_batch", pdf)
