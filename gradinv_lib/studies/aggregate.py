"""Many batches per table row: mean and spread of each metric, the content-free reference rows
(noise start, mean colour) every table carries, and whether a claimed direction holds beyond the
spread."""

from __future__ import annotations

import math
from collections import defaultdict

import torch

from ..metrics import evaluate_reconstruction, reference_images

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
