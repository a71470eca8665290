"""One attack run as a study row: simulate the client on a batch, run GradInversion
(``experiments.attack_batch``), flatten the metrics, keep the images for the figures."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import InversionConfig
from ..experiments import attack_batch, available_lpips
from .common import StudyContext

METRICS = ("feature_dist", "fft2d", "psnr", "psnr_registered", "ssim", "lpips")

_LPIPS: dict = {}


def lpips_for(device: str):
    """(LPIPS callable or None, reason) once per device: real LPIPS only, never a random backbone."""
    if device not in _LPIPS:
        _LPIPS[device] = available_lpips(device)
    return _LPIPS[device]


def study_config(ctx: StudyContext, iterations: int | None = None, **changes) -> InversionConfig:
    """The profile's attack configuration with the study's changes (seed = the context's)."""
    config = ctx.profile.config.replace(seed=ctx.seed, **changes)
    return config.replace(iterations=int(iterations)) if iterations else config


def scaled_iterations(ctx: StudyContext, fraction: float) -> int:
    """A fraction of the profile's iterations in the quick profile (compute budget); all of them
    in the paper profile."""
    total = ctx.profile.config.iterations
    return total if ctx.profile.name == "paper" else max(1, int(round(total * fraction)))


@dataclass
class AttackRun:
    row: dict          # flat metrics of the consensus, plus the noise start's
    originals: torch.Tensor   # (B, 3, H, W) paired with ``reconstruction``
    reconstruction: torch.Tensor
    start: torch.Tensor
    evaluation: dict
    seconds: float


def run_attack(ctx: StudyContext, batch, config: InversionConfig, model=None, callback=None,
               **row_info) -> AttackRun:
    """Attack ``batch`` (LabelledImages) with ``config``; the attacker never sees the labels."""
    model = model or ctx.model()
    lpips, lpips_reason = lpips_for(ctx.device)
    result, ev = attack_batch(model, batch.images.to(ctx.device), batch.labels.to(ctx.device), config,
                              lpips=lpips, device=ctx.device, progress=False, callback=callback)
    m, n = ev["metrics"], ev["noise_metrics"]
    row = {**row_info, "model": model.name, "weights": model.weights_source,
           "batch_size": len(batch), "iterations": config.iterations, "seeds": config.seeds,
           **{k: m.get(k) for k in METRICS}, **{f"noise_{k}": n.get(k) for k in METRICS},
           "label_accuracy": ev["labels"].get("accuracy"), "seconds": round(result.seconds, 2),
           "lpips_unavailable": lpips_reason}
    paired = batch.images[torch.as_tensor(ev["pairing"])]
    return AttackRun(row, paired, result.consensus, result.start, ev, result.seconds)
