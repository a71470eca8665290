"""Figs. 6-7: how much of a batch GradInversion recovers as the batch grows: metrics (mean ± std
over several batches per size, beside the noise-start and mean-colour references) and image grids
versus batch size. The same sweep (:func:`batch_sweep`) gives Fig. 8 its attacks
(``identifiability``), which reuses these runs where their run keys match.

Quick-profile budget (this 2-core CPU, 2 worker processes of one thread; the profile's 800
iterations, ONE seed, no group term; measured in a fresh-clone reproduction: ~15 s at batch 1,
~26 s at batch 8, ~39 s at 16; the two reference rows of a batch cost 0.4 s at batch 1 to 7 s at 16):
  sizes 1, 4, 8, 16: 15 + 20 + 26 + 39 = 100 s per batch seed (+ ~10 s references)
  x 8 batch seeds                                = ~880 CPU-s; notebook 04: 914 CPU-s, 474 s wall.
The profile's full method (4 seeds, registered consensus: 3.3x a one-seed run) would need
~3500 CPU-s here alone, which does not fit the 45-minute reproduction beside the other notebooks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from gradinv_lib.data import LabelledImages, sample_batch
from gradinv_lib.runtime.sweeps import Job, run_jobs

from .aggregate import METRIC_NAMES, VERDICT_WORDS, claim_lines, direction_holds, mark_directions
from .common import (StudyContext, load_results, load_tensors, pick, save_results, save_study_figure, save_tensors,
                     stopping_text)
from .runs import attack_job, batch_seeds, client_bn_mode, pool_gallery, run_key, study_config
from .tables import reference_rows, reusable_runs, summarise

QUICK_BATCH_SIZES = (1, 4, 8, 16)
PAPER_BATCH_SIZES = (1, 8, 16, 32, 48)
BATCHES = 8                      # batches per size (issue 11: IIP needs at least 8)
RECONSTRUCTION = "reconstruction"
REFERENCES = ("noise start", "mean colour")
FIG6_METRICS = (("psnr", "PSNR (dB) ↑"), ("psnr_registered", "PSNR registered (dB) ↑"), ("ssim", "SSIM ↑"),
                ("fft2d", "FFT-2D ↓"))


def scaling_config(ctx: StudyContext, iterations: int | None = None, seeds: int | None = None):
    """The profile's configuration; quick: ONE seed and no group term unless ``seeds`` says
    otherwise (budget departure, see the module docstring); paper: the full method."""
    seeds = int(pick(seeds, ctx.profile.config.seeds if ctx.profile.name == "paper" else 1))
    group = ctx.profile.config.group if seeds > 1 else "none"
    return study_config(ctx, iterations, seeds=seeds, group=group)


@dataclass(frozen=True)
class PlannedBatch:
    """One batch of a sweep: drawn in the caller (so its run key is known before any attack)."""

    population: str
    batch_seed: int
    batch: LabelledImages
    indices: tuple           # data-set index of each image, in batch order


def plan_batches(ctx: StudyContext, sizes, batches: int, population: str = "random",
                 members=None) -> list[PlannedBatch]:
    """``batches`` batches of distinct labels per size (seeds ctx.seed ..), drawn from the data set
    or from its images at ``members`` (a sub-population; sizes capped at its distinct labels)."""
    data = ctx.dataset()
    view = data if members is None else data.subset(members)
    where = {image_id: k for k, image_id in enumerate(data.ids)}
    planned = []
    for b in sizes:
        for s in batch_seeds(ctx, batches):
            batch = sample_batch(view, min(int(b), len(view.labels.unique())), seed=s)
            planned.append(PlannedBatch(population, s, batch, tuple(where[i] for i in batch.ids)))
    return planned


def attack_with_references(ctx: StudyContext, batch_seed: int, config, indices) -> dict:
    """One job of the sweep: ``runs.attack_job`` on the data set's images at ``indices``, and the
    batch's noise-start and mean-colour rows (``tables.reference_rows``), scored in the worker too."""
    out = attack_job(ctx, len(indices), batch_seed, config, indices=list(indices))
    batch = ctx.dataset().subset(list(indices))
    return {**out, "references": reference_rows(ctx, batch, ctx.model(), config, batch_seed)}


def batch_sweep(ctx: StudyContext, planned: list[PlannedBatch], config, reuse=(), executor: str | None = None,
                **executor_options) -> tuple[list[dict], dict]:
    """Attack every planned batch with ``config`` and score its two reference rows (one
    ``sweeps.Job`` each, the largest batches first so the workers stay busy); a run, and its
    reference rows, already in the cached results ``reuse`` with the same run key is taken from
    there. Returns (per-batch rows, each with ``row``, ``population``, ``batch_size``,
    ``batch_seed``, ``run_key``; {(population, size): the first batch's original and
    reconstruction}), reused runs' images excepted."""
    model = ctx.model()
    pool_gallery(ctx, ctx.resolution)        # once here: the workers read the cached features
    previous = reusable_runs(ctx, reuse)
    keys = [run_key("gradinversion", config, model.name, model.weights_source, client_bn_mode(ctx), p.batch.ids)
            for p in planned]
    cached = {i: _cached_runs(ctx, previous, key, planned[i], model, config) for i, key in enumerate(keys)}
    todo = sorted((i for i in cached if None in cached[i]), key=lambda i: -len(planned[i].batch))
    jobs = [Job(f"{planned[i].population}_b{len(planned[i].batch)}_s{planned[i].batch_seed}", attack_with_references,
                {"batch_seed": planned[i].batch_seed, "config": config, "indices": list(planned[i].indices)})
            for i in todo]
    done = dict(zip(todo, run_jobs(ctx, jobs, executor, **executor_options)))
    names, rows, images = (RECONSTRUCTION, *REFERENCES), [], {}
    for i, (p, key) in enumerate(zip(planned, keys)):
        out = done.get(i, {})
        runs = ({RECONSTRUCTION: out["row"], **{r["row"]: r for r in out["references"]}} if out
                else dict(zip(names, cached[i])))
        rows += [{**runs[name], "row": name, "population": p.population, "run_key": f"{key}/{name}"}
                 for name in names]
        slot = (p.population, len(p.batch))
        if slot not in images and "images" in out:
            images[slot] = {"original": p.batch.images, "reconstruction": out["images"]}
    return rows, images


def _cached_runs(ctx: StudyContext, previous: dict, key: str, planned: PlannedBatch, model, config) -> list:
    """[reconstruction, *reference rows] of one run key among cached rows (None where missing): a
    sweep keys its rows "<key>/<row>", a table (``tables.run_table``) its run by the key alone; the
    reference rows of a run reused from a table are scored here (seconds, no attack)."""
    runs = [previous.get(f"{key}/{RECONSTRUCTION}") or previous.get(key),
            *(previous.get(f"{key}/{name}") for name in REFERENCES)]
    if runs[0] is not None and None in runs[1:]:
        references = {r["row"]: r for r in reference_rows(ctx, planned.batch, model, config, planned.batch_seed)}
        runs[1:] = [references[name] for name in REFERENCES]
    return runs


def summarise_by_size(batch_rows: list[dict]) -> list[dict]:
    """One row per (population, batch size, row name): mean and spread over its batches
    (``tables.summarise``), each reference row carrying whether the reconstruction beats it
    beyond the spread of the per-batch differences."""
    summary = []
    for slot in dict.fromkeys((r["population"], r["batch_size"]) for r in batch_rows):
        members = [r for r in batch_rows if (r["population"], r["batch_size"]) == slot]
        rows = summarise(members)
        mark_directions(rows, members, [(RECONSTRUCTION, ref) for ref in REFERENCES], on="worse")
        summary += [{**r, "population": slot[0], "batch_size": slot[1]} for r in rows]
    return summary


def batch_scaling(ctx: StudyContext, batch_sizes=None, iterations: int | None = None, batches: int | None = None,
                  seeds: int | None = None, executor: str | None = None, **executor_options) -> dict:
    """Figs. 6-7: ``batches`` batches per size attacked with :func:`scaling_config`; rows of mean
    ± std per (batch size, reconstruction / noise start / mean colour), per-batch rows kept under
    ``batch_rows`` (Fig. 8 reuses them)."""
    started = time.perf_counter()
    paper = ctx.profile.name == "paper"
    sizes = [int(b) for b in pick(batch_sizes, PAPER_BATCH_SIZES if paper else QUICK_BATCH_SIZES)]
    batches = int(pick(batches, BATCHES))
    config = scaling_config(ctx, iterations, seeds)
    batch_rows, images = batch_sweep(ctx, plan_batches(ctx, sizes, batches), config, executor=executor,
                                     **executor_options)
    for (_, b), tensors in images.items():
        save_tensors(ctx, f"batch_{b}_images", tensors)
    settings = {"batch_sizes": sizes, "batches": batches, "iterations": config.iterations, "seeds": config.seeds,
                "group": config.group, "bn_mode": client_bn_mode(ctx),
                "stopping": stopping_text(ctx, config.iterations, ctx.profile.config.iterations),
                "config": config.to_dict()}
    return save_results(ctx, "batch_scaling", summarise_by_size(batch_rows), settings, started,
                        extra={"batch_rows": batch_rows})


def trend_line(rows: list[dict], metric: str, name: str, claim: str = "recovery worsens as the batch grows") -> str:
    """"- <name> at batch a: m ± s, at batch b: m ± s (paper's trend: <claim>) — holds / does not
    hold", from summary rows of one row name ordered by batch size: the smallest batch must beat
    the largest beyond the larger spread."""
    if len(rows) < 2 or rows[0].get(metric) is None:
        return f"- {name}: needs two batch sizes or more."
    first, last = rows[0], rows[-1]
    verdict = VERDICT_WORDS[direction_holds(first, last, metric)]
    return (f"- {name} at batch {first['batch_size']}: {first[metric]:.3g} ± {first[f'{metric}_std']:.2g}, "
            f"at batch {last['batch_size']}: {last[metric]:.3g} ± {last[f'{metric}_std']:.2g} "
            f"(paper's trend: {claim}) — {verdict}.")


def claims(out) -> str:
    """Markdown measured from the cached Figs. 6-7: the settings, whether recovered content falls
    with batch size beyond the spread, and at each size whether the reconstruction beats the
    noise start and the mean-colour oracle beyond the spread."""
    record = load_results(out, "batch_scaling")
    s, rows = record["settings"], record["rows"]
    ours = [r for r in rows if r["row"] == RECONSTRUCTION]
    lines = [f"**Figs. 6-7** ({s['batches']} batches per size, {s['iterations']} iterations a run, "
             f"{s['seeds']} seed(s), group {s['group']}, client BN mode {s['bn_mode']}; stopping: "
             f"{s.get('stopping', '?')}; mean ± std over batches):", ""]
    lines += [trend_line(ours, m, METRIC_NAMES[m]) for m, _ in FIG6_METRICS]
    lines += ["", "Against the content-free references, per batch size (differences paired by batch):", ""]
    for b in s["batch_sizes"]:
        lines += claim_lines([r for r in rows if r["batch_size"] == b],
                             label=lambda r, b=b: f"{r['row']} (B={b})")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- plots (cache only)
def plot_metrics(out, pdf: bool = True):
    """Fig. 6: plain PSNR, registered PSNR, SSIM and FFT-2D versus batch size, mean ± std over
    batches, with the noise start and the mean-colour oracle as dashed lines."""
    import matplotlib.pyplot as plt

    record = load_results(out, "batch_scaling")
    by_row = {name: [r for r in record["rows"] if r["row"] == name] for name in (RECONSTRUCTION, *REFERENCES)}
    sizes = [r["batch_size"] for r in by_row[RECONSTRUCTION]]
    fig, axes = plt.subplots(1, len(FIG6_METRICS), figsize=(3.2 * len(FIG6_METRICS), 3))
    for ax, (metric, label) in zip(axes, FIG6_METRICS):
        ours = by_row[RECONSTRUCTION]
        ax.errorbar(sizes, [r[metric] for r in ours], yerr=[r[f"{metric}_std"] or 0 for r in ours], fmt="o-",
                    capsize=3, label="reconstruction")
        for (name, rows), colour in zip(((n, by_row[n]) for n in REFERENCES), ("grey", "tab:orange")):
            ax.plot([r["batch_size"] for r in rows], [r[metric] for r in rows], "--", color=colour, label=name)
        ax.set_xscale("log", base=2), ax.set_xticks(sizes, [str(b) for b in sizes])
        ax.set_xlabel("batch size"), ax.set_title(label, fontsize=9), ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    s = record["settings"]
    fig.suptitle(f"Fig. 6 ({s['iterations']} iterations, {s['batches']} batches per size)", fontsize=9)
    fig.tight_layout()
    return save_study_figure(fig, out, "fig6_metrics_vs_batch", pdf)


def plot_grids(out, pdf: bool = True, max_columns: int = 8):
    """Fig. 7: originals above reconstructions of each size's first batch (first ``max_columns``)."""
    from gradinv_lib.plotting import image_grid
    record = load_results(out, "batch_scaling")
    rows = {}
    for b in record["settings"]["batch_sizes"]:
        t = load_tensors(out, f"batch_{b}_images")
        rows[f"B={b} original"] = t["original"][:max_columns]
        rows[f"B={b} recovered"] = t["reconstruction"][:max_columns]
    fig = image_grid(rows, scale=1.2)
    fig.suptitle(f"Fig. 7 ({record['settings']['iterations']} iterations)", fontsize=9, y=1.01)
    return save_study_figure(fig, out, "fig7_grids_vs_batch", pdf)
