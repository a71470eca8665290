"""Fig. 8: Image Identifiability Precision (sec. 4.3) versus batch size, for batches drawn from
the whole data set ("random") and from the "vulnerable population" (per class, the image with the
largest gradient norm). IIP uses the PRETRAINED EfficientNet-Lite0's features with the whole pool
as the gallery (a hit on another crop of the original's photo is counted apart); identification by
pixel correlation (mean removed) stands beside it. Mean ± std over the batches of each size.

The attacks are ``batch_scaling.batch_sweep``'s: the random population's batches are Figs. 6-7's
(same seeds, same configuration), reused from figures/<profile>/04_batch_scaling when it holds
runs with the same run keys (``gradinv reproduce`` runs 04 first).

Quick-profile budget (2 worker processes, one thread each; one-seed runs of the profile's 800
iterations: ~36 s at batch 8):
  random population: 04's runs and reference rows reused      ~   0 CPU-s (~1060 without them)
  vulnerable population, size 8 x 8 batches: 8 x 38            ~ 300 CPU-s
  per-image gradient norms of the pool, workers' start           ~  60 CPU-s
  together ~ 360 CPU-s, ~3 min wall on 2 workers (measured since the factored classifier
  gradient: notebook 05 275 CPU-s, 147 s wall).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from gradinv_lib import paper_results

from .aggregate import VERDICT_WORDS, direction_holds
from .batch_scaling import (BATCHES, PAPER_BATCH_SIZES, QUICK_BATCH_SIZES, RECONSTRUCTION, batch_sweep, plan_batches,
                            scaling_config, trend_line)
from .common import StudyContext, load_results, pick, save_results, save_study_figure, stopping_text
from .runs import pool_gallery
from .tables import summarise

QUICK_VULNERABLE_SIZES = (8,)       # budget: see the module docstring
QUICK_VULNERABLE_FRACTION = 0.25     # see vulnerable_population: the pool has ~1 image per class
ID_COLUMNS = ("iip", "iip_sibling", "pixel_nn_hit", "pixel_nn_sibling")
SCALING_RESULTS = "../04_batch_scaling/batch_scaling"


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
              vulnerable_sizes=None, seeds: int | None = None, reuse=(), executor: str | None = None,
              **executor_options) -> dict:
    """IIP and pixel-correlation identification per population and batch size, mean ± std over
    ``batches_per_size`` batches (seeds ctx.seed ..), with the noise-start and mean-colour rows;
    attacks configured as Figs. 6-7's (:func:`batch_scaling.scaling_config`); runs with the same
    run key in Fig. 6's results, or in the cached results ``reuse``, are not attacked again."""
    started = time.perf_counter()
    paper = ctx.profile.name == "paper"
    sizes = [int(b) for b in pick(batch_sizes, PAPER_BATCH_SIZES if paper else QUICK_BATCH_SIZES)]
    vulnerable_sizes = [int(b) for b in pick(vulnerable_sizes, sizes if paper else QUICK_VULNERABLE_SIZES)]
    batches = int(pick(batches_per_size, 32 if paper else BATCHES))
    fraction = float(pick(vulnerable_fraction, 1.0 if paper else QUICK_VULNERABLE_FRACTION))
    model, data = ctx.model(), ctx.dataset()
    config = scaling_config(ctx, iterations, seeds)
    norms = per_image_gradient_norms(model, data.images, data.labels)
    vulnerable = vulnerable_population(norms, data.labels, fraction)
    planned = (plan_batches(ctx, sizes, batches) +
               plan_batches(ctx, vulnerable_sizes, batches, "vulnerable", vulnerable))
    batch_rows, _ = batch_sweep(ctx, planned, config, reuse=(SCALING_RESULTS, *reuse), executor=executor,
                                **executor_options)
    population_size = {"random": len(data), "vulnerable": len(vulnerable)}
    rows = []
    for slot in dict.fromkeys((r["population"], r["batch_size"]) for r in batch_rows):
        members = [r for r in batch_rows if (r["population"], r["batch_size"]) == slot]
        for row in summarise(members):
            n = sum(r["batch_size"] for r in members if r["row"] == row["row"])
            rows.append({"population": slot[0], "batch_size": slot[1], "row": row["row"],
                         **{k: row.get(k) for c in ID_COLUMNS for k in (c, f"{c}_std")},
                         "batches": row["batches"], "images": n, "population_size": population_size[slot[0]],
                         "iterations": config.iterations, "reused": row.get("reused", 0)})
    settings = {"batch_sizes": sizes, "vulnerable_sizes": vulnerable_sizes, "batches_per_size": batches,
                "iterations": config.iterations, "seeds": config.seeds, "group": config.group,
                "stopping": stopping_text(ctx, config.iterations, ctx.profile.config.iterations),
                "vulnerable_fraction": fraction, "gallery_size": len(pool_gallery(ctx, ctx.resolution)["data"]),
                "features": "pretrained EfficientNet-Lite0 (avg-pool)", "config": config.to_dict(),
                "gradient_norm_median": float(norms.median()),
                "vulnerable_norm_median": float(norms[vulnerable].median()),
                "paper": {"iip_at_48": paper_results.FIG8_IIP_AT_48,
                          "vulnerable_factor": paper_results.FIG8_VULNERABLE_FACTOR}}
    return save_results(ctx, "fig8_iip", rows, settings, started, extra={"batch_rows": batch_rows})


def claims(out) -> str:
    """Markdown measured from the cached Fig. 8: whether identification falls with batch size and
    whether the vulnerable population is identified more often, each beyond the spread."""
    record = load_results(out, "fig8_iip")
    s = record["settings"]
    ours = {pop: [r for r in record["rows"] if r["population"] == pop and r["row"] == RECONSTRUCTION]
            for pop in ("random", "vulnerable")}
    lines = [f"**Fig. 8** ({s['batches_per_size']} batches per size, {s['iterations']} iterations a run, "
             f"{s['seeds']} seed(s), group {s['group']}; stopping: {s['stopping']}; gallery: "
             f"{s['gallery_size']} images; mean ± std over batches):", ""]
    for pop, rows in ours.items():
        lines += [trend_line(rows, "iip", f"IIP ({pop})", "falls with batch size"),
                  trend_line(rows, "pixel_nn_hit", f"pixel-correlation identification ({pop})",
                             "falls with batch size")]
    random = {r["batch_size"]: r for r in ours["random"]}
    shared = [r for r in ours["vulnerable"] if r["batch_size"] in random]
    if shared:
        v, r = shared[-1], random[shared[-1]["batch_size"]]
        verdict = VERDICT_WORDS[direction_holds(v, r, "iip")]
        lines.append(f"- Vulnerable vs random population at batch {v['batch_size']}: IIP {v['iip']:.2f} ± "
                     f"{v['iip_std']:.2f} vs {r['iip']:.2f} ± {r['iip_std']:.2f} (paper: about "
                     f"{s['paper']['vulnerable_factor']:.0f}x at batch 48) — {verdict}.")
    refs = [r for r in record["rows"] if r["row"] != RECONSTRUCTION]
    if refs:
        lines.append(f"- Content-free references (noise start, mean colour): IIP at most "
                     f"{max(r['iip'] or 0 for r in refs):.2f}, pixel-correlation identification at most "
                     f"{max(r['pixel_nn_hit'] or 0 for r in refs):.2f} over all sizes.")
    return "\n".join(lines)


def plot_iip(out, pdf: bool = True):
    """Fig. 8: IIP (pretrained-Lite0 features; sibling-crop hits dotted) and pixel-correlation
    identification versus batch size, mean ± std over batches, both populations, the references
    dashed, and the paper's batch-48 facts marked."""
    import matplotlib.pyplot as plt

    record = load_results(out, "fig8_iip")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for ax, (metric, title) in zip(axes, (("iip", "IIP, pretrained Lite0 features (%)"),
                                          ("pixel_nn_hit", "identified by pixel correlation (%)"))):
        for pop, style in (("random", "o-"), ("vulnerable", "s-")):
            rows = [r for r in record["rows"] if r["population"] == pop and r["row"] == RECONSTRUCTION]
            sizes = [r["batch_size"] for r in rows]
            line = ax.errorbar(sizes, [100 * r[metric] for r in rows], fmt=style, capsize=3, label=f"ours, {pop}",
                               yerr=[100 * (r[f"{metric}_std"] or 0) for r in rows])
            sibling = metric.replace("_hit", "") + "_sibling"
            ax.plot(sizes, [100 * (r.get(sibling) or 0) for r in rows], ":", color=line[0].get_color(),
                    label=f"{pop}: another crop of the same photo")
        refs = [r for r in record["rows"] if r["row"] != RECONSTRUCTION and r["population"] == "random"]
        for name, colour in (("noise start", "grey"), ("mean colour", "tab:orange")):
            rows = [r for r in refs if r["row"] == name]
            ax.plot([r["batch_size"] for r in rows], [100 * (r[metric] or 0) for r in rows], "--", color=colour,
                    label=name)
        ax.set_xscale("log", base=2), ax.set_xlabel("batch size"), ax.set_ylim(-3, 103)
        ax.set_title(title, fontsize=9), ax.grid(alpha=0.3)
    p = record["settings"]["paper"]
    axes[0].plot([48], [100 * p["iip_at_48"]], "k*", ms=10, label="paper, random, B=48 (~28%)")
    axes[0].plot([48], [100 * p["iip_at_48"] * p["vulnerable_factor"]], "r*", ms=10,
                 label="paper, vulnerable, B=48 (~2x)")
    axes[0].set_ylabel("%"), axes[0].legend(fontsize=6)
    s = record["settings"]
    fig.suptitle(f"Fig. 8 ({record['context']['profile']} profile, {s['iterations']} iterations, "
                 f"{s['batches_per_size']} batches per size, gallery {s['gallery_size']} images)", fontsize=9)
    fig.tight_layout()
    return save_study_figure(fig, out, "fig8_iip", pdf)
