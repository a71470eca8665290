"""Table 4 (GradInversion beside prior attacks on one batch, ``compare.compare_attacks``) and
Fig. 5 (batch 1, a hard sample: DLG and Inverting Gradients beside GradInversion)."""

from __future__ import annotations

import time

import torch

from .. import paper_results
from ..attack import gradinversion
from ..client import simulate_client
from ..compare import TABLE4_ATTACKS, compare_attacks, default_configs
from ..data import sample_batch
from ..experiments import evaluate_attack
from ..prior_attacks import run_prior_attack
from .common import StudyContext, load_results, load_tensors, pick, save_results, save_tensors, save_study_figure
from .identifiability import per_image_gradient_norms
from .runs import lpips_for, study_config

QUICK_ITERATION_FRACTION = 0.4   # of the profile's per-attack compare budget (30-minute bound)


def attack_iterations(ctx: StudyContext) -> int:
    """Per-attack iterations: the profile's ``compare_iterations`` (else its inversion budget),
    scaled down in the quick profile."""
    total = getattr(ctx.profile, "compare_iterations", None) or ctx.profile.config.iterations
    return total if ctx.profile.name == "paper" else max(1, int(round(total * QUICK_ITERATION_FRACTION)))
FIG5_ATTACKS = ("dlg", "inverting_gradients", "gradinversion_bn_exact")


def _configs(ctx: StudyContext, iterations: int):
    base = study_config(ctx, iterations)
    return base, default_configs(base)


def table4(ctx: StudyContext, batch_size: int | None = None, iterations: int | None = None,
           attacks=None) -> dict:
    """Every attack of Table 4 on one client update of a batch of distinct labels."""
    started = time.perf_counter()
    batch_size = int(pick(batch_size, 8 if ctx.profile.name == "paper" else 4))
    iterations = int(pick(iterations, attack_iterations(ctx)))
    base, configs = _configs(ctx, iterations)
    batch = sample_batch(ctx.dataset(), batch_size, seed=ctx.seed)
    lpips, reason = lpips_for(ctx.device)
    record = compare_attacks(ctx.model(), batch.images, batch.labels, list(pick(attacks, TABLE4_ATTACKS)),
                             configs, base, lpips=lpips, lpips_reason=reason)
    rows = [{k: v for k, v in r.items() if k != "extra"} for r in record["rows"]]
    return save_results(ctx, "table4_comparison", rows,
                        {"batch_size": batch_size, "iterations": iterations, "batch_ids": batch.ids,
                         "configs": record["configs"], "lpips_unavailable": reason}, started)


def hardest_sample(ctx: StudyContext) -> int:
    """Our stand-in for Fig. 5's "hard sample": among ground-truth-labelled images, the one whose
    own gradient is smallest (the least signal for any gradient attack)."""
    data = ctx.dataset()
    truth = torch.nonzero(~data.pseudo).flatten()
    norms = per_image_gradient_norms(ctx.model(), data.images[truth], data.labels[truth])
    return int(truth[norms.argmin()])


def fig5(ctx: StudyContext, sample: int | None = None, iterations: int | None = None, attacks=FIG5_ATTACKS) -> dict:
    """Batch 1: each attack on the same image's update, scored and kept for the figure."""
    started = time.perf_counter()
    iterations = int(pick(iterations, attack_iterations(ctx)))
    _, configs = _configs(ctx, iterations)
    index = int(pick(sample, hardest_sample(ctx)))
    data, model = ctx.dataset(), ctx.model()
    image, label = data.images[index:index + 1], data.labels[index:index + 1]
    update = simulate_client(model, image.to(ctx.device), label.to(ctx.device))
    lpips, reason = lpips_for(ctx.device)
    rows, images = [], {"original": image}
    for name in attacks:
        t0 = time.perf_counter()
        if name.startswith("gradinversion"):
            result = gradinversion(model, update.without_labels(), configs[name], progress=False)
        else:
            result = run_prior_attack(name, model, update, configs[name], labels=label)
        ev = evaluate_attack(model, result, image, label, lpips=lpips)
        rows.append({"method": name, "title": paper_results.TABLE4_ROW_NAMES.get(name, name),
                     **{k: ev["metrics"].get(k) for k in ("fft2d", "psnr_registered", "psnr", "lpips")},
                     "label_accuracy": ev["labels"].get("accuracy"), "seconds": round(time.perf_counter() - t0, 1)})
        images[name] = result.consensus
    save_tensors(ctx, "fig5_images", images)
    return save_results(ctx, "fig5_batch1", rows, {"sample_index": index, "sample_id": data.ids[index],
                                                   "label": int(label), "iterations": iterations}, started)


def plot_fig5(out, pdf: bool = True):
    from ..plotting import image_grid
    images = load_tensors(out, "fig5_images")
    rows = load_results(out, "fig5_batch1")["rows"]
    titles = ["original"] + [f"{r['method']}\nPSNR {r['psnr_registered']:.1f}" for r in rows]
    fig = image_grid({"batch 1": torch.cat(list(images.values()))}, column_titles=titles, scale=2.0)
    return save_study_figure(fig, out, "fig5_batch1", pdf)


def plot_table4(out, pdf: bool = True):
    """Table 4 as bars: our registered PSNR and FFT-2D per method beside the paper's."""
    import matplotlib.pyplot as plt

    rows = [r for r in load_results(out, "table4_comparison")["rows"] if r.get("fft2d") is not None]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    x = range(len(rows))
    for ax, metric, label in ((axes[0], "psnr", "PSNR after registration (dB) ↑"), (axes[1], "fft2d", "FFT-2D ↓")):
        ax.bar([i - 0.2 for i in x], [r[metric] for r in rows], 0.4, label="ours")
        ax.bar([i + 0.2 for i in x], [r.get(f"paper_{metric}") or 0 for r in rows], 0.4, label="paper", alpha=0.6)
        ax.set_xticks(list(x), [r["method"] for r in rows], rotation=35, ha="right", fontsize=7)
        ax.set_title(label, fontsize=9), ax.legend(fontsize=7)
    fig.tight_layout()
    return save_study_figure(fig, out, "table4_comparison", pdf)
