"""Table 4 on one client update: GradInversion (BN_exact and BN_approx) beside the prior attacks,
all from the same batch, the same starting noise and the same metrics (``evaluate_attack``)."""

from __future__ import annotations

import csv
import io
import time
from typing import Iterable

import torch

from gradinv_lib.errors import InputError, MissingAssetError
from gradinv_lib.federated.client import simulate_client
from gradinv_lib.paper_results import TABLE4_COMPARISON, TABLE4_ROW_NAMES
from gradinv_lib.prior_attacks import (PRIOR_ATTACKS, DeepInversionConfig, DLGConfig, GANProjectionConfig,
                                       InvertingGradientsConfig, biggan_unavailable_reason, load_biggan)

from .run import evaluate_attack, run_method

GRADINVERSION_ROWS = {"gradinversion_bn_exact": "exact", "gradinversion_bn_approx": "running"}
TABLE4_ATTACKS = ("gan_projection", "deepinversion", "inverting_gradients", "dlg",
                  "gradinversion_bn_approx", "gradinversion_bn_exact")
ALL_ATTACKS = (*TABLE4_ATTACKS, "idlg")
COLUMNS = ("method", "title", "status", "needs_true_labels", "needs_gan", "fft2d", "psnr",
           "psnr_unregistered", "ssim", "lpips", "feature_dist", "label_accuracy", "iterations",
           "wall_time_s", "paper_fft2d", "paper_psnr", "paper_lpips")


def default_configs(base, restarts: int = 1) -> dict:
    """Every attack's configuration from a profile's GradInversion ``base`` config: each keeps its
    own paper's loss, optimiser, learning rate and priors, and gets the same budget of
    ``base.iterations`` objective evaluations (IG: per restart) and the same seed (starting noise)."""
    n, seed = base.iterations, base.seed
    return {
        "gradinversion_bn_exact": base.replace(bn_target="exact"),
        "gradinversion_bn_approx": base.replace(bn_target="running"),
        "inverting_gradients": InvertingGradientsConfig(iterations=n, restarts=restarts, seed=seed,
                                                        label_rule=base.label_rule),
        "dlg": DLGConfig(iterations=n, seed=seed),
        "idlg": DLGConfig(iterations=n, seed=seed, labels="sum"),
        "deepinversion": DeepInversionConfig(iterations=n, seed=seed),   # its own lr, not GradInversion's
        "gan_projection": GANProjectionConfig(iterations=n, seed=seed),
    }


def _needs(name: str) -> tuple[bool, bool]:
    if name in GRADINVERSION_ROWS:
        return False, False
    return PRIOR_ATTACKS[name].needs_labels, PRIOR_ATTACKS[name].needs_gan


def _row(name: str, status: str, evaluation: dict | None = None, result=None, seconds=None,
         lpips_reason=None) -> dict:
    labels, gan = _needs(name) if name != "noise" else (False, False)
    paper = TABLE4_COMPARISON.get(name, {})
    metrics = (evaluation or {}).get("metrics", {})
    row = {"method": name, "title": TABLE4_ROW_NAMES.get(name, PRIOR_ATTACKS[name].title if name in PRIOR_ATTACKS else name),
           "status": status, "needs_true_labels": labels, "needs_gan": gan,
           "fft2d": metrics.get("fft2d"), "psnr": metrics.get("psnr_registered"),
           "psnr_unregistered": metrics.get("psnr"), "ssim": metrics.get("ssim"),
           "lpips": metrics.get("lpips"), "feature_dist": metrics.get("feature_dist"),
           "label_accuracy": (evaluation or {}).get("labels", {}).get("accuracy"),
           "iterations": getattr(result, "iterations", None), "wall_time_s": seconds,
           "paper_fft2d": paper.get("fft2d"), "paper_psnr": paper.get("psnr"),
           "paper_lpips": paper.get("lpips")}
    if row["lpips"] is None and evaluation is not None:
        row["lpips_unavailable"] = lpips_reason
    if result is not None and result.extra:
        row["extra"] = result.extra
    return row


def compare_attacks(model, images01: torch.Tensor, labels: torch.Tensor,
                    attacks: Iterable[str] = TABLE4_ATTACKS, configs: dict | None = None,
                    base_config=None, bn_mode: str = "train", lpips=None, lpips_reason: str | None = None,
                    registration: str = "similarity", generator=None, latent_dim: int | None = None,
                    biggan: str | None = None, progress: bool = False) -> dict:
    """Run ``attacks`` on ONE simulated client update of (images01, labels) and score each.

    ``configs`` (name -> config) override :func:`default_configs` of ``base_config`` (default: the
    quick profile's). Attacks that need true labels get them; the others never see them. The GAN
    row uses ``generator`` (with ``latent_dim``) or BigGAN-deep from ``biggan``; without either it
    is reported as unavailable, with the reason, and never faked. Returns {"rows", "update"}.
    """
    from gradinv_lib.profiles import get_profile
    attacks = list(attacks)
    unknown = [a for a in attacks if a not in ALL_ATTACKS]
    if unknown:
        raise InputError(f"attacks: expected names from {', '.join(ALL_ATTACKS)}, found {unknown}")
    base = base_config or get_profile("quick").config
    configs = {**default_configs(base), **(configs or {})}
    device = next(model.parameters()).device
    images01, labels = images01.to(device), labels.to(device)
    update = simulate_client(model, images01, labels, bn_mode=bn_mode)
    rows, noise = [], None
    for name in attacks:
        extra = {}
        if name == "gan_projection":
            extra, reason = gan_generator(generator, latent_dim, biggan, images01.shape[-1], device)
            if reason:
                rows.append(_row(name, reason))
                continue
        started = time.perf_counter()
        options = {"progress": progress} if name in GRADINVERSION_ROWS else extra
        result = run_method(name, model, update, configs[name], labels=labels.cpu(), **options)
        seconds = time.perf_counter() - started
        evaluation = evaluate_attack(model, result, images01.cpu(), labels.cpu(), registration, lpips)
        if noise is None and name != "gan_projection":  # every other row starts from this noise
            noise = _row("noise", "ok", {"metrics": evaluation["noise_metrics"]}, lpips_reason=lpips_reason)
        rows.append(_row(name, "ok", evaluation, result, seconds, lpips_reason))
    if noise is not None:
        noise.update(label_accuracy=None, iterations=0, wall_time_s=0.0)
        rows.insert(0, noise)
    return {"rows": rows, "batch_size": int(images01.shape[0]), "registration_for_metrics": registration,
            "bn_mode": bn_mode,
            "configs": {k: configs[k].to_dict() for k in attacks}}


def gan_generator(generator, latent_dim, biggan, resolution, device):
    """({generator, latent_dim}, None) or ({}, why the GAN row cannot run)."""
    if generator is not None:
        if latent_dim is None:
            raise InputError("compare_attacks: a generator needs its latent_dim")
        return {"generator": generator, "latent_dim": latent_dim}, None
    reason = biggan_unavailable_reason(biggan)
    if reason:
        return {}, reason
    try:
        return {"generator": load_biggan(biggan, resolution=resolution, device=device), "latent_dim": 128}, None
    except MissingAssetError as exc:
        return {}, f"unavailable: {exc}"


def table4_csv(rows: list[dict]) -> str:
    """The rows as CSV, Table 4's columns first."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def format_table4(rows: list[dict]) -> str:
    """A plain-text Table 4: ours, then the paper's value in brackets."""
    fmt = lambda v, d: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    lines = [f"{'method':<26}{'y*':>4}{'GAN':>5}{'FFT-2D':>16}{'PSNR':>18}{'SSIM':>7}{'LPIPS':>16}{'time s':>9}"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"{r['method']:<26}{'yes' if r['needs_true_labels'] else '':>4}"
                         f"{'yes' if r['needs_gan'] else '':>5}  {r['status']}")
            continue
        lines.append(f"{r['method']:<26}{'yes' if r['needs_true_labels'] else '':>4}"
                     f"{'yes' if r['needs_gan'] else '':>5}"
                     f"{fmt(r['fft2d'], 3):>8} [{fmt(r['paper_fft2d'], 3)}]"
                     f"{fmt(r['psnr'], 2):>9} [{fmt(r['paper_psnr'], 2):>6}]{fmt(r['ssim'], 3):>7}"
                     f"{fmt(r['lpips'], 3):>8} [{fmt(r['paper_lpips'], 3)}]{fmt(r['wall_time_s'], 1):>9}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command line
def add_cli_arguments(p, model_data_args) -> None:
    """``gradinv compare`` options (the shared model/data options come from ``model_data_args``)."""
    model_data_args(p)
    p.add_argument("--attacks", default=",".join(TABLE4_ATTACKS),
                   help=f"comma-separated rows to run, from {', '.join(ALL_ATTACKS)}")
    p.add_argument("--iterations", action="append", default=[], metavar="[ATTACK=]N",
                   help="objective evaluations: N for every attack, or ATTACK=N for one "
                        "(default: the profile's iterations for each); repeatable")
    p.add_argument("--restarts", type=int, default=1, help="Inverting Gradients restarts (best kept)")
    p.add_argument("--biggan", help="folder with BigGAN-deep config.json + pytorch_model.bin "
                                    "(or $GRADINV_BIGGAN)")
    p.add_argument("--bn-mode", choices=["eval", "train"],
                   help="BN in the client's forward (default: the profile's; quick: train)")
    p.add_argument("--csv", action="store_true", help="print CSV instead of a text table")
    p.add_argument("--out", default="runs/compare", help="folder for table4.json and table4.csv")
    p.add_argument("--no-progress", action="store_true")


def parse_iterations(values: list[str], attacks: list[str]) -> dict[str, int]:
    """["400", "dlg=100"] -> {attack: iterations}; later values win."""
    out: dict[str, int] = {}
    for value in values:
        name, _, count = value.rpartition("=")
        try:
            n = int(count)
        except ValueError:
            raise InputError(f"--iterations: expected N or ATTACK=N, found {value!r}") from None
        if name and name not in ALL_ATTACKS:
            raise InputError(f"--iterations: expected an attack from {', '.join(ALL_ATTACKS)}, found {name!r}")
        out.update({a: n for a in ([name] if name else attacks)})
    return out


def run_cli(args) -> dict:
    """Run ``gradinv compare`` from parsed ``args``; writes table4.json/csv, returns the record."""
    from pathlib import Path

    from gradinv_lib.cli.setup import setup
    from gradinv_lib.data import sample_batch
    from gradinv_lib.io import provenance, write_json_atomic

    from .run import available_lpips
    profile, model, dataset = setup(args)
    attacks = [a.strip() for a in args.attacks.split(",") if a.strip()]
    base = profile.config.replace(seed=args.seed,
                                  iterations=profile.full_method_iterations or profile.config.iterations)
    configs = default_configs(base, restarts=args.restarts)
    for name, n in parse_iterations(args.iterations, attacks).items():
        configs[name] = configs[name].replace(iterations=n)
    batch = sample_batch(dataset, args.batch_size, seed=args.seed)
    lpips, lpips_reason = available_lpips(args.device)
    started = time.perf_counter()
    bn_mode = args.bn_mode or getattr(profile, "client_bn_mode", "train")
    record = compare_attacks(model, batch.images, batch.labels, attacks, configs, base, bn_mode,
                             lpips, lpips_reason, biggan=args.biggan, progress=not args.no_progress)
    record.update(profile=profile.name, model=model.name, weights=model.weights_source,
                  data={"source": batch.source, "ids": batch.ids, "labels": batch.labels.tolist()},
                  lpips_unavailable=lpips_reason, total_wall_time_s=time.perf_counter() - started,
                  provenance=provenance(args.device))
    out = Path(args.out)
    write_json_atomic(out / "table4.json", record)
    (out / "table4.csv").write_text(table4_csv(record["rows"]))
    return record
