"""What the gradinv commands share: the model and data options, (profile, model, dataset) built
from them, the attack configuration with the command line's overrides, and JSON output.

The CLI and the commands in modules of their own (``compare``) import it; it imports none of them.
"""

from __future__ import annotations

import json

from gradinv_lib.errors import GradInvError, InputError
from gradinv_lib.profiles import PROFILES


def print_json(data) -> None:
    from gradinv_lib.io import json_default
    print(json.dumps(data, indent=2, default=json_default))


def resolve_device(device: str | None) -> str:
    """``device`` or the default one (CUDA when available); InputError for CUDA without CUDA."""
    import torch

    from gradinv_lib.profiles import default_device
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
    own = p.add_argument_group("your own architecture (instead of --model; README 'Your own model')")
    own.add_argument("--model-module", metavar="SPEC", help="'package.module:factory' or "
                     "'file.py:factory' building the network (called with num_classes=N when it "
                     "takes it), e.g. torchvision.models:mobilenet_v2; --weights FILE loads a state dict")
    own.add_argument("--input-size", type=int, metavar="PX", help="side of the client's images "
                     "(required with --model-module unless a gradinv --update records it)")
    own.add_argument("--num-classes", type=int, help="classes of --model-module's network "
                     "(default: the dataset's)")
    own.add_argument("--mean", type=_triple, help="the client's input normalisation, 'R,G,B' "
                     "(default: ImageNet's)")
    own.add_argument("--std", type=_triple, help="'R,G,B' (default: ImageNet's)")


def _triple(text: str) -> tuple[float, float, float]:
    """'0.5,0.5,0.5' -> (0.5, 0.5, 0.5), for --mean and --std."""
    import argparse
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, found {text!r}")
    return values


def _input_size_from_update(path: str | None) -> int | None:
    """The image side a gradinv update file records (None for other files or no file)."""
    from gradinv_lib.federated.client import load_update
    if not path:
        return None
    try:
        return int(load_update(path).image_shape[-1])
    except GradInvError:
        return None


def build_command_model(args, profile, dataset_name: str):
    """The registry's model named by --model, or the user's --model-module network, wrapped."""
    from gradinv_lib.models import MODEL_NAMES
    from gradinv_lib.models.resnet import IMAGENET_MEAN, IMAGENET_STD
    from gradinv_lib.profiles import DATASET_CLASSES, build_for_dataset
    if args.model_module:
        from gradinv_lib.models.user import build_user_model
        if args.model:
            raise InputError("--model and --model-module: expected one of them, found both")
        size = args.input_size or args.resolution or _input_size_from_update(getattr(args, "update", None))
        return build_user_model(args.model_module, num_classes=args.num_classes or DATASET_CLASSES.get(
                                dataset_name, 1000), input_size=size, mean=args.mean or IMAGENET_MEAN,
                                std=args.std or IMAGENET_STD, weights=args.weights, seed=args.seed,
                                device=args.device)
    name = args.model or profile.model
    if name not in MODEL_NAMES:
        raise InputError(f"--model: expected one of {', '.join(MODEL_NAMES)}, found {name!r}; for "
                         "your own architecture use --model-module package.module:factory with "
                         "--input-size (e.g. torchvision.models:mobilenet_v2), or wrap_model in Python")
    return build_for_dataset(name, args.weights or profile.weights, dataset_name, device=args.device)


def setup(args, with_data: bool = True, native_resolution: bool = False):
    """(profile, model, dataset) from the profile with the command line's overrides; the dataset
    is None without ``with_data`` (attacking a saved update needs none), and the batch size
    defaults to 1 with it. Images come at the profile's resolution, or at the model's own with
    ``native_resolution``."""
    from gradinv_lib.profiles import get_profile, load_dataset
    profile = get_profile(args.profile)
    args.device = resolve_device(args.device)
    dataset_name = args.dataset or profile.dataset
    model = build_command_model(args, profile, dataset_name)
    own = native_resolution or args.model_module  # a user's network: the size it was given
    resolution = args.resolution or (model.input_size if own else profile.resolution)
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
