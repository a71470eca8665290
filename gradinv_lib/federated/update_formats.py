"""Client updates as federated-learning clients send them, read into a ClientUpdate (issue 12):
the one place that parses update files.

Formats (``read_update(format=...)``; None or "auto" detects them, see :func:`read_update`):

- ``gradinv``: gradinv's tagged file (:func:`client.save_update`), the only one with BN statistics.
- ``gradients``: name -> gradient: ``torch.save`` of a dict, ``.safetensors`` or a named ``.npz``.
- ``weights``: the client's local weights after training, a state dict or a list of arrays in
  ``state_dict()`` order (``.npz`` keys ``arr_0..arr_N`` as Flower's NumPy API sends them, or a
  ``torch.save``-d list): gradients = (w_global - w_local) / lr.
- ``delta``: local - global weights (NVFlare ``WEIGHT_DIFF``, TFF ``weights_delta``), a mapping or
  a list: gradients = -delta / lr.

Names may carry gradinv's ``body.`` prefix (``ImageClassifier``) or not (the user's own network's
``state_dict``). Buffers (BN running statistics, ``num_batches_tracked``) and frozen parameters
are skipped in updates and loaded with global weights. For K local steps the result holds
(w_global - w_local) / lr = the sum of the K steps' gradients (:mod:`gradinv_lib.federated.fedavg`).
"""

from __future__ import annotations

import difflib
import os
import re

import torch
from torch import Tensor

from gradinv_lib.errors import InputError, MissingAssetError
from gradinv_lib.models.weights import unwrap_state_dict

from .client import FORMAT_TAG, ClientUpdate, check_update_fits, load_update, trainable_parameters
from .fedavg import check_local_training
from .update_checks import check_bn_pairs, check_orientation, check_plausible

FORMATS = ("gradinv", "gradients", "weights", "delta")
# ||file - global|| / ||file||: auto-detection calls a file local weights below 1. Measured on
# simulated clients (LeNet-BN, ResNet-18, K <= 8, lr <= 0.5): weights reach 0.94, gradients and
# deltas stay above 1.007; a named gradients/delta file below WEIGHTS_RATIO is refused. (No test of
# a wrong global model: two random LeNets lie at 0.72.)
WEIGHTS_RATIO = 0.5
# format -> the summed gradient (w_global - w_local) / lr from a file's tensor v, global weight w
TO_GRADIENTS = {"gradients": lambda v, w, lr: v, "weights": lambda v, w, lr: (w - v) / lr,
                "delta": lambda v, w, lr: -v / lr}


# ----------------------------------------------------------------------------- reading files
HALF = (torch.float16, torch.bfloat16)
# what a file of each kind starts with: a zip archive (.npz, torch.save), or a pickle (old torch.save)
MAGIC = {"numpy .npz": (b"PK",), "torch.load": (b"PK", b"\x80")}


def _not_readable(path: str, role: str, why: str) -> InputError:
    what = "a gradinv client update or tensor file" if role == "client update" else f"a {role} file"
    return InputError(f"not {what}: {path}: {why}")


def _load_file(path: str, role: str):
    """A file's payload: a dict (name -> tensor, or gradinv's tagged dict) or a list of tensors.
    Pickled objects are never unpickled (``weights_only=True``, ``allow_pickle=False``)."""
    if not os.path.isfile(path):
        raise MissingAssetError(f"{role} file not found: expected a file at {path}")
    kind = "numpy .npz" if path.endswith(".npz") else (
        "safetensors" if path.endswith(".safetensors") else "torch.load")
    with open(path, "rb") as f:
        head = f.read(2)
    if kind in MAGIC and not head.startswith(MAGIC[kind]):
        raise _not_readable(path, role, f"expected a {kind} file (a zip archive"
                            f"{'' if kind == 'numpy .npz' else ' or a pickle'}), found "
                            f"{'an empty file' if not head else 'other content (text?)'}")
    try:
        if kind == "numpy .npz":
            import numpy as np
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: torch.from_numpy(npz[k].copy()) for k in npz.files}
            keys = [f"arr_{i}" for i in range(len(arrays))]
            return [arrays[k] for k in keys] if sorted(arrays) == sorted(keys) else arrays
        if kind == "safetensors":
            from safetensors.torch import load_file
            return load_file(path, device="cpu")
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, random bytes, pickled objects...
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found or "allow_pickle" in str(exc):
            what = f"a pickled {found.group(1)}" if found else "pickled Python objects"
            raise _not_readable(path, role, f"it holds {what} (a whole nn.Module?), which is "
                                "never unpickled since it can run code: save model.state_dict() "
                                "(or the weights as a list of arrays)") from None
        detail = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()
        if "Weights only load failed" in str(exc):  # torch's advice to unpickle: not for us
            detail = ["not a file of tensors (corrupt or truncated?)"]
        raise _not_readable(path, role, f"cannot be read by {kind} ({type(exc).__name__}"
                            f"{': ' + detail[0][:200] if detail else ''})") from None
    if isinstance(payload, dict) and not _is_tagged(payload):
        payload = unwrap_state_dict(payload, prefix="module.")  # {'state_dict': ...}, DataParallel
    return list(payload) if isinstance(payload, (list, tuple)) else payload


def _is_tagged(payload) -> bool:
    return isinstance(payload, dict) and "format" in payload and not isinstance(payload["format"], Tensor)


def _check_collection(payload, path: str) -> None:
    """Raise unless ``payload`` is a name -> tensor mapping or a list of tensors."""
    if isinstance(payload, (dict, list)):
        items = payload.items() if isinstance(payload, dict) else enumerate(payload)
        bad = next(((k, v) for k, v in items if not isinstance(v, Tensor)), None)
        if bad is None:
            return
        found = f"{bad[0]!r} holds a {type(bad[1]).__name__}"
    else:
        found = f"a {type(payload).__name__}"
    tag = payload.get("format") if isinstance(payload, dict) else None
    raise InputError(f"not a gradinv client update: {path}: expected format tag {FORMAT_TAG!r}, "
                     f"found {tag!r}, nor a name -> tensor mapping or a list of tensors ({found})")


# ----------------------------------------------------------------------------- names
def _list_order(tensors: list, model, path: str) -> list[tuple[str, str]]:
    """(model name, label) per list entry: the network's ``state_dict()`` order (Flower), gradinv's
    wrapped model's, or the trainable parameters' (TFF's ``trainable_variables``), by length."""
    full = list(model.state_dict())
    orders = {"state_dict": [n for n in full if n.startswith("body.")], "gradinv state_dict": full,
              "trainable parameter": list(trainable_parameters(model))}
    for what, names in orders.items():
        if len(names) == len(tensors):
            user = lambda n: n.removeprefix("body.")  # noqa: E731
            return [(n, f"arr_{i} ({what} entry {i}, {user(n)!r})") for i, n in enumerate(names)]
    raise InputError(f"{path}: expected a list of {len(orders['state_dict'])} arrays (the network's "
                     f"state_dict() entries, in order) or {len(orders['trainable parameter'])} (its "
                     f"trainable parameters), found {len(tensors)}")


def _mapping_names(keys: list[str], model, path: str) -> list[tuple[str, str]]:
    """(model name, label) per key: names as gradinv's (``body.``) or as the user's network's."""
    known = set(model.state_dict())
    for prefix in ("", "body."):
        if all(prefix + k in known for k in keys):
            return [(prefix + k, repr(k)) for k in keys]
    unknown = next(k for k in keys if k not in known and "body." + k not in known)
    close = difflib.get_close_matches(unknown, [n.removeprefix("body.") for n in known], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise InputError(f"{path}: tensor {unknown!r}: expected a parameter or buffer name of "
                     f"{model.name!r} (as in its state_dict, with or without 'body.'), found none{hint}")


def read_tensors(path, model, role: str = "client update") -> dict[str, Tensor]:
    """A tensor file's entries keyed by ``model``'s own names, each checked against the model's
    tensor of that name: shape, floating dtype (parameters), finite values. Every trainable
    parameter must be present; buffers and frozen parameters may be missing."""
    path = os.fspath(path)
    return _named_tensors(_load_file(path, role), model, path)


def _named_tensors(payload, model, path: str) -> dict[str, Tensor]:
    """:func:`read_tensors` of a loaded payload."""
    _check_collection(payload, path)
    named = (_list_order(payload, model, path) if isinstance(payload, list)
             else _mapping_names(list(payload), model, path))
    tensors = list(payload) if isinstance(payload, list) else list(payload.values())
    reference = model.state_dict(keep_vars=True)
    out = {}
    for (name, label), t in zip(named, tensors):
        ref = reference[name]
        if tuple(t.shape) != tuple(ref.shape):
            raise InputError(f"{path}: {label}: expected shape {tuple(ref.shape)}, found {tuple(t.shape)}")
        if ref.is_floating_point() and not t.is_floating_point():
            raise InputError(f"{path}: {label}: expected a floating dtype, found {t.dtype}")
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise InputError(f"{path}: {label}: expected finite values, found NaN or inf")
        out[name] = t
    missing = [n for n in trainable_parameters(model) if n not in out]
    if missing:
        raise InputError(f"{path}: expected every trainable parameter of {model.name!r}, found no "
                         f"{missing[0].removeprefix('body.')!r} ({len(missing)} missing)")
    return out


def load_global_weights(model, path) -> dict[str, Tensor]:
    """Set ``model`` (in place) to the global weights in ``path`` (any :func:`read_tensors` file):
    the attack must run at the weights the client started from. Returns the file's tensors."""
    tensors = read_tensors(path, model, role="global weights")
    reference = model.state_dict(keep_vars=True)
    with torch.no_grad():
        for name, t in tensors.items():
            reference[name].copy_(t.to(reference[name].dtype))
    model.weights_source = f"global weights {os.fspath(path)}"
    return tensors


def _refuse_half(tensors: dict, start: dict, reference: dict, path: str) -> None:
    """Weights in float16/bfloat16 cannot give gradients: (w - v) / lr loses every step smaller
    than the rounding (eps 1e-3 of a weight: BN weights of 1 read as unchanged)."""
    for role, files in (("", tensors), ("global weights ", start)):
        half = next((n for n in reference if n in files and files[n].dtype in HALF), None)
        if half is not None:
            raise InputError(f"{path}: {role}{half.removeprefix('body.')!r} is {files[half].dtype}: "
                             "local weights rounded to half precision lose the SGD step ((global - "
                             "local) / lr); send float32 weights, or the delta or gradients (read "
                             "exactly in any precision)")


# ----------------------------------------------------------------------------- read_update
def _distance_ratio(values: dict[str, Tensor], reference: dict[str, Tensor]) -> float:
    """||v - w|| / ||v|| over every trainable parameter: below 1, the file's tensors v lie nearer
    the global weights w than zero (local weights); a delta or gradient lies nearer zero."""
    far = sum((values[k] - reference[k]).square().sum() for k in reference)
    norm = sum(v.square().sum() for v in values.values())
    return float((far / norm).sqrt()) if norm > 0 else float("inf")


def _tagged(path: str, wanted: dict) -> ClientUpdate:
    """gradinv's own file; metadata given besides must agree with what it records."""
    update = load_update(path)
    for field, value in wanted.items():
        if value is not None and getattr(update, field) != value:
            raise InputError(f"{path}: {field}: the gradinv update records {getattr(update, field)!r}, "
                             f"found {value!r} given; leave it out for a gradinv file")
    return update


def read_update(path, model, format: str | None = None, *, global_weights=None,
                lr: float | None = None, local_steps: int | None = None,
                local_batch_size: int | None = None, batch_size: int | None = None,
                image_shape: tuple | None = None, bn_mode: str | None = None,
                checks: bool = True) -> ClientUpdate:
    """Read the update file ``path`` of a client of ``model`` in any :data:`FORMATS`.

    ``format`` None/"auto": a tagged file is "gradinv"; else the tensors are "weights" when they
    lie nearer the global weights than zero (L2 over the trainable parameters), otherwise "delta"
    when ``lr`` is given and "gradients" when not (name "gradients" for a sum of gradients with
    lr). A named gradients or delta file nearer the weights than :data:`WEIGHTS_RATIO` is refused.
    ``global_weights``: a file of the weights the client started from, LOADED INTO ``model`` (the
    attack runs at them); None: the model's current weights are the global ones.
    ``lr``, ``local_steps`` (default 1: FedSGD), ``local_batch_size``: the client's local SGD; lr
    is required for weights and deltas, and for K > 1. ``batch_size`` (the label count) is
    required. A gradinv file records all four (values given must agree), ``image_shape`` and
    ``bn_mode``, which otherwise default to (3, S, S) with S = ``model.input_size``, and "train".
    ``checks``: :func:`update_checks.check_plausible` (zero, scale, sign, batch size) of the other formats. Only gradinv files
    carry BN statistics; other updates leave ``bn_stats`` empty (BN_exact is unavailable).
    """
    path = os.fspath(path)
    if format not in (None, "auto", *FORMATS):
        raise InputError(f"format: expected auto or one of {', '.join(FORMATS)}, found {format!r}")
    start = {} if global_weights is None else load_global_weights(model, global_weights)
    payload = _load_file(path, "client update")
    if format == "gradinv" or (format in (None, "auto") and _is_tagged(payload)):
        return _tagged(path, {"batch_size": batch_size, "lr": lr, "local_steps": local_steps,
                              "local_batch_size": local_batch_size})
    if _is_tagged(payload):
        raise InputError(f"{path}: expected {format}, found a gradinv update file; use format "
                         "gradinv or auto (--format)")
    tensors = _named_tensors(payload, model, path)
    if batch_size is None:
        raise InputError(f"{path}: batch_size: expected the client's batch size (batch_size=, "
                         "--batch-size), found none; only gradinv files record it")
    local_steps = 1 if local_steps is None else local_steps
    check_local_training(batch_size, local_steps, lr, local_batch_size)
    reference = {n: p.detach().double().cpu() for n, p in trainable_parameters(model).items()}
    values = {n: tensors[n].double() for n in reference}
    ratio = _distance_ratio(values, reference)
    if format in (None, "auto"):
        format = "weights" if ratio < 1 else ("gradients" if lr is None else "delta")
    if format != "weights" and ratio < WEIGHTS_RATIO:
        raise InputError(f"{path}: expected {format}, found tensors near the global weights "
                         f"(||file - global|| / ||file|| = {ratio:.3g} < {WEIGHTS_RATIO}): local "
                         "weights? (--format weights with the client's --client-lr)")
    if format != "gradients" and lr is None:
        raise InputError(f"{path}: lr: a {format} update needs the client's learning rate "
                         "(lr=, --client-lr), found none")
    if format == "weights":
        _refuse_half(tensors, start, reference, path)
        if checks:
            check_bn_pairs(values, reference, model, path)
    grads = {n: TO_GRADIENTS[format](v, reference[n], lr) for n, v in values.items()}
    params = trainable_parameters(model)
    update = ClientUpdate(
        gradients={n: g.to(params[n].dtype) for n, g in grads.items()}, bn_stats={},
        batch_size=batch_size, model_name=str(model.name), bn_mode=bn_mode or "train",
        image_shape=tuple(image_shape or (3, model.input_size, model.input_size)),
        local_steps=local_steps, lr=lr, local_batch_size=local_batch_size)
    check_update_fits(update, model)
    if checks:
        bias = f"{model.final_layer_name}.bias"
        slack = 0.0  # weights carry rounding of at most eps |w| per step: / lr in the gradient
        if format != "gradients" and bias in reference:
            local = reference[bias] - lr * grads[bias]
            slack = (local_steps * torch.finfo(tensors[bias].dtype).eps
                     * float(reference[bias].abs().sum() + local.abs().sum()) / lr)
        if format == "weights":
            check_orientation(update, values, model, path)
        check_plausible(update, model, path, slack)
    return update
