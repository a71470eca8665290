"""``gradinv invert``: recover a batch's images from its gradient (the whole method, eq. 1), on a
simulated client or a saved client update, on one process or spread over a torchrun job's ranks."""

from __future__ import annotations

import os

from gradinv_lib.errors import InputError

from .setup import invert_config, model_data_args, print_json, setup


def join_seed_group(args):
    """``--distributed``: join the torchrun job's seed group (sec. 3.4) and adapt the options per
    rank (this rank's device, a progress bar and the update file on rank 0 only, one checkpoint
    folder per rank)."""
    from gradinv_lib.runtime.distributed import init_from_env
    group, args.device = init_from_env(args.device)
    if not group.is_main:
        args.no_progress, args.save_update = True, None
    if args.checkpoint:
        args.checkpoint = os.path.join(args.checkpoint, f"rank{group.rank}-of-{group.world_size}")
    return group


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


def add_arguments(p):
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
    from gradinv_lib.data import sample_batch
    from gradinv_lib.experiments.run import load_originals
    from gradinv_lib.federated.client import simulate_client
    from gradinv_lib.federated.update_formats import read_update
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


def run(args) -> int:
    from gradinv_lib.attack.pipeline import gradinversion
    from gradinv_lib.experiments.run import available_lpips, evaluate_attack, label_summary, save_attack
    from gradinv_lib.federated.client import save_update
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
        seed_group = join_seed_group(args)
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
