"""The ``gradinv`` command line: doctor, label recovery, inversion (and, as they land, compare,
reproduce, bench). User errors print one line and exit 2; an interrupted run exits 130."""

from __future__ import annotations

import argparse
import sys

from gradinv_lib.errors import GradInvError, InputError
from gradinv_lib.profiles import PROFILES

from . import invert
from .setup import model_data_args, print_json, resolve_device, setup


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
    from gradinv_lib.attack.labels import evaluate_label_recovery
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

    from gradinv_lib.runtime.sweeps import executor_settings

    from .reproduce import reproduce
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
    from gradinv_lib.experiments.compare import add_cli_arguments
    add_cli_arguments(p, model_data_args)


def _compare(args) -> int:
    from gradinv_lib.experiments.compare import format_table4, run_cli, table4_csv
    record = run_cli(args)
    if args.json:
        print_json(record)
    else:
        print(table4_csv(record["rows"]) if args.csv else format_table4(record["rows"]))
    return 0


# ----------------------------------------------------------------------------- defend
def _defend_args(p):
    from gradinv_lib.defences.cli import add_cli_arguments
    add_cli_arguments(p)


def _defend(args) -> int:
    from gradinv_lib.defences.cli import run_cli
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
    from gradinv_lib.bench.amp import amp_agreement, require_cuda
    from gradinv_lib.bench.report import format_bench, speed_targets
    from gradinv_lib.bench.speed import run_bench
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
    "invert": (invert.add_arguments, invert.run, "recover a batch's images from its gradient"),
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
    from gradinv_lib.runtime.checkpoint import InversionInterrupted
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

