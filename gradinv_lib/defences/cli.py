"""``gradinv defend``: one client batch under a defence, attacked with GradInversion, scored, with
the utility the defence left (cosine to the clean update) and DP's epsilon.

A command of its own rather than ``gradinv invert --defence``: a defence may need more images than
the client's batch (a larger batch, other clients for an aggregation), reports utility and
epsilon that inverting a saved update cannot, and leaves ``invert`` unchanged. ``cli/app.py`` wires
it with :func:`add_cli_arguments` and :func:`run_cli`.
"""

from __future__ import annotations

import math


def add_cli_arguments(p) -> None:
    """``gradinv defend`` options, after the model and data options every command shares."""
    from gradinv_lib.cli.setup import model_data_args
    model_data_args(p)
    p.add_argument("--defence", action="append", default=[], metavar="NAME[:KEY=VALUE,...]",
                   help="a defence, e.g. prune:keep=0.1, dp:clip=20,noise=0.001, mixup:weight=0.5, "
                        "larger_batch:factor=4, secure_aggregation:clients=4, fedavg:local_steps=4,lr=0.1,"
                        "local_batch_size=1 (repeatable, or joined by '+': they compose; none: no defence)")
    p.add_argument("--iterations", type=int, help="attack iterations (default: the profile's)")
    p.add_argument("--seeds", type=int, help="attack seeds G (default: the profile's)")
    p.add_argument("--bn-mode", choices=["eval", "train"], help="BN in the client's forward (default: the profile's)")
    p.add_argument("--out", default="runs/defend", help="output folder (grid.png, result.json, tensors.pt)")
    p.add_argument("--no-progress", action="store_true")


def run_cli(args) -> int:
    """Run ``gradinv defend`` from parsed ``args``: draw batch_size images (plus those the defence
    needs besides) with --seed, run the defence, attack what the server receives, save and print."""
    from gradinv_lib.attack.pipeline import gradinversion
    from gradinv_lib.cli.setup import print_json, setup
    from gradinv_lib.data import sample_batch
    from gradinv_lib.experiments.run import available_lpips, evaluate_attack, save_attack

    from . import clean_update, compose, defended_update, epsilon, images_needed, parse_defence, update_cosine

    profile, model, dataset = setup(args)
    defence = compose(*(parse_defence(text) for text in args.defence))
    bn_mode = args.bn_mode or profile.client_bn_mode
    size = args.batch_size
    batch = sample_batch(dataset, size + images_needed(defence, size), seed=args.seed)
    x, y = batch.images.to(args.device), batch.labels.to(args.device)
    others = (x[size:], y[size:]) if len(x) > size else None
    update = defended_update(model, x[:size], y[:size], defence, bn_mode, others, args.seed)
    utility = update_cosine(update, clean_update(model, x[:size], y[:size], defence, bn_mode, others))
    overrides = {"iterations": args.iterations, "seeds": args.seeds}
    config = profile.config.replace(seed=args.seed, **{k: v for k, v in overrides.items() if v is not None})
    if config.seeds == 1:
        config = config.replace(group="none")
    if not update.bn_stats and config.bn_target == "exact":    # what the update carries decides
        config = config.replace(bn_target="running")
    result = gradinversion(model, update.without_labels(), config, device=args.device, progress=not args.no_progress)
    lpips, reason = available_lpips(args.device)
    evaluation = evaluate_attack(model, result, batch.images, batch.labels, lpips=lpips)
    eps = epsilon(defence)
    record = save_attack(args.out, result, evaluation, batch.images, extra={
        "defence": defence.to_dict(), "utility_cosine": utility,
        "epsilon": None if eps is None or math.isinf(eps) else eps,    # None under DP: no noise, infinite
        "model": model.name,
        "weights": model.weights_source, "data": {"source": batch.source, "ids": batch.ids, "own": size},
        "lpips_unavailable": reason})
    if args.json:
        print_json({k: v for k, v in record.items() if k != "seed_metrics"})
        return 0
    m = record["metrics"]
    print(f"{defence.label()}: PSNR {m['psnr']:.2f} dB (registered {m['psnr_registered']:.2f}), labels "
          f"{record['labels'].get('accuracy', float('nan')):.0%}, utility cosine {utility:.4f}"
          + ("" if eps is None else f", epsilon {eps:.4g}") + f" -> {record['files']['grid']}")
    return 0
