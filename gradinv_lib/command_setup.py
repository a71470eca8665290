"""What the gradinv commands share: the model and data options, (profile, model, dataset) built
from them, the attack configuration with the command line's overrides, and JSON output.

The CLI and the commands in modules of their own (``compare``) import it; it imports none of them.
"""

from __future__ import annotations

import json

from .errors import InputError
from .profiles import PROFILES


def print_json(data) -> None:
    from .io import json_default
    print(json.dumps(data, indent=2, default=json_default))


def resolve_device(device: str | None) -> str:
    """``device`` or the default one (CUDA when available); InputError for CUDA without CUDA."""
    import torch
    from .profiles import default_device
    device = device or default_device()
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device: expected a device this machine has, found {device!r} but CUDA "
                         "is not available; use --device cpu")
    return device


def model_data_args(p) -> None:
    """The options of every command that builds a model and samples data."""
    p.add_argument("--profile", default="quick", choices=list(PROFILES))
    p.add_argument("--model", help="model name (default: the profile's)")
    p.add_argument("--weights", help="'default', 'random' or a weight file (default: the profile's)")
    p.add_argument("--dataset", help="pool | embedded | cifar10 | imagenet (default: the profile's)")
    p.add_argument("--imagenet", help="ImageNet folder for --dataset imagenet (or $GRADINV_IMAGENET)")
    p.add_argument("--resolution", type=int, help="image side in pixels (default: the profile's)")
    p.add_argument("--batch-size", type=int, help="images per batch (default: 1; for an --update "
                   "file other than gradinv's: the client's batch size, required)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu | cuda (default: cuda when available)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def setup(args, with_data: bool = True, native_resolution: bool = False):
    """(profile, model, dataset) from the profile with the command line's overrides; the dataset
    is None without ``with_data`` (attacking a saved update needs none), and the batch size
    defaults to 1 with it. Images come at the profile's resolution, or at the model's own with
    ``native_resolution``."""
    from .profiles import build_for_dataset, get_profile, load_dataset
    profile = get_profile(args.profile)
    args.device = resolve_device(args.device)
    dataset_name = args.dataset or profile.dataset
    model = build_for_dataset(args.model or profile.model, args.weights or profile.weights,
                              dataset_name, device=args.device)
    resolution = args.resolution or (model.input_size if native_resolution else profile.resolution)
    dataset = load_dataset(dataset_name, resolution, args.imagenet) if with_data else None
    if with_data and args.batch_size is None:
        args.batch_size = 1
    return profile, model, dataset


def invert_config(profile, args):
    """The profile's configuration with the command line's overrides applied; iterations default
    to the profile's full-method budget, as the quickstart's."""
    iterations = profile.full_method_iterations if args.iterations is None else args.iterations
    overrides = {"iterations": iterations, "seeds": args.seeds, "bn_target": args.bn,
                 "group": args.group, "registration": args.registration, "lr": args.lr,
                 "seed": args.seed, "checkpoint_every": args.checkpoint_every,
                 "weighting": args.weighting}
    config = profile.config.replace(**{k: v for k, v in overrides.items() if v is not None})
    if args.seeds and args.seeds > 1 and args.group is None and config.group == "none":
        config = config.replace(group="registered")
    return config
