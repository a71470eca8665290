"""One attack experiment end to end, shared by the CLI and the notebooks: simulate the client,
run GradInversion, match reconstructions to originals by label, score them, save the outputs."""

from __future__ import annotations

from pathlib import Path

import torch

from gradinv_lib.attack.config import InversionConfig
from gradinv_lib.attack.inversion import InversionResult
from gradinv_lib.attack.pipeline import gradinversion
from gradinv_lib.errors import InputError, MissingAssetError
from gradinv_lib.federated.client import ClientUpdate, simulate_client, validate_images01, validate_labels
from gradinv_lib.io import provenance, torch_save_atomic, write_json_atomic
from gradinv_lib.metrics import evaluate_reconstruction, lpips_metric, match_by_labels
from gradinv_lib.plotting import image_grid, save_figure
from gradinv_lib.prior_attacks import run_prior_attack
from gradinv_lib.registration import REGISTRATIONS


def available_lpips(device="cpu"):
    """(callable, None) with the real LPIPS backbone, else (None, the reason it is unavailable)."""
    try:
        return lpips_metric(device), None
    except MissingAssetError as exc:
        return None, str(exc)


def label_summary(recovered: torch.Tensor, true: torch.Tensor | None, about: dict | None = None) -> dict:
    """Recovered labels and, when the truth is known, the fraction of true labels recovered (as a
    multiset); ``about``: the rule and the reasons the labels may be wrong (``result.extra``)."""
    out = {"recovered": recovered.tolist(), **(about or {})}
    if true is not None:
        truth = true.tolist()
        hits = sum(min(recovered.tolist().count(c), truth.count(c)) for c in set(truth))
        out.update(true=sorted(truth), accuracy=hits / len(truth))
    return out


def run_method(method: str, model, update: ClientUpdate, config, labels: torch.Tensor | None = None,
               **options) -> InversionResult:
    """Attack ``update`` with ``method``: "gradinversion" or a name starting with it (GradInversion,
    its BN variant set by ``config.bn_target``), else a prior attack of ``prior_attacks`` (which
    gets the true ``labels`` only if it needs them; ``options`` such as ``generator=`` go to it).
    GradInversion never sees ``labels``; ``options`` go to its loop (progress, callback...)."""
    if method.startswith("gradinversion"):
        return gradinversion(model, update.without_labels(), config, **options)
    return run_prior_attack(method, model, update, config, labels=labels, **options)


def evaluate_attack(model, result: InversionResult, originals01: torch.Tensor,
                    true_labels: torch.Tensor | None, registration: str = "similarity",
                    lpips=None, score_seeds: bool = True) -> dict:
    """Metrics of the consensus, of each seed, and of the starting noise (the paper's first row).

    Reconstructions are paired with originals by recovered label (an assignment on MSE breaks
    ties and repairs wrong labels); PSNR after registration registers each image onto its own
    original. ``score_seeds=False`` leaves the seeds unscored (tables show only the consensus).
    """
    # results come back on the CPU (InversionResult); originals may sit on the attack's device
    originals01 = originals01.cpu()
    true_labels = None if true_labels is None else torch.as_tensor(true_labels).cpu()
    labels = true_labels if true_labels is not None else result.labels
    perm = match_by_labels(result.labels, labels, result.consensus, originals01)
    paired = originals01[perm]
    register = REGISTRATIONS[registration]
    score = lambda images: evaluate_reconstruction(images, paired, model=model,  # noqa: E731
                                                   registration=register, lpips=lpips)
    several = score_seeds and result.images.shape[0] > 1
    seeds = [score(seed_images) for seed_images in result.images] if several else []
    return {
        "metrics": score(result.consensus),
        "noise_metrics": score(result.start),
        "seed_metrics": [{k: v for k, v in s.items() if k != "per_image"} for s in seeds],
        "labels": label_summary(result.labels, true_labels, result.extra.get("labels")),
        "pairing": perm.tolist(),
        "registration_for_metrics": registration,
        "forces": getattr(result, "forces", None),   # {"start"|"end": {term: |d term / d x|}}
    }


def attack_batch(model, images01: torch.Tensor, labels: torch.Tensor,
                 config: InversionConfig = InversionConfig(), bn_mode: str = "train",
                 update: ClientUpdate | None = None, lpips=None, method: str = "gradinversion",
                 score_seeds: bool = True, **loop_options):
    """Simulate the client on the batch (unless ``update`` is given) and attack its gradient with
    ``method`` (:func:`run_method`; ``config`` is that method's configuration).

    Returns (InversionResult, evaluation dict). The attacker never sees the true labels (prior
    attacks that need them, Table 4's "needs y*" column, get them).
    """
    if update is None:
        update = simulate_client(model, images01, labels, bn_mode=bn_mode)
    result = run_method(method, model, update, config, labels=labels.cpu(), **loop_options)
    return result, evaluate_attack(model, result, images01, labels, lpips=lpips, score_seeds=score_seeds)


def load_originals(path: str | Path, update: ClientUpdate, num_classes: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The private batch behind a saved update, to score an attack on it: a ``.pt`` file holding a
    (B, 3, H, W) tensor in [0, 1] in the client's batch order, or a dict with ``images`` (and
    optionally ``labels`` (B,)). Returns (images, labels or None); checked against the update."""
    path = Path(path)
    if not path.is_file():
        raise MissingAssetError(f"originals file: expected a file at {path}, found nothing there")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated file, foreign pickle
        raise InputError(f"originals file {path}: expected a torch file of tensors, could not read it "
                         f"({type(exc).__name__})") from None
    images, labels = (obj.get("images"), obj.get("labels")) if isinstance(obj, dict) else (obj, None)
    validate_images01(images, name=f"originals file {path}")
    expected = (update.batch_size, *update.image_shape)
    if tuple(images.shape) != expected:
        raise InputError(f"originals file {path}: expected images of shape {expected} (the update's "
                         f"batch), found {tuple(images.shape)}")
    if labels is not None:
        validate_labels(labels, update.batch_size, num_classes, name=f"originals file {path} labels")
    return images.float(), labels


def save_attack(out_dir: str | Path, result: InversionResult, evaluation: dict,
                originals01: torch.Tensor | None, extra: dict | None = None) -> dict:
    """Write grid.png, result.json (metrics, labels, config, provenance) and tensors.pt.

    ``originals01=None`` (an attack on captured gradients whose batch is unknown): the grid and
    tensors hold no originals and ``evaluation`` need only carry the labels."""
    out = Path(out_dir)
    paired = None if originals01 is None else originals01[torch.as_tensor(evaluation["pairing"])]
    rows = {} if paired is None else {"original": paired}
    rows.update({"reconstruction": result.consensus, "noise start": result.start})
    if result.images.shape[0] > 1:
        rows.update({f"seed {g}": result.images[g] for g in range(min(result.images.shape[0], 4))})
    save_figure(image_grid(rows, column_titles=result.labels.tolist()), out / "grid.png")
    record = {
        **evaluation,
        "config": result.config.to_dict(),
        "iterations": result.iterations,
        "resumed_from": result.resumed_from,
        "wall_time_s": result.seconds,
        "provenance": provenance(),
        **(extra or {}),
        "files": {"grid": str(out / "grid.png"), "result": str(out / "result.json"),
                  "tensors": str(out / "tensors.pt")},
    }
    torch_save_atomic({"images": result.images, "consensus": result.consensus,
                       "start": result.start, "labels": result.labels,
                       "originals": paired, "history": result.history}, out / "tensors.pt")
    write_json_atomic(out / "result.json", record)
    return record
