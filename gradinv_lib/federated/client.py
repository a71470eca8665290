"""Client simulation (paper sec. 3, threat model): the shared update of one private batch.

A FedSGD client computes the batch-averaged cross-entropy gradient of every trainable parameter
on its batch (x*, y*) and, in the BN_exact setting, the per-layer BN input statistics of that
batch. A FedAvg client (beyond the paper) takes ``local_steps`` SGD steps over mini-batches first
(:mod:`gradinv_lib.federated.fedavg`). An update is saved as one ``torch.save`` file of plain tensors and dicts (loadable with
``weights_only=True``), tagged with a format name and version.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from gradinv_lib.attack.bn_stats import BN_MODES
from gradinv_lib.attack.bn_stats import bn_mode as _bn_mode
from gradinv_lib.attack.bn_stats import record_bn_inputs
from gradinv_lib.errors import InputError, MissingAssetError
from gradinv_lib.models.probes import check_images_fit

from .fedavg import check_local_training, is_fedsgd, local_training

FORMAT_TAG = "gradinv-client-update"
FORMAT_VERSION = 1
_PIXEL_TOL = 1e-6


@dataclass
class ClientUpdate:
    """What a client shares (plus its true labels, kept for evaluation only).

    gradients: parameter name (as in ``model.named_parameters()``) -> batch-mean CE gradient
        (FedSGD, ``local_steps == 1``); for a FedAvg client, ``(w_global - w_local) / lr``, the
        sum of its local steps' gradients (equal to the gradient when K = 1).
    bn_stats: BN module name -> (input mean, BIASED input variance) of the client's batch, shape (C,).
    batch_size, image_shape (C, H, W), model_name: metadata of the batch and network.
    bn_mode: "eval" (BN used running stats in the client's forward) or "train" (batch stats).
    labels: the true labels (B,); the attack never reads them; may be None.
    local_steps, lr, local_batch_size: the client's local training (K SGD steps with learning
        rate lr over consecutive mini-batches of ``local_batch_size`` images, None: the whole
        batch); K = 1 over the whole batch is FedSGD, where lr may be None.
    """

    gradients: dict[str, Tensor]
    bn_stats: dict[str, tuple[Tensor, Tensor]]
    batch_size: int
    image_shape: tuple[int, int, int]
    model_name: str
    bn_mode: str = "eval"
    labels: Tensor | None = field(default=None)
    local_steps: int = 1
    lr: float | None = None
    local_batch_size: int | None = None

    @property
    def is_fedsgd(self) -> bool:
        """One step over the whole batch: ``gradients`` is the batch-mean gradient itself."""
        return is_fedsgd(self.batch_size, self.local_steps, self.local_batch_size)

    def without_labels(self) -> "ClientUpdate":
        """A copy without the true labels (what an attacker actually receives)."""
        return dataclasses.replace(self, labels=None)


# ----------------------------------------------------------------------------- validation
def validate_images01(images01: Tensor, name: str = "images01") -> None:
    """Raise InputError unless ``images01`` is a finite float (B, 3, H, W) tensor in [0, 1]."""
    if not isinstance(images01, Tensor):
        raise InputError(f"{name}: expected a torch.Tensor, found {type(images01).__name__}")
    if images01.dim() != 4 or images01.shape[1] != 3:
        raise InputError(f"{name}: expected shape (B, 3, H, W), found {tuple(images01.shape)}")
    if not images01.is_floating_point():
        raise InputError(f"{name}: expected a floating dtype, found {images01.dtype}")
    if images01.shape[0] == 0:
        raise InputError(f"{name}: expected at least one image, found an empty batch")
    if not torch.isfinite(images01).all():
        raise InputError(f"{name}: expected finite values, found NaN or inf")
    lo, hi = images01.min().item(), images01.max().item()
    if lo < -_PIXEL_TOL or hi > 1 + _PIXEL_TOL:
        raise InputError(f"{name}: expected pixel values in [0, 1], found range [{lo:.4g}, {hi:.4g}]")


def validate_labels(labels: Tensor, batch_size: int, num_classes: int, name: str = "labels") -> None:
    """Raise InputError unless ``labels`` is a 1-D integer tensor of length B in [0, num_classes)."""
    if not isinstance(labels, Tensor):
        raise InputError(f"{name}: expected a torch.Tensor, found {type(labels).__name__}")
    if labels.dim() != 1 or labels.shape[0] != batch_size:
        raise InputError(f"{name}: expected shape ({batch_size},), found {tuple(labels.shape)}")
    if labels.dtype != torch.long:
        raise InputError(f"{name}: expected dtype torch.int64, found {labels.dtype}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise InputError(f"{name}: expected classes in [0, {num_classes}), found range "
                         f"[{labels.min().item()}, {labels.max().item()}]")


# ----------------------------------------------------------------------------- simulation
def trainable_parameters(model) -> dict[str, Tensor]:
    """Every parameter with ``requires_grad``, in ``named_parameters()`` order."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def simulate_client(model, images01: Tensor, labels: Tensor, bn_mode: str = "train",
                    local_steps: int = 1, lr: float | None = None,
                    local_batch_size: int | None = None) -> ClientUpdate:
    """A client's update on (images01, labels): FedSGD by default, FedAvg with ``local_steps``.

    FedSGD (K = 1, whole batch): the gradients of the mean cross-entropy. FedAvg: K SGD steps of
    learning rate ``lr`` over consecutive mini-batches of ``local_batch_size`` images (cycling
    through the batch in order; None: the whole batch each step), sharing
    ``(w_global - w_local) / lr`` (:func:`gradinv_lib.federated.fedavg.local_training`). Images are
    pixel-space [0, 1], normalised with ``model.normalize``. ``bn_mode`` as in
    :func:`gradinv_lib.attack.bn_stats.bn_mode`: "train" (default) as a client that trains, BN
    normalising with the batch's own statistics (what BN_exact shares); "eval" with running
    ones; the model's modes and running statistics are unchanged afterwards. The recorded BN
    statistics are always those of the whole batch at the global weights (BN_exact targets).

    Shape:
        images01: (B, 3, H, W) float in [0, 1]; labels: (B,) int64.
    """
    validate_images01(images01)
    validate_labels(labels, images01.shape[0], model.num_classes)
    check_images_fit(model, images01.shape[1:])  # one line, not a shape error deep in the network
    batch = int(images01.shape[0])
    check_local_training(batch, local_steps, lr, local_batch_size)
    params = trainable_parameters(model)
    ref = next(iter(params.values()))
    x = model.normalize(images01.to(device=ref.device, dtype=ref.dtype))
    y = labels.to(ref.device)
    with _bn_mode(model, bn_mode):
        if is_fedsgd(batch, local_steps, local_batch_size):
            with record_bn_inputs(model) as stats:
                grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(params.values()))
        else:  # the batch's BN statistics at the global weights, then the local steps
            with torch.no_grad(), record_bn_inputs(model) as stats:
                model(x)
            grads = local_training(model, x, y, local_steps, lr, local_batch_size)
    return ClientUpdate(
        gradients={n: g.detach() for n, g in zip(params, grads)},
        bn_stats={n: (m.detach(), v.detach()) for n, (m, v) in stats.items()},
        batch_size=batch,
        image_shape=tuple(int(s) for s in images01.shape[1:]),
        model_name=str(model.name),
        bn_mode=bn_mode,
        labels=labels.detach().cpu().clone(),
        local_steps=int(local_steps),
        lr=None if lr is None else float(lr),
        local_batch_size=None if local_batch_size is None else int(local_batch_size),
    )


# ----------------------------------------------------------------------------- persistence
def _to_payload(update: ClientUpdate) -> dict:
    cpu = lambda t: t.detach().cpu().contiguous().clone()  # noqa: E731
    return {
        "format": FORMAT_TAG,
        "version": FORMAT_VERSION,
        "gradients": {n: cpu(g) for n, g in update.gradients.items()},
        "bn_stats": {n: [cpu(m), cpu(v)] for n, (m, v) in update.bn_stats.items()},
        "batch_size": int(update.batch_size),
        "image_shape": [int(s) for s in update.image_shape],
        "model_name": str(update.model_name),
        "bn_mode": str(update.bn_mode),
        "labels": None if update.labels is None else cpu(update.labels),
        "local_steps": int(update.local_steps),
        "lr": update.lr,
        "local_batch_size": update.local_batch_size,
    }


def save_update(update: ClientUpdate, path: str | os.PathLike) -> None:
    """Write ``update`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-update-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(_to_payload(update), f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _from_payload(payload, path: str) -> ClientUpdate:
    bad = lambda why: InputError(f"not a gradinv client update: {path}: {why}")  # noqa: E731
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_TAG:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise bad(f"expected format tag {FORMAT_TAG!r}, found {found!r}")
    if payload.get("version") != FORMAT_VERSION:
        raise bad(f"expected version {FORMAT_VERSION}, found {payload.get('version')!r}")
    try:
        return ClientUpdate(
            gradients=dict(payload["gradients"]),
            bn_stats={n: (mv[0], mv[1]) for n, mv in payload["bn_stats"].items()},
            batch_size=int(payload["batch_size"]),
            image_shape=tuple(int(s) for s in payload["image_shape"]),
            model_name=str(payload["model_name"]),
            bn_mode=str(payload["bn_mode"]),
            labels=payload["labels"],
            local_steps=int(payload.get("local_steps", 1)),
            lr=None if payload.get("lr") is None else float(payload["lr"]),
            local_batch_size=(None if payload.get("local_batch_size") is None
                              else int(payload["local_batch_size"])),
        )
    except (KeyError, TypeError, IndexError, ValueError) as e:
        raise bad(f"missing or malformed field ({type(e).__name__}: {e})") from e


def load_update(path: str | os.PathLike) -> ClientUpdate:
    """Read an update written by :func:`save_update` (``weights_only=True``, tensors on CPU)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MissingAssetError(f"client update file not found: expected a file at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle of foreign objects, random bytes...
        raise InputError(f"not a gradinv client update: {path}: cannot be read by torch.load "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    return _from_payload(payload, path)


# ----------------------------------------------------------------------------- checks
def _check_tensor(name: str, t, expected_shape: tuple) -> None:
    if not isinstance(t, Tensor):
        raise InputError(f"{name}: expected a tensor, found {type(t).__name__}")
    if tuple(t.shape) != tuple(expected_shape):
        raise InputError(f"{name}: expected shape {tuple(expected_shape)}, found {tuple(t.shape)}")
    if not t.is_floating_point():
        raise InputError(f"{name}: expected a floating dtype, found {t.dtype}")
    if not torch.isfinite(t).all():
        raise InputError(f"{name}: expected finite values, found NaN or inf")


def check_update_fits(update: ClientUpdate, model) -> None:
    """Raise InputError unless ``update`` was made by a network shaped like ``model``.

    Every gradient names a trainable parameter of the same shape, every trainable parameter has
    a gradient, BN statistics (where the update has any: a gradients-only update has none) exist
    for exactly the model's BN layers with their channel counts, the image shape is (3, H, W),
    everything is floating and finite. Messages name the offending tensor.
    """
    made_by = f" (the update was made by {update.model_name!r})"
    shape = tuple(update.image_shape)
    if len(shape) != 3 or shape[0] != 3 or min(shape[1:]) < 8:
        raise InputError(f"image_shape: expected (3, H, W) RGB images of side >= 8, found {shape}")
    if isinstance(update.batch_size, bool) or update.batch_size < 1:
        raise InputError(f"batch_size: expected a positive integer, found {update.batch_size!r}")
    params = trainable_parameters(model)
    for name, g in update.gradients.items():
        if name not in params:
            raise InputError(f"gradient {name!r}: the model {model.name!r} has no trainable "
                             f"parameter of that name{made_by}")
        try:
            _check_tensor(f"gradient {name!r}", g, params[name].shape)
        except InputError as exc:
            raise InputError(f"{exc} for model {model.name!r}{made_by}") from None
    missing = [n for n in params if n not in update.gradients]
    if missing:
        raise InputError(f"update lacks gradients for {len(missing)} parameter(s) of "
                         f"{model.name!r}, first {missing[0]!r}{made_by}")
    layers = model.bn_layers()
    if update.bn_stats and set(update.bn_stats) != set(layers):
        extra = sorted(set(update.bn_stats) - set(layers))
        lack = sorted(set(layers) - set(update.bn_stats))
        raise InputError(f"bn_stats: expected the {len(layers)} BN layers of {model.name!r}, "
                         f"found unknown {extra[:3]} and missing {lack[:3]}")
    for name, (mean, var) in update.bn_stats.items():
        c = layers[name].num_features
        _check_tensor(f"bn_stats[{name!r}] mean", mean, (c,))
        _check_tensor(f"bn_stats[{name!r}] var", var, (c,))
    if update.bn_mode not in BN_MODES:
        raise InputError(f"bn_mode: expected one of {BN_MODES}, found {update.bn_mode!r}")
    check_local_training(update.batch_size, update.local_steps, update.lr, update.local_batch_size)


def target_gradients(update: ClientUpdate, model) -> list[Tensor]:
    """The update's gradients as a list in ``model.named_parameters()`` order (trainable ones),
    on the device/dtype of the parameters: the targets of L_grad (eq. 3)."""
    check_update_fits(update, model)
    return [update.gradients[n].to(device=p.device, dtype=p.dtype)
            for n, p in trainable_parameters(model).items()]
