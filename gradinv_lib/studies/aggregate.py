"""Many batches per table row: mean and spread of each metric, the content-free reference rows
(noise start, mean colour) every table carries, and whether a claimed direction holds beyond the
spread."""

from __future__ import annotations

import math
from collections import defaultdict

import torch

from gradinv_lib.metrics import evaluate_reconstruction, reference_images

# Metrics where smaller is better; every other metric is better when larger.
LOWER_IS_BETTER = ("fft2d", "lpips", "feature_dist")
REFERENCE_ROWS = ("noise start", "mean colour")


def mean_spread(values) -> tuple[float | None, float | None]:
    """(mean, sample standard deviation) of the finite values, (None, None) when there are none;
    the spread of a single value is 0."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None, None
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))


def aggregate_rows(rows: list[dict], by: str, metrics) -> list[dict]:
    """One row per value of ``rows[i][by]`` (first-seen order): ``<metric>`` the mean over
    batches, ``<metric>_std`` the spread, ``batches`` the count; non-metric fields of the first
    row of each group are kept."""
    groups: dict = defaultdict(list)
    for row in rows:
        groups[row[by]].append(row)
    out = []
    for key, members in groups.items():
        summary = {k: v for k, v in members[0].items() if k not in metrics and not k.endswith("_std")}
        summary[by], summary["batches"] = key, len(members)
        for metric in metrics:
            summary[metric], summary[f"{metric}_std"] = mean_spread(m.get(metric) for m in members)
        out.append(summary)
    return out


def reference_scores(originals01: torch.Tensor, start01: torch.Tensor | None = None,
                     which=REFERENCE_ROWS, **evaluate_options) -> dict[str, dict]:
    """Metrics of the content-free references of one batch (``metrics.reference_images``):
    name -> the batch-mean metrics ``evaluate_reconstruction`` returns."""
    refs = reference_images(originals01, start01)
    return {name: {k: v for k, v in evaluate_reconstruction(refs[name], originals01, **evaluate_options).items()
                   if k != "per_image"}
            for name in which if name in refs}


def direction_holds(better: dict, worse: dict, metric: str) -> str:
    """Whether ``better`` beats ``worse`` on ``metric`` beyond the spread: "yes" (means differ in
    the right direction by more than the larger spread), "no" (by more than that, the wrong way),
    "within spread" otherwise. Rows as returned by :func:`aggregate_rows`."""
    a, b = better.get(metric), worse.get(metric)
    if a is None or b is None:
        return "n/a"
    spread = max(better.get(f"{metric}_std") or 0.0, worse.get(f"{metric}_std") or 0.0)
    gain = (b - a) if metric in LOWER_IS_BETTER else (a - b)
    if gain > spread:
        return "yes"
    if gain < -spread:
        return "no"
    return "within spread"


# Metrics whose direction every table states: plain and registered PSNR, FFT-2D, SSIM, feature dist.
DIRECTION_METRICS = ("psnr", "psnr_registered", "fft2d", "ssim", "feature_dist")
METRIC_NAMES = {"psnr": "PSNR", "psnr_registered": "PSNR reg.", "fft2d": "FFT-2D", "ssim": "SSIM",
                "feature_dist": "feature dist", "lpips": "LPIPS"}


def paired_differences(batch_rows: list[dict], better: str, worse: str, metric: str,
                       by: str = "row", pair_on: str = "batch_seed") -> tuple[float | None, float | None]:
    """(mean, spread) over the batches both rows share of the per-batch difference
    ``better - worse`` on ``metric`` (rows of one table share their batches, so the difference
    on each batch removes how hard that batch is from the comparison)."""
    rows = {name: {r[pair_on]: r.get(metric) for r in batch_rows if r[by] == name} for name in (better, worse)}
    shared = [k for k in rows[better] if k in rows[worse]]
    return mean_spread(rows[better][k] - rows[worse][k] for k in shared
                       if rows[better][k] is not None and rows[worse][k] is not None)


def directions(batch_rows: list[dict], better: str, worse: str, metrics=DIRECTION_METRICS) -> dict:
    """metric -> (verdict, mean difference, its spread) of the claim "row ``better`` beats row
    ``worse``": :func:`direction_holds` applied to the per-batch differences
    (:func:`paired_differences`), i.e. "yes" when the mean difference goes the right way by more
    than its spread over the batches."""
    out = {}
    for m in metrics:
        mean, spread = paired_differences(batch_rows, better, worse, m)
        verdict = direction_holds({m: mean, f"{m}_std": spread}, {m: 0.0}, m) if mean is not None else "n/a"
        out[m] = (verdict, mean, spread)
    return out


def direction_text(verdicts: dict) -> str:
    """{"psnr": ("yes", ...), ...} -> "PSNR yes; FFT-2D within spread; ..." (for a table cell)."""
    return "; ".join(f"{METRIC_NAMES.get(m, m)} {v[0]}" for m, v in verdicts.items())


def mark_directions(rows: list[dict], batch_rows: list[dict], pairs, metrics=DIRECTION_METRICS,
                    on: str = "better") -> list[dict]:
    """For each claim (better row name, worse row name) of ``pairs``, store on the ``on`` row
    ("better" or "worse") of the summary ``rows``: ``direction`` (metric -> [verdict, mean
    difference, spread], :func:`directions` over ``batch_rows``), ``direction_better``,
    ``direction_worse`` and ``direction_text``; returns ``rows``."""
    by_name = {r["row"]: r for r in rows}
    for better, worse in pairs:
        if better in by_name and worse in by_name:
            verdicts = directions(batch_rows, better, worse, metrics)
            by_name[better if on == "better" else worse].update(
                direction={m: list(v) for m, v in verdicts.items()}, direction_better=better,
                direction_worse=worse, direction_text=direction_text(verdicts))
    return rows


VERDICT_WORDS = {"yes": "holds beyond the spread", "no": "reversed beyond the spread",
                 "within spread": "within the spread", "n/a": "not measured"}


def claim_lines(rows: list[dict], label=lambda row: row["row"]) -> list[str]:
    """One Markdown bullet per claim stored by :func:`mark_directions`: for each verdict, the
    metrics with both rows' means and the mean ± spread of the per-batch difference, e.g.
    "- **A** better than **B**: holds beyond the spread for PSNR 14.2 vs 12.1 (+2.1 ± 0.5)."."""
    by_name = {r["row"]: r for r in rows}
    lines = []
    for row in rows:
        if not row.get("direction"):
            continue
        better, worse = by_name[row["direction_better"]], by_name[row["direction_worse"]]
        groups: dict = defaultdict(list)
        for metric, (verdict, diff, spread) in row["direction"].items():
            if verdict != "n/a":
                groups[verdict].append(f"{METRIC_NAMES.get(metric, metric)} {better[metric]:.3g} vs "
                                       f"{worse[metric]:.3g} ({diff:+.3g} ± {spread:.2g})")
        parts = [f"{VERDICT_WORDS[v]} for {', '.join(items)}" for v, items in groups.items()]
        lines.append(f"- **{label(better)}** better than **{label(worse)}**: {'; '.join(parts) or 'not measured'}.")
    return lines
