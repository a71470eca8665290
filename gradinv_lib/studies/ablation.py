"""Table 2 (ablation: noise start, L_grad alone, + fidelity priors, + lazy / registered group
consistency) and Table 3 (network strength) on one batch, every row from the same batch and seed."""

from __future__ import annotations

import time

from .. import paper_results
from ..data import sample_batch
from .common import StudyContext, load_results, load_tensors, pick, save_results, save_tensors, save_study_figure
from .runs import run_attack, scaled_iterations, study_config

QUICK_ITERATION_FRACTION = 0.15  # of the profile's iterations, per row (quick: 30-minute budget)
QUICK_SEEDS = 2                  # G for the group rows in the quick profile (paper: 8)
QUICK_STRENGTH_FRACTION = 0.1    # Table 3 runs four networks (ResNet-50 is the slowest)
QUICK_STRENGTH_RESOLUTION = 64   # one resolution for every Table 3 network (Lite0 is ImageNet-sized)


def ablation_configs(ctx: StudyContext, iterations: int, seeds: int) -> dict:
    """Row name -> InversionConfig: each row adds one term of eqs. 3, 9, 12 to the one before."""
    base = study_config(ctx, iterations)
    fidelity = base.replace(seeds=1, group="none", bn_target="exact")
    return {
        "grad": fidelity.replace(alpha_tv=0.0, alpha_l2=0.0, bn_target="none"),
        "fidelity": fidelity,
        "group_lazy": fidelity.replace(seeds=seeds, group="lazy"),
        "group_registered": fidelity.replace(seeds=seeds, group="registered"),
    }


def _paper_row(table: dict, key: str) -> dict:
    return {f"paper_{k}": v for k, v in table.get(key, {}).items() if k in ("feature_dist", "fft2d", "psnr", "lpips")}


def ablation_table(ctx: StudyContext, batch_size: int | None = None, iterations: int | None = None,
                   seeds: int | None = None, rows=None) -> dict:
    """Table 2: metrics of each objective on one batch of distinct labels (BN_exact)."""
    started = time.perf_counter()
    paper = ctx.profile.name == "paper"
    batch_size = int(pick(batch_size, 8 if paper else 4))
    iterations = int(pick(iterations, scaled_iterations(ctx, QUICK_ITERATION_FRACTION)))
    seeds = int(pick(seeds, ctx.profile.config.seeds if paper else QUICK_SEEDS))
    configs = ablation_configs(ctx, iterations, seeds)
    names = list(pick(rows, configs))
    batch = sample_batch(ctx.dataset(), batch_size, seed=ctx.seed)
    table, images = [], {}
    for name in names:
        run = run_attack(ctx, batch, configs[name], objective=name)
        if not table:  # the paper's first row: the starting noise, scored like the rest
            table.append({"objective": "noise", **{k[6:]: v for k, v in run.row.items() if k.startswith("noise_")},
                          **_paper_row(paper_results.TABLE2_ABLATION, "noise")})
            images["original"], images["noise"] = run.originals, run.start
        table.append({"objective": name, **{k: v for k, v in run.row.items() if not k.startswith("noise_")},
                      **_paper_row(paper_results.TABLE2_ABLATION, name)})
        images[name] = run.reconstruction
    save_tensors(ctx, "table2_images", images)
    settings = {"batch_size": batch_size, "iterations": iterations, "seeds_group_rows": seeds,
                "batch_ids": batch.ids, "pseudo_labels": batch.pseudo.tolist(),
                "configs": {n: configs[n].to_dict() for n in names}}
    return save_results(ctx, "table2_ablation", table, settings, started)


STRENGTH_MODELS = (  # (model, weights): the only pretrained net offline is EfficientNet-Lite0
    ("efficientnet_lite0", "default"),
    ("efficientnet_lite0", "random"),
    ("resnet18", "random"),
    ("resnet50", "random"),
)


def strength_table(ctx: StudyContext, models=None, batch_size: int | None = None,
                   iterations: int | None = None, objective: str | None = None,
                   resolution: int | None = None) -> dict:
    """Table 3: the same attack on the same batch against networks of different strength.

    Offline, pretrained-vs-random is the only strength contrast (Lite0 with and without its
    ImageNet weights); random ResNet-18/50 compare depth at no training, not the paper's
    standard-trained nets.
    """
    started = time.perf_counter()
    paper = ctx.profile.name == "paper"
    batch_size = int(pick(batch_size, 8 if paper else 4))
    iterations = int(pick(iterations, scaled_iterations(ctx, QUICK_STRENGTH_FRACTION)))
    objective = pick(objective, "group_registered" if paper else "fidelity")
    seeds = ctx.profile.config.seeds if paper else QUICK_SEEDS
    config = ablation_configs(ctx, iterations, seeds)[objective]
    resolution = int(pick(resolution, ctx.resolution if paper else QUICK_STRENGTH_RESOLUTION))
    batch = sample_batch(ctx.dataset(resolution), batch_size, seed=ctx.seed)
    rows, images = [], {"original": None}
    for name, weights in pick(models, STRENGTH_MODELS):
        model = ctx.model(name, weights)
        run = run_attack(ctx, batch, config, model=model, network=f"{name} ({weights})",
                         pretrained=weights != "random")
        paper_key = name if weights != "random" else None
        rows.append({**{k: v for k, v in run.row.items() if not k.startswith("noise_")},
                     **_paper_row(paper_results.TABLE3_NETWORK_STRENGTH, paper_key or "")})
        images["original"] = run.originals if images["original"] is None else images["original"]
        images[f"{name} ({weights})"] = run.reconstruction
    save_tensors(ctx, "table3_images", images)
    settings = {"batch_size": batch_size, "iterations": iterations, "objective": objective,
                "config": config.to_dict(), "batch_ids": batch.ids, "resolution": resolution}
    return save_results(ctx, "table3_strength", rows, settings, started)


# ----------------------------------------------------------------------------- plots (cache only)
def plot_image_rows(out, name: str, title: str, pdf: bool = True):
    """The cached originals and reconstructions of ``name`` (table2_images / table3_images) as a grid."""
    from ..plotting import image_grid
    rows = load_tensors(out, name)
    fig = image_grid(rows)
    fig.suptitle(title, fontsize=9, y=1.01)
    return save_study_figure(fig, out, name, pdf)


def plot_ablation_bars(out, pdf: bool = True):
    """Table 2 as bars: our PSNR and FFT-2D per objective beside the paper's."""
    import matplotlib.pyplot as plt

    rows = load_results(out, "table2_ablation")["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    x = range(len(rows))
    for ax, metric, label in ((axes[0], "psnr_registered", "PSNR after registration (dB) ↑"), (axes[1], "fft2d", "FFT-2D ↓")):
        ax.bar([i - 0.2 for i in x], [r.get(metric) or 0 for r in rows], 0.4, label="ours")
        ax.bar([i + 0.2 for i in x], [r.get(f"paper_{metric.split('_')[0]}") or 0 for r in rows], 0.4, label="paper", alpha=0.6)
        ax.set_xticks(list(x), [r["objective"] for r in rows], rotation=30, fontsize=7)
        ax.set_title(label, fontsize=9), ax.legend(fontsize=7)
    fig.tight_layout()
    return save_study_figure(fig, out, "table2_ablation", pdf)
