"""Table 2 (ablation: L_grad alone, + fidelity priors, + lazy / registered group consistency) and
Table 3 (network strength), each row over the same several batches beside the two content-free
reference rows (noise start, mean colour), with whether each step moves the paper's way beyond
the spread over batches.

Quick-profile budget (this 2-core CPU, 2 worker processes of one thread each; batch 8). Measured
in a full reproduction at 1000 iterations: one seed ~45 CPU-s a run, 4 seeds registered ~150
(3.3x: the 2M-weight classifier's per-seed gradients dominate), notebook 02 2489 CPU-s / 1363 s
wall with width 64 in Table 3 (2.5x a width-32 run). Hence the profile's 800 iterations and
Table 3 on widths 16 and 32 (32: Table 2's runs). Since the classifier's gradient is factored
(``factored_gradient``), measured at 800 iterations in a fresh-clone reproduction:
  Table 2: 5 batches x (22 + 25 + 81 + 77) s                              ~ 1030 CPU-s
  Table 3: 5 batches x 18 s                                               ~   90 CPU-s
Both tables now run the profile's full-method budget (1200 iterations: at 800 the registered row
identified 19 of 40 images by Lite0 IIP, at 1200 23 of 40), so ~1.5x these.
"""

from __future__ import annotations

import time

from gradinv_lib import paper_results

from .aggregate import mark_directions
from .common import StudyContext, load_results, load_tensors, pick, save_results, save_study_figure, save_tensors
from .runs import full_method_iterations, objective_configs
from .tables import RowSpec, claims_markdown, display_columns, run_table, summarise

BATCHES = 5                      # batches per row (issue 11: at least 5)
BATCH_SIZE = 8                   # the paper's Tables 2-4
QUICK_STRENGTH_MODELS = (("lenet_bn16", "random"), ("lenet_bn", "random"))   # width 64: 2.5x the cost
PAPER_STRENGTH_MODELS = (("resnet18", "default"), ("resnet50", "default"), ("resnet50_moco", "default"))
PAPER_COLUMNS = ("feature_dist", "fft2d", "psnr", "lpips")


def _paper_values(table: dict, key: str | None) -> dict:
    """The paper's values of one row as ``paper_<metric>``; its PSNR is after registration."""
    values = table.get(key or "", {})
    return {f"paper_{k}": values[k] for k in PAPER_COLUMNS if k in values}


def ablation_configs(ctx: StudyContext, iterations: int | None = None, seeds: int | None = None) -> dict:
    """Row name -> InversionConfig (``runs.objective_configs``) at ``iterations``, else the
    profile's full-method budget (``runs.full_method_iterations``)."""
    return objective_configs(ctx, seeds, full_method_iterations(ctx, iterations))


def ablation_table(ctx: StudyContext, batch_size: int | None = None, iterations: int | None = None,
                   seeds: int | None = None, rows=None, batches: int | None = None, reuse=(),
                   executor: str | None = None, **executor_options) -> dict:
    """Table 2 (BN_exact): each objective on ``batches`` batches of ``batch_size`` distinct labels,
    mean and spread per metric; each row states whether it beats the row before (the first: the
    noise start) beyond the spread, on each metric. Runs with the same run key in the cached
    results ``reuse`` are not attacked again."""
    started = time.perf_counter()
    batch_size, batches = int(pick(batch_size, BATCH_SIZE)), int(pick(batches, BATCHES))
    configs = ablation_configs(ctx, iterations, seeds)
    names = list(pick(rows, configs))
    specs = [RowSpec(n, configs[n], info=(("objective", n),)) for n in names]
    batch_rows, images = run_table(ctx, specs, batch_size, batches, reuse=reuse, executor=executor,
                                   **executor_options)
    summary = summarise(batch_rows)
    mark_directions(summary, batch_rows, list(zip(names, ["noise start", *names[:-1]])))
    for row in summary:
        key = "noise" if row["row"] == "noise start" else row["row"]
        row.update(objective=row["row"], title=paper_results.TABLE2_ROW_NAMES.get(key, row["row"]),
                   **_paper_values(paper_results.TABLE2_ABLATION, key))
    save_tensors(ctx, "table2_images", images)
    first = configs[names[0]]
    settings = {"batch_size": batch_size, "batches": batches, "iterations": first.iterations,
                "seeds_group_rows": configs["group_registered"].seeds, "bn_mode": batch_rows[-1].get("bn_mode"),
                "batch_ids": {r["batch_seed"]: r["batch_ids"] for r in batch_rows},
                "configs": {n: configs[n].to_dict() for n in names}}
    return save_results(ctx, "table2_ablation", summary, settings, started, extra={"batch_rows": batch_rows})


def strength_table(ctx: StudyContext, models=None, batch_size: int | None = None,
                   iterations: int | None = None, objective: str | None = None,
                   resolution: int | None = None, batches: int | None = None,
                   executor: str | None = None, **executor_options) -> dict:
    """Table 3: the same attack on the same batches against networks listed from the weakest to
    the strongest; each row states whether it leaks more than the one before, beyond the spread.

    Quick: the quick network at widths 16, 32, 64 with + R_fidelity ("more capacity leaks more":
    no better-TRAINED small network exists offline). Paper: ResNet-18, ResNet-50, ResNet-50 MoCo
    v2 with the user's weights, the full method. ``models``: (name, weights) pairs, e.g.
    (("efficientnet_lite0", "random"), ("efficientnet_lite0", "default")) with ``resolution``.
    """
    started = time.perf_counter()
    paper = ctx.profile.name == "paper"
    batch_size, batches = int(pick(batch_size, BATCH_SIZE)), int(pick(batches, BATCHES))
    objective = pick(objective, "group_registered" if paper else "fidelity")
    config = ablation_configs(ctx, iterations)[objective]
    pairs = [tuple(m) for m in pick(models, PAPER_STRENGTH_MODELS if paper else QUICK_STRENGTH_MODELS)]
    specs = []
    for name, weights in pairs:
        net = ctx.model(name, weights)
        specs.append(RowSpec(f"{name} ({weights})", config, model=name, weights=weights,
                             info=(("network", name), ("pretrained", weights != "random"),
                                   ("parameters", sum(p.numel() for p in net.parameters())))))
    batch_rows, images = run_table(ctx, specs, batch_size, batches, resolution, reuse=("table2_ablation",),
                                   executor=executor, **executor_options)
    summary = summarise(batch_rows)
    mark_directions(summary, batch_rows, [(b.name, a.name) for a, b in zip(specs, specs[1:])])
    for row in summary:
        row.update(_paper_values(paper_results.TABLE3_NETWORK_STRENGTH,
                                 row.get("network") if row.get("pretrained") else None))
    save_tensors(ctx, "table3_images", images)
    settings = {"batch_size": batch_size, "batches": batches, "iterations": config.iterations,
                "objective": objective, "config": config.to_dict(), "models": pairs,
                "resolution": int(resolution or ctx.resolution), "bn_mode": batch_rows[-1].get("bn_mode")}
    return save_results(ctx, "table3_strength", summary, settings, started, extra={"batch_rows": batch_rows})


TABLE_TITLES = {"table2_ablation": "Table 2", "table3_strength": "Table 3"}


def claims(out, tables=tuple(TABLE_TITLES)) -> str:
    """Markdown statements measured from the cached ``tables`` (default: Tables 2 and 3):
    settings, and for each row whether it moves the paper's way beyond the spread over batches."""
    return claims_markdown(out, [(name, TABLE_TITLES[name]) for name in tables])


# ----------------------------------------------------------------------------- plots (cache only)
def plot_image_rows(out, name: str, title: str, pdf: bool = True):
    """The cached originals and reconstructions of ``name`` (table2_images / table3_images) as a grid."""
    from gradinv_lib.plotting import image_grid
    rows = load_tensors(out, name)
    table = {"table2_images": "table2_ablation", "table3_images": "table3_strength"}.get(name)
    if table:  # the originals, then the table's row order (runs finish in any order)
        order = ["original", *(r.get("row") for r in load_results(out, table)["rows"])]
        rows = dict(sorted(rows.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
    fig = image_grid(rows)
    fig.suptitle(title, fontsize=9, y=1.01)
    return save_study_figure(fig, out, name, pdf)


def plot_metric_bars(out, name: str, metrics=(("psnr", "PSNR (dB) ↑"), ("ssim", "SSIM ↑"), ("fft2d", "FFT-2D ↓")),
                     pdf: bool = True):
    """A cached table as bars: our mean ± std per row, the paper's value beside where it has one."""
    import matplotlib.pyplot as plt

    rows = [r for r in load_results(out, name)["rows"] if r.get("status", "ok") == "ok"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.2))
    x = list(range(len(rows)))
    for ax, (metric, label) in zip(axes, metrics):
        ax.bar([i - 0.2 for i in x], [r.get(metric) or 0 for r in rows], 0.4,
               yerr=[r.get(f"{metric}_std") or 0 for r in rows], capsize=2, label="ours")
        ax.bar([i + 0.2 for i in x], [r.get(f"paper_{metric}") or 0 for r in rows], 0.4, label="paper", alpha=0.6)
        ax.set_xticks(x, [r["row"] for r in rows], rotation=35, ha="right", fontsize=7)
        ax.set_title(label, fontsize=9), ax.legend(fontsize=7)
    fig.tight_layout()
    return save_study_figure(fig, out, name, pdf)


def plot_ablation_bars(out, pdf: bool = True):
    """Table 2 as bars (:func:`plot_metric_bars`)."""
    return plot_metric_bars(out, "table2_ablation", pdf=pdf)


__all__ = ["ablation_configs", "ablation_table", "claims", "display_columns", "plot_ablation_bars", "plot_image_rows",
           "plot_metric_bars", "strength_table"]
