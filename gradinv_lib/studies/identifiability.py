"""Fig. 8: Image Identifiability Precision (sec. 4.3) versus batch size, for batches drawn from
the whole data set ("random") and from the "vulnerable population" (per class, the image with the
largest gradient norm)."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from .. import paper_results
from ..data import sample_batch
from ..metrics import identifiability_precision, penultimate_features
from ..sweeps import Job, run_jobs
from .common import StudyContext, load_results, pick, save_results, save_study_figure
from .runs import run_attack, scaled_iterations, study_config

QUICK_BATCH_SIZES = (1, 4, 8)
PAPER_BATCH_SIZES = (1, 8, 16, 32, 48)
QUICK_ITERATION_FRACTION = 0.1
QUICK_VULNERABLE_FRACTION = 0.25   # see vulnerable_population: the pool has ~1 image per class


def per_image_gradient_norms(model, images01: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L2 norm of each image's own cross-entropy gradient over all parameters (eval-mode BN).

    Shape: images01 (P, 3, H, W), labels (P,) -> (P,).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    device = params[0].device
    norms = []
    for x, y in zip(images01, labels):
        loss = F.cross_entropy(model(model.normalize(x[None].to(device))), y[None].to(device))
        grads = torch.autograd.grad(loss, params)
        norms.append(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).item())
    return torch.tensor(norms)


def vulnerable_population(norms: torch.Tensor, labels: torch.Tensor, fraction: float = 1.0) -> torch.Tensor:
    """Indices of the vulnerable population: per class, the image with the largest gradient norm
    (the paper's definition, ``fraction=1``); then, DEPARTURE for small pools where classes hold
    one image each (making that population the whole set), only the ``fraction`` of those images
    with the largest norms."""
    best = {}
    for i, (n, y) in enumerate(zip(norms.tolist(), labels.tolist())):
        if y not in best or n > norms[best[y]]:
            best[y] = i
    chosen = torch.tensor(sorted(best.values(), key=lambda i: -norms[i]))
    keep = max(1, int(round(len(chosen) * float(fraction))))
    return chosen[:keep].sort().values


def iip_study(ctx: StudyContext, batch_sizes=None, batches_per_size: int | None = None,
              iterations: int | None = None, vulnerable_fraction: float | None = None,
              executor: str | None = None, **executor_options) -> dict:
    """IIP per batch size and population, over ``batches_per_size`` attacked batches each; the
    gallery for nearest neighbours is the whole data set.

    The attacks are independent jobs run by ``sweeps.run_jobs`` (``executor`` 'local', 'slurm',
    ...); the gallery features and IIP scoring stay here."""
    started = time.perf_counter()
    paper = ctx.profile.name == "paper"
    sizes = [int(b) for b in pick(batch_sizes, PAPER_BATCH_SIZES if paper else QUICK_BATCH_SIZES)]
    batches_per_size = int(pick(batches_per_size, 32 if paper else 1))
    iterations = int(pick(iterations, scaled_iterations(ctx, QUICK_ITERATION_FRACTION)))
    fraction = float(pick(vulnerable_fraction, 1.0 if paper else QUICK_VULNERABLE_FRACTION))
    model, data = ctx.model(), ctx.dataset()
    config = study_config(ctx, iterations)
    gallery = penultimate_features(model, data.images)
    norms = per_image_gradient_norms(model, data.images, data.labels)
    populations = {"random": torch.arange(len(data)),
                   "vulnerable": vulnerable_population(norms, data.labels, fraction)}
    jobs = [Job(f"{pop_name}_b{b}_k{k}", attack_population_batch,
                {"members": members, "batch_size": b, "batch_seed": ctx.seed * 1000 + 31 * b + k,
                 "config": config})
            for pop_name, members in populations.items() for b in sizes for k in range(batches_per_size)]
    attacked = iter(run_jobs(ctx, jobs, executor, **executor_options))
    rows = []
    for pop_name, members in populations.items():
        for b in sizes:
            hits, n_images = 0, 0
            for k in range(batches_per_size):
                reconstruction, originals = next(attacked)
                iip = identifiability_precision(model, reconstruction.to(ctx.device), originals,
                                                pool_features=gallery)
                hits += int(iip["hits"].sum())
                n_images += len(originals)
            rows.append({"population": pop_name, "batch_size": b, "iip": hits / n_images,
                         "images": n_images, "batches": batches_per_size, "population_size": len(members),
                         "iterations": iterations})
    settings = {"batch_sizes": sizes, "batches_per_size": batches_per_size, "iterations": iterations,
                "vulnerable_fraction": fraction, "gallery_size": len(data), "config": config.to_dict(),
                "gradient_norm_median": float(norms.median()),
                "vulnerable_norm_median": float(norms[populations["vulnerable"]].median()),
                "paper": {"iip_at_48": paper_results.FIG8_IIP_AT_48,
                          "vulnerable_factor": paper_results.FIG8_VULNERABLE_FACTOR}}
    return save_results(ctx, "fig8_iip", rows, settings, started)


def attack_population_batch(ctx: StudyContext, members: torch.Tensor, batch_size: int, batch_seed: int,
                            config) -> tuple[torch.Tensor, torch.Tensor]:
    """One job of the IIP sweep: attack a batch drawn from the population ``members`` (data set
    indices); the reconstruction (B, 3, H, W) and the data set index of each image's original."""
    view = ctx.dataset().subset(members)
    batch = sample_batch(view, min(batch_size, len(view.labels.unique())), seed=batch_seed)
    pool_idx = members[[view.ids.index(i) for i in batch.ids]]
    run = run_attack(ctx, batch, config)
    return run.reconstruction, pool_idx[torch.as_tensor(run.evaluation["pairing"])]


def plot_iip(out, pdf: bool = True):
    """Fig. 8: IIP versus batch size, both populations, with the paper's batch-48 facts marked."""
    import matplotlib.pyplot as plt

    record = load_results(out, "fig8_iip")
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for pop, style in (("random", "o-"), ("vulnerable", "s-")):
        rows = [r for r in record["rows"] if r["population"] == pop]
        ax.plot([r["batch_size"] for r in rows], [100 * r["iip"] for r in rows], style, label=f"ours, {pop}")
    p = record["settings"]["paper"]
    ax.plot([48], [100 * p["iip_at_48"]], "k*", ms=10, label="paper, random, B=48 (~28%)")
    ax.plot([48], [100 * p["iip_at_48"] * p["vulnerable_factor"]], "r*", ms=10,
            label="paper, vulnerable, B=48 (~2x)")
    ax.set_xlabel("batch size"), ax.set_ylabel("IIP (%)"), ax.set_ylim(-3, 103)
    ax.set_title(f"Fig. 8: identifiability ({record['context']['profile']} profile)", fontsize=9)
    ax.legend(fontsize=7), ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_study_figure(fig, out, "fig8_iip", pdf)
