"""Notebook 06's words and figures, from the cached defence sweep only (``studies.defences``):
per defence, the strength at which Lite0 IIP falls below 0.1 and the utility left there; attack
success against utility, one curve per defence; image grids per strength."""

from __future__ import annotations

from .common import load_results, load_tensors, save_study_figure

RESULTS = "defences"
IIP_THRESHOLD = 0.1
TITLES = {"pruning": "gradient pruning (keep fraction, per tensor)", "dp": "DP-SGD (noise multiplier)",
          "mixup": "MixUp (own-image weight)", "larger_batch": "larger batch (x images)",
          "secure_aggregation": "secure aggregation (clients)", "fedavg": "FedAvg (K local steps, local batch b)",
          "dp_parts": "the DP client without noise (its parts added one at a time)"}
NO_GUARANTEE = 10.0             # epsilon above this: no formal guarantee (common practice: <= 1 strong, <= 10 weak)


def privacy_words(epsilon) -> str:
    """DP's epsilon in words: none without noise, "no formal guarantee" above 10, "weak" from 1 to
    10, "strong" at most 1 (for one update at the stated delta)."""
    if epsilon is None:
        return "none (no noise)"
    if epsilon > NO_GUARANTEE:
        return "no formal guarantee"
    return "weak" if epsilon > 1 else "strong"


def with_privacy_words(rows: list[dict]) -> list[dict]:
    """The rows with ``privacy``: epsilon in words for DP rows, "-" for the others."""
    return [{**r, "privacy": privacy_words(r.get("epsilon")) if r["defence"]["name"] == "dp" else None} for r in rows]
SUCCESS = (("iip", "Lite0 IIP ↑"), ("pixel_nn_hit", "identified by pixel correlation ↑"), ("psnr", "PSNR (dB) ↑"))


def curves(record: dict) -> dict[str, list[dict]]:
    """curve -> its summary rows, weakest first, led by its undefended point (the clean point at
    the client's batch; FedAvg's own K = 1 at its batch)."""
    rows = record["rows"]
    clean = [r for r in rows if r["curve"] == "none"]
    out = {}
    for curve in dict.fromkeys(r["curve"] for r in rows if r["curve"] != "none"):
        members = [r for r in rows if r["curve"] == curve]
        out[curve] = members if curve == "fedavg" else clean + members
    return out


def _at(row: dict) -> str:
    eps = ""
    if row["defence"]["name"] == "dp":
        eps = (f", epsilon {row['epsilon']:.3g} for this update and {row['epsilon_epoch']:.3g} over an epoch "
               f"(delta {row['defence']['delta']:g}, sampling rate {row['defence']['sample_rate']:.3g}): "
               f"{privacy_words(row['epsilon'])}" if row.get("epsilon") is not None else ", epsilon infinite (no noise)")
    return (f"IIP {row['iip']:.2f} ± {row['iip_std']:.2f}, pixel identification {row['pixel_nn_hit']:.2f} ± "
            f"{row['pixel_nn_hit_std']:.2f}, PSNR {row['psnr']:.1f} ± {row['psnr_std']:.1f} dB, labels "
            f"{row['label_accuracy']:.2f}; utility: cosine {row['utility']:.3f} to the clean update (mean per "
            f"tensor {row['utility_layers']:.3f}), {row['utility_population']:.3f} to the pool's gradient{eps}")


def verdict(rows: list[dict]) -> tuple[str, dict | None, dict | None]:
    """("protects" | "hides semantics only" | "does not protect in the range" | "not needed here",
    the weakest row with IIP below 0.1, the weakest from there on where pixel correlation
    identifies fewer than half the images); "protects" needs both."""
    if rows[0]["iip"] < IIP_THRESHOLD:
        return "not needed here", rows[0], None
    below = next((r for r in rows[1:] if r["iip"] < IIP_THRESHOLD), None)
    if below is None:
        return "does not protect in the range", None, None
    hidden = next((r for r in rows[rows.index(below):] if r["pixel_nn_hit"] < 0.5), None)
    return ("protects" if hidden else "hides semantics only"), below, hidden


def claims(out) -> str:
    """Markdown generated from the cached sweep: the settings, then per defence its undefended
    point, the strength where IIP falls below 0.1 with the utility left there (or that it never
    does), and whether pixel correlation still identifies the images."""
    record = load_results(out, RESULTS)
    s = record["settings"]
    fedavg = f", FedAvg {s['fedavg_batches']} batches of {s['fedavg_batch']}" if s.get("fedavg_batch") else ""
    lines = [f"**Defences** ({s['batches']} batches of {s['batch_size']} per point{fedavg}; "
             f"{s['iterations']} iterations a run (profile: "
             f"{s['profile_iterations']}), {s['seeds']} seed(s), client BN mode {s['bn_mode']}; mean ± std over "
             "batches; threshold: Lite0 IIP below 0.1):", ""]
    for curve, rows in curves(record).items():
        word, below, hidden = verdict(rows)
        head = f"- **{TITLES.get(curve, curve)}**, undefended ({rows[0]['label']}): {_at(rows[0])}."
        if word == "not needed here":
            tail = " IIP is already below 0.1 without the defence at this batch size; see pixel identification."
        elif below is None:
            low = min(rows[1:], key=lambda r: r["iip"])
            tail = (f" IIP never falls below 0.1 in the range {rows[1]['label']} .. {rows[-1]['label']} "
                    f"(lowest {low['iip']:.2f} at {low['label']}).")
        else:
            tail = f" IIP falls below 0.1 at **{below['label']}**: {_at(below)}."
            if below["defence"]["name"] == "dp" and below["defence"]["noise"] == 0:
                tail += (" No noise is added there: what changed is the DP client itself (BN frozen to its running "
                         "statistics, the batch's BN statistics withheld, each image's gradient clipped).")
            if hidden is None:
                tail += (f" Pixel correlation still identifies a fraction {rows[-1]['pixel_nn_hit']:.2f} of the "
                         f"images at the strongest setting ({rows[-1]['label']}): colours and layout survive.")
            elif hidden is not below:
                tail += (f" Pixel correlation identifies fewer than half the images only from "
                         f"**{hidden['label']}** (utility cosine {hidden['utility']:.3f}, mean per tensor "
                         f"{hidden['utility_layers']:.3f}).")
        lines.append(head + tail)
    attribution = dp_attribution(record)
    return "\n".join(lines + ([f"- **What protects under DP:** {attribution}"] if attribution else []))


def dp_attribution(record: dict) -> str | None:
    """Which part of the DP client stops the attack, when the noise gives no formal guarantee where
    IIP falls below 0.1: the first of the noise-free parts (``dp_parts``: BN statistics withheld,
    BN frozen, clipping) with IIP below 0.1, or that none does. None without both curves."""
    found = curves(record)
    if "dp" not in found:
        return None
    word, below, _ = verdict(found["dp"])
    if below is None or (below.get("epsilon") is not None and below["epsilon"] <= NO_GUARANTEE):
        return None
    if "dp_parts" not in found:
        return (f"DP-SGD's noise at {below['label']} gives no formal guarantee, so what stops the attack there is "
                "the DP client's clipping, frozen BN or withheld BN statistics, or the noise without a guarantee; "
                "this cache has no rows that tell them apart (`STRENGTHS` with \"dp_parts\" computes them).")
    parts = found["dp_parts"][1:]
    steps = ", ".join(f"{r['label']}: IIP {r['iip']:.2f}, pixel identification {r['pixel_nn_hit']:.2f}" for r in parts)
    first = next((r for r in parts if r["iip"] < IIP_THRESHOLD), None)
    eps = "no noise" if below.get("epsilon") is None else f"epsilon {below['epsilon']:.3g}, no formal guarantee"
    what = (f"what stops it is **{first['label'].lstrip('+ ')}**, not the noise" if first else
            "none of the noise-free parts alone brings IIP below 0.1, so the noise does, without a formal guarantee")
    return f"DP-SGD stops the attack at {below['label']} ({eps}); without noise ({steps}) {what}."


def conclusion(out) -> str:
    """What protects and what does not, one sentence each, from :func:`verdict`."""
    record = load_results(out, RESULTS)
    groups: dict[str, list[str]] = {}
    for curve, rows in curves(record).items():
        word, below, hidden = verdict(rows)
        below = hidden or below
        if word == "does not protect in the range":
            low = min(rows[1:], key=lambda r: r["iip"])
            where = f" (lowest IIP {low['iip']:.2f} at {low['label']}, pixel identification {low['pixel_nn_hit']:.2f})"
        elif word == "not needed here":
            where = ""
        else:
            eps = ("" if below.get("epsilon") is None else
                   f", epsilon {below['epsilon']:.3g} for the update: {privacy_words(below['epsilon'])}")
            where = (f" (from {below['label']}, utility cosine {below['utility']:.3f}, per tensor "
                     f"{below['utility_layers']:.3f}, pool cosine {below['utility_population']:.3f}{eps})")
        groups.setdefault(word, []).append(TITLES.get(curve, curve).split(" (")[0] + where)
    words = {"protects": "Protect (IIP below 0.1, and pixel correlation identifies fewer than half the images, "
                         "from the strength named)",
             "hides semantics only": "Hide what the images show from the Lite0 features (IIP below 0.1) but "
                                     "not which images they are (pixel correlation still identifies most)",
             "does not protect in the range": "Do not bring IIP below 0.1 in the range tried",
             "not needed here": "Not tested against a working attack (IIP already below 0.1 undefended)"}
    lines = [f"- {words[w]}: {'; '.join(names)}." for w, names in groups.items()]
    attribution = dp_attribution(record)
    return "\n".join(lines + ([f"- {attribution}"] if attribution else []))


def _short(row: dict) -> str:
    if row["curve"] == "fedavg":
        return row["label"].replace("K=", "K").replace(", b=", "b")
    if row["curve"] == "dp_parts":
        return ("", "no BN stats", "frozen BN", "clip")[int(row["strength"])]
    return row["label"].split("=")[-1]


def plot_tradeoff(out, pdf: bool = True):
    """Attack success (IIP, pixel identification, PSNR; mean ± std over batches) against utility
    lost, 1 - cosine to the clean update, whole and mean per tensor (symlog: a larger batch and an
    aggregation lose none), and against the cosine to the pool's gradient; one curve per defence
    (strengths annotated), the undefended batch's noise-start and mean-colour rows dashed."""
    import matplotlib.pyplot as plt

    record = load_results(out, RESULTS)
    s = record["settings"]
    refs = [r for r in record["references"] if r["images"] == s["batch_size"]]
    axes_x = ((lambda r: 1 - r["utility"], "utility lost: 1 - cosine to the clean update"),
              (lambda r: 1 - r["utility_layers"], "utility lost: 1 - mean per-tensor cosine"),
              (lambda r: r["utility_population"], "utility: cosine to the whole pool's gradient"))
    fig, axes = plt.subplots(len(axes_x), len(SUCCESS), figsize=(4.2 * len(SUCCESS), 3.4 * len(axes_x)))
    for i, (x, xlabel) in enumerate(axes_x):
        for j, (y, ylabel) in enumerate(SUCCESS):
            ax = axes[i][j]
            for curve, rows in curves(record).items():
                line = ax.errorbar([x(r) for r in rows], [r[y] for r in rows], fmt="o-", ms=4, capsize=2,
                                   yerr=[r[f"{y}_std"] or 0 for r in rows], label=TITLES.get(curve, curve))
                for r in rows[1:]:
                    ax.annotate(_short(r), (x(r), r[y]), fontsize=6, color=line[0].get_color(), xytext=(3, 3),
                                textcoords="offset points")
            for ref, colour in zip(refs, ("grey", "tab:orange")):
                ax.axhline(ref[y], ls="--", lw=1, color=colour, label=f"{ref['row']} (batch {s['batch_size']})")
            if y == "iip":
                ax.axhline(IIP_THRESHOLD, ls=":", lw=1, color="k", label="IIP 0.1")
            if i < 2:
                ax.set_xscale("symlog", linthresh=1e-3), ax.set_xlim(-1e-4, 1.5)
            ax.set_xlabel(xlabel, fontsize=8), ax.set_ylabel(ylabel, fontsize=8), ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=7, bbox_to_anchor=(0.5, -0.04))
    fig.suptitle(f"Attack success against utility ({s['iterations']} iterations a run, mean ± std over "
                 f"{s['batches']} batches of {s['batch_size']}; FedAvg {s['fedavg_batches']} of {s['fedavg_batch']})",
                 fontsize=9)
    fig.tight_layout()
    return save_study_figure(fig, out, "defences_tradeoff", pdf)


def plot_grids(out, pdf: bool = True) -> list:
    """One figure per defence, one column per strength (MixUp's mixed training images beside):
    the first batch's originals, the client's own images first, and each reconstruction (blank
    where a point holds fewer images)."""
    import torch

    from gradinv_lib.plotting import image_grid

    record, tensors = load_results(out, RESULTS), load_tensors(out, "defence_images")
    paths = []
    for curve, rows in curves(record).items():
        columns = {}
        for r in rows:
            name = f"{r['curve']}: {r['label']}"
            for key, title in ((f"{name} (trained on)", f"trained on ({_short(r)})"), (name, r["label"])):
                if key in tensors:
                    columns[title] = tensors[key]
        width = max([t.shape[0] for t in columns.values()] or [0])
        columns = {"original": tensors["original"][:width], **columns}
        blank = torch.ones_like(columns["original"][0])
        grid = {f"image {i + 1}": torch.stack([c[i] if i < len(c) else blank for c in columns.values()])
                for i in range(width)}
        fig = image_grid(grid, column_titles=list(columns), scale=1.1)
        fig.suptitle(f"{TITLES.get(curve, curve)}: first batch", fontsize=9, y=1.02)
        paths.append(save_study_figure(fig, out, f"grid_{curve}", pdf))
    return paths
