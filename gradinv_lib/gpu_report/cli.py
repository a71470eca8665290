"""``gradinv gpu-report``: the GPU evidence of the companion in one call that plans itself into the
minutes it is given (see :mod:`gradinv_lib.gpu_report`). ``cli/app.py`` wires it with
:func:`add_cli_arguments` and :func:`run_cli`."""

from __future__ import annotations


def add_cli_arguments(p) -> None:
    """``gradinv gpu-report`` options."""
    p.add_argument("--minutes", type=float, required=True,
                   help="this call's limit, counted from --since (default: the process's start)")
    p.add_argument("--plan-minutes", type=float, help="the time a new plan shares out among the stages "
                   "(default: --minutes); more than --minutes plans work for several calls")
    p.add_argument("--since", type=float, metavar="EPOCH_S", help="when the limit started, in epoch "
                   "seconds (e.g. $(date +%%s) before installing wheels), if before this process")
    p.add_argument("--margin-s", type=float, help="seconds kept free before the limit "
                   "(default: max(30, 8%% of it)); the stages stop at limit - margin, an alarm at limit - margin/3")
    p.add_argument("--out", default="figures/gpu", help="output folder (plan, report, one folder per stage)")
    p.add_argument("--export", metavar="DIR", help="also pack the output into DIR after every stage, "
                   "in at most 8 files (gpu_results.tar.gz, gpu_state.tar.partNN): e.g. $OUT on the device")
    p.add_argument("--stage", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                   help="change a stage (cnn, lite0_b1, lite0_b8, bench): e.g. cnn:model=lenet_bn,weights=random,"
                        "batch=2; keys: priority, model, weights, dataset, resolution, batch, seeds, "
                        "max_iterations, min_iterations, share; NAME:off drops it")
    p.add_argument("--device", help="cpu | cuda (default: cuda when available)")
    p.add_argument("--amp", action="store_true", help="bf16 autocast of the forward passes (CUDA)")
    p.add_argument("--seed", type=int, default=0, help="batch and attack seed")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run_cli(args) -> int:
    """Run one call; prints the report (exit 0 when every planned stage is done, 3 when some are
    left for another call)."""
    from gradinv_lib.cli.setup import print_json, resolve_device

    from .budget import Clock
    from .report import format_report
    from .run import run_report
    from .stages import parse_stage_overrides
    stages = parse_stage_overrides(args.stage)
    clock = Clock(args.minutes, args.margin_s, args.since)
    report = run_report(stages, args.out, clock, resolve_device(args.device), args.plan_minutes,
                        args.amp, args.seed, args.export)
    print_json(report) if args.json else print(format_report(report))
    return 0 if report["complete"] else 3


COMMAND = (add_cli_arguments, run_cli, "GPU evidence in one call planned into --minutes: trained CNN, "
           "224 px Lite0, the loop's profile (resumable)")
