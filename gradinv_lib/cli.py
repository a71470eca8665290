"""The ``gradinv`` command line: doctor, label recovery, inversion (and, as they land, compare,
reproduce, bench). User errors print one line and exit 2; an interrupted run exits 130."""

from __future__ import annotations

import argparse
import sys

from .command_setup import invert_config, model_data_args, print_json, resolve_device, setup
from .errors import GradInvError, InputError
from .profiles import PROFILES


# ----------------------------------------------------------------------------- doctor
def _doctor_args(p):
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("--no-checks", action="store_true", help="skip the live Lite0 accuracy check")


def _doctor(args) -> int:
    from .doctor import doctor_report, format_report
    report = doctor_report(checks=not args.no_checks)
    print_json(report) if args.json else print(format_report(report))
    return 0


# ----------------------------------------------------------------------------- recover-labels
def _labels_args(p):
    model_data_args(p)
    p.add_argument("--trials", type=int, help="random batches (default: the profile's)")
    p.add_argument("--rule", default="min", choices=["min", "sum"], help="eq. 8 min rule or sum baseline")


def _recover_labels(args) -> int:
    from .labels import evaluate_label_recovery
    profile, model, dataset = setup(args, native_resolution=True)
    result = evaluate_label_recovery(model, dataset, batch_size=args.batch_size,
                                     trials=profile.label_trials if args.trials is None else args.trials, rule=args.rule,
                                     seed=args.seed)
    result.update(model=model.name, weights=model.weights_source, dataset=dataset.source,
                  resolution=dataset.images.shape[-1])
    if args.json:
        print_json(result)
    else:
        print(f"{args.rule} rule, batch {args.batch_size}, {result['trials']} trials: "
              f"label accuracy {100 * result['accuracy']:.2f}%, whole batches right "
              f"{100 * result['exact_batches']:.2f}%")
    return 0


# ----------------------------------------------------------------------------- invert
def _update_args(g):
    g.add_argument("--update", metavar="FILE", help="attack a saved client update instead of "
                   "simulating one; its images are --resolution px (default: the model's input "
                   "size) unless it records them")
    g.add_argument("--format", default="auto", help="--update's format: gradinv (gradinv's tagged "
                   "file), gradients (name -> gradient, .pt/.safetensors/.npz), weights (the client's "
                   "local weights: a state dict, or a .npz list in state_dict order as Flower sends), "
                   "delta (local - global weights); auto (default): detected")
    g.add_argument("--global-weights", metavar="FILE", help="with --update: the weights the client "
                   "started from (state dict or .npz list), loaded into the model (default: the "
                   "model's, --weights)")
    g.add_argument("--client-lr", metavar="LR", type=float, help="the client's local SGD learning "
                   "rate: needed for weights, delta and multi-step updates (--lr is the attack's own "
                   "step size)")
    g.add_argument("--local-steps", metavar="K", type=int, help="the client's SGD steps before "
                   "sending (default: 1, FedSGD); K > 1 is attacked through the unrolled steps")
    g.add_argument("--local-batch-size", metavar="B", type=int,
                   help="images per local step (default: the whole batch)")
    g.add_argument("--no-update-checks", action="store_true", help="skip the scale and sign checks "
                   "of an --update other than gradinv's (e.g. a client with momentum)")
    g.add_argument("--originals", metavar="FILE", help="with --update: a .pt file of the private "
                   "batch (B, 3, H, W) in [0, 1], or a dict with 'images' (and 'labels'), to score "
                   "the reconstruction")
    g.add_argument("--save-update", metavar="FILE",
                   help="also save the client update to this file (gradinv format)")


def _invert_args(p):
    model_data_args(p)
    p.add_argument("--iterations", type=int, help="default: the profile's full-method budget")
    p.add_argument("--seeds", type=int, help="G, seeds optimised jointly (group consistency)")
    p.add_argument("--bn", choices=["exact", "running", "none"], help="BN prior target")
    p.add_argument("--group", choices=["none", "lazy", "registered"])
    p.add_argument("--registration", choices=["translation", "similarity", "affine"])
    p.add_argument("--lr", type=float, help="the attack's Adam learning rate (default: the profile's)")
    p.add_argument("--bn-mode", choices=["eval", "train"],
                   help="BN mode of the client's forward pass (default: the profile's for a simulated "
                        "client, train for an --update other than gradinv's, which records its own; "
                        "train: batch statistics, as a training client)")
    p.add_argument("--weighting", choices=["balanced", "paper"],
                   help="term weighting: scale-free terms (balanced) or the paper's raw constants")
    _update_args(p.add_argument_group("client update (--update FILE, or the simulated client)"))
    p.add_argument("--checkpoint", help="directory for atomic checkpoints (every N iterations, on SIGINT/SIGTERM)")
    p.add_argument("--checkpoint-every", type=int, help="iterations between checkpoints (default: the profile's)")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    p.add_argument("--out", default="runs/invert", help="output directory (grid.png, result.json)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--distributed", action="store_true", help="spread the seeds over the processes "
                   "torchrun started (gloo on CPU, NCCL on CUDA); rank 0 writes the results")


def _client_update(args, profile, model, dataset, config):
    """(update, originals, true labels, data record): read from --update (originals only where
    the user has them) or simulated on a batch sampled from --dataset."""
    from .client import simulate_client
    from .data import sample_batch
    from .experiments import load_originals
    from .update_formats import read_update
    if not args.update:
        batch = sample_batch(dataset, args.batch_size, seed=args.seed)
        steps = 1 if args.local_steps is None else args.local_steps
        update = simulate_client(model, batch.images.to(args.device), batch.labels.to(args.device),
                                 bn_mode=args.bn_mode or profile.client_bn_mode, lr=args.client_lr,
                                 local_steps=steps, local_batch_size=args.local_batch_size)
        data = {"source": batch.source, "ids": batch.ids, "pseudo_labels": batch.pseudo.tolist()}
        return update, batch.images, batch.labels, data
    side = args.resolution
    update = read_update(args.update, model, args.format, global_weights=args.global_weights,
                         lr=args.client_lr, local_steps=args.local_steps,
                         local_batch_size=args.local_batch_size, batch_size=args.batch_size,
                         image_shape=(3, side, side) if side else None, bn_mode=args.bn_mode,
                         checks=not args.no_update_checks)
    if config.bn_target == "exact" and model.bn_layers() and not update.bn_stats:
        default = ", the profile's default" if args.bn is None else ""
        raise InputError(f"--update {args.update}: BN_exact (--bn exact{default}) needs the client "
                         "batch's BN statistics, and this update carries none; use bn_target='running' "
                         "(--bn running, BN_approx) or --bn none (only gradinv update files carry them)")
    originals, true_labels = (load_originals(args.originals, update, model.num_classes)
                              if args.originals else (None, None))
    true_labels = true_labels if true_labels is not None else update.labels
    return update, originals, true_labels, {"update": str(args.update), "originals": args.originals}


def _invert(args) -> int:
    from .attack import gradinversion
    from .client import save_update
    from .experiments import available_lpips, evaluate_attack, label_summary, save_attack
    if args.resume and not args.checkpoint:
        raise InputError("--resume needs --checkpoint DIR (the directory of the interrupted run)")
    if args.originals and not args.update:
        raise InputError("--originals scores an attack on a saved --update; without --update the "
                         "batch is sampled from --dataset and its originals are known")
    given = [o for o, v in (("--global-weights", args.global_weights),
                            ("--format", args.format != "auto"),
                            ("--no-update-checks", args.no_update_checks)) if v]
    if given and not args.update:
        raise InputError(f"{given[0]} reads a saved --update FILE; without --update the client is "
                         "simulated on a batch sampled from --dataset")
    seed_group = None
    if args.distributed:
        from .distributed import setup_invert
        seed_group = setup_invert(args)
    profile, model, dataset = setup(args, with_data=not args.update)
    config = invert_config(profile, args)
    update, originals, true_labels, data = _client_update(args, profile, model, dataset, config)
    if args.save_update:
        save_update(update, args.save_update)
    result = gradinversion(model, update.without_labels(), config, device=args.device,
                           checkpoint_dir=args.checkpoint, resume=args.resume,
                           progress=not args.no_progress, seed_group=seed_group)
    if seed_group is not None and not seed_group.is_main:
        return 0  # every rank holds the same result; rank 0 scores and writes it
    lpips, lpips_reason = available_lpips(args.device) if originals is not None else (None, None)
    evaluation = (evaluate_attack(model, result, originals, true_labels, lpips=lpips)
                  if originals is not None else {"labels": label_summary(result.labels, true_labels, result.extra.get("labels"))})
    record = save_attack(args.out, result, evaluation, originals,
                         extra={"model": model.name, "weights": model.weights_source, "data": data,
                                "lpips_unavailable": lpips_reason})
    if args.json:
        print_json({k: v for k, v in record.items() if k != "seed_metrics"})
    elif "metrics" in record:
        m, n = record["metrics"], record["noise_metrics"]
        print(f"PSNR {m['psnr']:.2f} dB (noise {n['psnr']:.2f}), registered {m['psnr_registered']:.2f}, "
              f"FFT-2D {m['fft2d']:.3f} (noise {n['fft2d']:.3f}), labels "
              f"{record['labels'].get('accuracy', float('nan')):.0%} -> {record['files']['grid']}")
    else:
        print(f"recovered labels {record['labels']['recovered']} (no originals given, no image "
              f"metrics) -> {record['files']['grid']}")
    return 0


# ----------------------------------------------------------------------------- reproduce
def _reproduce_args(p):
    p.add_argument("--profile", default="quick", choices=list(PROFILES))
    p.add_argument("--only", action="append", metavar="NAME",
                   help="a notebook name or prefix such as 01 (repeatable; default: all)")
    p.add_argument("--force", action="store_true", help="rerun notebooks whose results are current")
    p.add_argument("--kernel", help="Jupyter kernel name (default: the notebooks' own)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--executor", choices=["local", "processes", "submitit-local", "slurm"],
                   help="where the sweeps' attack jobs run (default: processes, one per core, on a "
                        "multi-core CPU without CUDA; else local; see README 'Scaling out')")
    p.add_argument("--executor-options", metavar="JSON",
                   help='submitit parameters, e.g. \'{"slurm_partition": "gpu", "gpus_per_node": 1}\'')


def _reproduce(args) -> int:
    import os
    from .reproduce import reproduce
    from .sweeps import executor_settings
    if args.executor or args.executor_options:  # the notebooks' kernels inherit the environment
        os.environ["GRADINV_EXECUTOR"] = args.executor or os.environ.get("GRADINV_EXECUTOR", "local")
        os.environ["GRADINV_EXECUTOR_OPTIONS"] = args.executor_options or ""
        executor_settings(None, {})  # a bad value is a one-line error now, not in every notebook
    outcomes = reproduce(args.profile, args.only, args.force, args.kernel, progress=not args.no_progress)
    failed = [o for o in outcomes if o.status == "failed"]
    for o in failed:
        print(f"gradinv reproduce: {o.name} failed: {o.error}", file=sys.stderr)
    return 1 if failed else 0


# ----------------------------------------------------------------------------- compare
def _compare_args(p):
    from .compare import add_cli_arguments
    add_cli_arguments(p, model_data_args)


def _compare(args) -> int:
    from .compare import format_table4, run_cli, table4_csv
    record = run_cli(args)
    if args.json:
        print_json(record)
    else:
        print(table4_csv(record["rows"]) if args.csv else format_table4(record["rows"]))
    return 0


# ----------------------------------------------------------------------------- defend
def _defend_args(p):
    from .defences.cli import add_cli_arguments
    add_cli_arguments(p)


def _defend(args) -> int:
    from .defences.cli import run_cli
    return run_cli(args)


# ----------------------------------------------------------------------------- bench
def _bench_args(p):
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("--device", help="cpu | cuda (default: cuda when available; AMP on with cuda)")
    p.add_argument("--quick", action="store_true", help="skip the 224 px cases, fewer repeats")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast of the forward passes (default: on with cuda, off on cpu)")
    p.add_argument("--amp-check", type=int, default=0, metavar="N", help="cuda: also attack "
                   "ResNet-50 at 224 px for N iterations with AMP and without (PSNR difference)")


def _bench(args) -> int:
    from .bench import run_bench
    from .bench_report import format_bench, speed_targets
    from .bench_amp import amp_agreement, require_cuda
    device = resolve_device(args.device)
    if args.amp_check:
        require_cuda(device)  # before the bench, not minutes into it
    report = run_bench(device=device, quick=args.quick, amp=args.amp)
    if args.amp_check:
        report["amp_vs_fp32"] = amp_agreement(iterations=args.amp_check, device=device)
    report["targets"] = speed_targets(report)
    print_json(report) if args.json else print(format_bench(report))
    return 0


COMMANDS = {
    "doctor": (_doctor_args, _doctor, "what is installed and available, and a live check"),
    "recover-labels": (_labels_args, _recover_labels, "batch label recovery accuracy (Table 1)"),
    "invert": (_invert_args, _invert, "recover a batch's images from its gradient"),
    "bench": (_bench_args, _bench, "speed of the inversion loop against its lower bounds"),
    "compare": (_compare_args, _compare, "Table 4: GradInversion beside prior attacks on one update"),
    "defend": (_defend_args, _defend, "attack a client that runs a defence: success, utility, epsilon"),
    "reproduce": (_reproduce_args, _reproduce, "rerun the companion notebooks: every table and figure"),
    "course": __import__("gradinv_lib.course.cli", fromlist=["COMMAND"]).COMMAND,  # gradinv_lib/course/cli.py
    "gpu-report": __import__("gradinv_lib.gpu_report.cli", fromlist=["COMMAND"]).COMMAND,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradinv", description="GradInversion (Yin et al., CVPR 2021), reproduced.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_args, run, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.set_defaults(run=run)
    return parser


def main(argv=None) -> int:
    from .checkpoint import InversionInterrupted
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except GradInvError as exc:
        message = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"gradinv {args.command}: error: {message}", file=sys.stderr)  # always one line
        return 2
    except InversionInterrupted as exc:
        print(f"gradinv {args.command}: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:   # e.g. Ctrl-C on reproduce: its kernels and sweeps are already stopped
        print(f"gradinv {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
