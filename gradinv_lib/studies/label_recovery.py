"""Table 1 (label recovery accuracy, eq. 8 min rule vs the iDLG sum rule, versus batch size) and
repeated-label behaviour (eq. 8 assumes distinct labels; label counting does not)."""

from __future__ import annotations

import time

import torch

from gradinv_lib import paper_results
from gradinv_lib.attack.labels import evaluate_label_recovery, recover_label_multiset, recover_labels_from_update
from gradinv_lib.data import sample_batch
from gradinv_lib.experiments.run import label_summary
from gradinv_lib.federated.client import simulate_client

from .common import StudyContext, load_results, pick, save_results, save_study_figure

QUICK_LABEL_MODEL = ("efficientnet_lite0", "default")   # the one pretrained net offline


def label_model_and_data(ctx: StudyContext, resolution: int | None = None):
    """Label recovery needs a trained classifier at its native resolution (Table 1): the profile's
    model in the paper profile, pretrained EfficientNet-Lite0 in the quick one (whose inversion
    model may be randomly initialised)."""
    model = ctx.model() if ctx.profile.name == "paper" else ctx.model(*QUICK_LABEL_MODEL)
    return model, ctx.dataset(resolution or model.input_size)



def default_batch_sizes(ctx: StudyContext, resolution: int | None = None) -> list[int]:
    """The paper's batch sizes, capped at the number of distinct labels the data set holds."""
    distinct = len(label_model_and_data(ctx, resolution)[1].labels.unique())
    sizes = [b for b in ctx.profile.label_batch_sizes if b <= distinct]
    return sizes + ([distinct] if ctx.profile.name == "quick" and distinct not in sizes else [])


def label_table(ctx: StudyContext, batch_sizes=None, trials=None, resolution: int | None = None) -> dict:
    """Accuracy of both rules over ``trials`` random batches of distinct labels per batch size."""
    started = time.perf_counter()
    sizes = pick(batch_sizes, default_batch_sizes(ctx, resolution))
    trials = int(pick(trials, ctx.profile.label_trials))
    model, data = label_model_and_data(ctx, resolution)
    rows = []
    for b in sizes:
        paper = paper_results.TABLE1_LABEL_ACCURACY.get(b)
        for rule in ("sum", "min"):
            r = evaluate_label_recovery(model, data, batch_size=int(b), trials=trials, rule=rule,
                                        seed=ctx.seed)
            rows.append({"batch_size": int(b), "rule": rule, "accuracy_pct": 100 * r["accuracy"],
                         "exact_batches_pct": 100 * r["exact_batches"], "trials": trials,
                         "paper_train_pct": paper["train"][rule] if paper else None,
                         "paper_val_pct": paper["val"][rule] if paper else None})
    settings = {"batch_sizes": list(sizes), "trials": trials, "model": model.name,
                "weights": model.weights_source, "dataset": data.source, "resolution": data.images.shape[-1],
                "pseudo_labelled_fraction": float(data.pseudo.double().mean())}
    return save_results(ctx, "table1_label_recovery", rows, settings, started)


def repeated_labels(ctx: StudyContext, batch_size: int = 8, repeats=(1, 2, 4), trials: int = 20,
                    resolution: int | None = None) -> dict:
    """Batches where each label appears ``k`` times: eq. 8 (distinct labels assumed) versus the
    label-count estimate (``labels.recover_label_multiset``), as the fraction of the batch's
    labels recovered with multiplicity, and the fraction of batches recovered entirely."""
    started = time.perf_counter()
    model, data = label_model_and_data(ctx, resolution)
    rows = []
    for k in repeats:
        scores = {"min_rule": [], "counting": []}
        for t in range(int(trials)):
            batch = sample_batch(data, int(batch_size), seed=ctx.seed * 10_000 + 97 * int(k) + t,
                                 distinct_labels=(k == 1), repeats=int(k))
            update = simulate_client(model, batch.images.to(ctx.device), batch.labels.to(ctx.device))
            guesses = {"min_rule": recover_labels_from_update(update, model, rule="min"),
                       "counting": recover_label_multiset(update, model)}
            for name, guess in guesses.items():
                scores[name].append(label_summary(guess, batch.labels)["accuracy"])
        for name, s in scores.items():
            s = torch.tensor(s, dtype=torch.float64)
            rows.append({"repeats": int(k), "batch_size": int(batch_size), "method": name,
                         "accuracy_pct": 100 * s.mean().item(),
                         "exact_batches_pct": 100 * (s == 1).double().mean().item(), "trials": int(trials)})
    return save_results(ctx, "repeated_labels", rows,
                        {"batch_size": batch_size, "repeats": list(repeats), "trials": trials}, started)


def claims(out) -> str:
    """Markdown measured from the cached Table 1: per batch size, the min rule (eq. 8) beside the
    sum rule and the paper's validation accuracy, and whether min beats sum as the paper says."""
    record = load_results(out, "table1_label_recovery")
    s = record["settings"]
    by = {(r["batch_size"], r["rule"]): r for r in record["rows"]}
    weights = "random init" if s["weights"] == "random" else "pretrained"
    lines = [f"**Table 1** ({s['trials']} random batches of distinct labels per size, {s['model']} "
             f"({weights}) at {s['resolution']} px; {100 * s['pseudo_labelled_fraction']:.0f}% of the "
             "images carry pseudo-labels):", ""]
    for b in s["batch_sizes"]:
        low, high = by.get((b, "min")), by.get((b, "sum"))
        if not (low and high):
            continue
        paper = (f"; paper (val): min {low['paper_val_pct']:.2f}%, sum {high['paper_val_pct']:.2f}%"
                 if low.get("paper_val_pct") is not None else "")
        verdict = ("min beats sum" if low["accuracy_pct"] > high["accuracy_pct"] else
                   "min ties sum" if low["accuracy_pct"] == high["accuracy_pct"] else "sum beats min")
        lines.append(f"- Batch {b}: min rule {low['accuracy_pct']:.2f}%, sum rule {high['accuracy_pct']:.2f}%"
                     f"{paper} — {verdict}.")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- plots (cache only)
def plot_label_table(out, pdf: bool = True):
    """Accuracy versus batch size for both rules, ours (solid) beside the paper's val (dashed)."""
    import matplotlib.pyplot as plt

    record = load_results(out, "table1_label_recovery")
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for rule, colour, label in (("min", "C0", "min rule (eq. 8)"), ("sum", "C3", "sum rule (iDLG)")):
        rows = [r for r in record["rows"] if r["rule"] == rule]
        ax.plot([r["batch_size"] for r in rows], [r["accuracy_pct"] for r in rows], "o-", color=colour,
                label=f"ours, {label}")
        paper = [r for r in rows if r["paper_val_pct"] is not None]
        ax.plot([r["batch_size"] for r in paper], [r["paper_val_pct"] for r in paper], "s--", color=colour,
                alpha=0.6, label=f"paper (val), {label}")
    ax.set_xlabel("batch size"), ax.set_ylabel("label accuracy (%)")
    ax.set_title(f"Table 1: label recovery ({record['context']['profile']} profile)", fontsize=9)
    ax.legend(fontsize=7), ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_study_figure(fig, out, "table1_label_recovery", pdf)
