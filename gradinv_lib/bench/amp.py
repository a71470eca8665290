"""Does bf16 autocast change the attack's result? The same update, the same starting noise and
the same iterations with AMP on and off (``InversionConfig.amp``: the forward pass of eq. 3's
client step in bf16, the loss and the image update in fp32), scored by plain PSNR against the
originals and against each other. CUDA only: autocast is off on the CPU."""

from __future__ import annotations

import time

import torch

from gradinv_lib.attack.config import InversionConfig
from gradinv_lib.attack.pipeline import gradinversion
from gradinv_lib.data import load_pool, sample_batch
from gradinv_lib.errors import InputError
from gradinv_lib.federated.client import simulate_client
from gradinv_lib.metrics.pixel import psnr
from gradinv_lib.models import build_model


def require_cuda(device) -> torch.device:
    """``device`` as a torch.device; a one-line InputError unless it is CUDA (autocast is off elsewhere)."""
    device = torch.device(device)
    if device.type != "cuda":
        raise InputError(f"AMP check: expected a CUDA device (autocast is off elsewhere), found {device}")
    return device


def amp_agreement(model_name: str = "resnet50", resolution: int = 224, iterations: int = 200,
                  batch_size: int = 8, seeds: int = 1, device="cuda", weights: str = "random",
                  seed: int = 0) -> dict:
    """PSNR (dB, mean over the batch) of the fp32 and the AMP reconstructions against the
    originals, and of one against the other, after ``iterations`` of the full method from the
    same start, on one batch of the embedded pool (labels given, so both attack the same batch)."""
    device = require_cuda(device)
    model = build_model(model_name, weights=weights, num_classes=1000, device=device, seed=seed)
    batch = sample_batch(load_pool(resolution), batch_size, seed=seed)
    images, labels = batch.images.to(device), batch.labels.to(device)
    update = simulate_client(model, images, labels, bn_mode="train")
    out, results = {}, {}
    for amp in (False, True):
        config = InversionConfig(iterations=iterations, seeds=seeds, seed=seed, amp=amp,
                                 group="registered" if seeds > 1 else "none")
        torch.cuda.synchronize(device)
        started = time.perf_counter()
        result = gradinversion(model, update, config, labels=labels, device=device, progress=False)
        torch.cuda.synchronize(device)
        key = "amp" if amp else "fp32"
        results[key] = result.consensus.to(device).float()
        out[f"{key}_seconds"] = time.perf_counter() - started
        out[f"{key}_psnr"] = float(psnr(results[key], images).mean())
        out[f"{key}_final_loss"] = result.history["total"][-1] if result.history.get("total") else None
    out["psnr_amp_vs_fp32"] = float(psnr(results["amp"], results["fp32"]).mean())
    out["psnr_difference_db"] = out["amp_psnr"] - out["fp32_psnr"]
    out.update(model=model_name, weights=weights, resolution=resolution, iterations=iterations,
               batch_size=batch_size, seeds=seeds, batch_ids=batch.ids)
    return out
