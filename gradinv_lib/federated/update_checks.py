"""Plausibility checks of a client update read from a file: refuse, in one line naming the tensor
and the likely mistake, what cannot come from K mean cross-entropy SGD steps of the model.

Everything here reads the final layer (sec. 3.2): one step's gradients are
db = mean_i (p_i - onehot(y_i)) and dW = mean_i (p_i - onehot(y_i)) o_i^T, p_i = softmax(W o_i + b).
Facts used, each holding step by step and so for FedAvg's sum of K steps too:

1. ||db||_1 <= 2 per step (scale upper bound: lr too small, a summed loss, momentum).
2. An absent class has db_n = mean_i p_in > 0 and, with features o >= 0, a row dW_n >= 0.
3. Calibration (derived here): for the absent classes, o_bar = sum dW_n / sum db_n is their
   p-weighted mean feature, and softmax(W o_bar + b)_n ~= mean_i p_in (equal when p varies little
   over the batch, Jensen otherwise). Their K-step sum is at least the first step's, so
   r = sum_absent db_n / sum_absent softmax(W o_bar + b)_n is ~1 for FedSGD and between ~1 and
   K for FedAvg; far below: the gradient is too small (lr too large); far above: the sign is
   flipped (the "absent" rows are then present classes, whose db is ~count/B).
4. Present classes (rows with a negative entry, o >= 0) number at most B.
Checks 2-4 need o >= 0 and the network's output to be the final layer's
(:mod:`gradinv_lib.models.probes`); otherwise they are skipped. Thresholds and their false
positive rates on correct updates are measured in README ("Update checks").
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gradinv_lib.errors import InputError
from gradinv_lib.models.probes import negative_feature_fraction, output_is_final_layer

R_MIN = 0.2        # calibration r below: the gradient is too small (lr too large)
R_MAX_FEDSGD = 1.5  # calibration r above, one step: the sign looks flipped
SKIP = "(checks=False or --no-update-checks skips the checks)"


def premises_hold(model, image_shape) -> bool:
    """Facts 2-4 hold: features o >= 0 and p = softmax of the final layer's own output."""
    return output_is_final_layer(model, image_shape) and negative_feature_fraction(model, image_shape) == 0


def absent_class_calibration(dW: Tensor, db: Tensor, W: Tensor, b: Tensor) -> float | None:
    """r of fact 3 (module docstring); None without any absent class (a row entirely >= 0 with
    db_n > 0)."""
    dW, db, W, b = (t.detach().double().cpu() for t in (dW, db, W, b))
    absent = (dW >= 0).all(dim=1) & (db > 0)
    if not absent.any():
        return None
    o_bar = dW[absent].sum(0) / db[absent].sum()
    predicted = torch.softmax(W @ o_bar + b, dim=0)[absent].sum()
    return float(db[absent].sum() / predicted)


def check_not_zero(update, source: str) -> None:
    """Refuse an update whose gradients are all zero, or whose final layer's weight gradient is."""
    if all(not bool(g.any()) for g in update.gradients.values()):
        raise InputError(f"{source}: every gradient is zero: the client's weights equal the global "
                         "ones (the same file given as --update and --global-weights?)")


def check_scale_upper(db: Tensor, name: str, update, source: str, slack: float) -> None:
    """Fact 1: ||db||_1 <= 2K (+ ``slack``, the rounding of weights in the file)."""
    k = update.local_steps
    l1 = db.double().abs().sum().item()
    if l1 > 2 * k * 1.01 + slack:
        raise InputError(
            f"{source}: gradient {name!r}: expected the L1 norm of {k} mean cross-entropy step(s) "
            f"to be at most {2 * k}, found {l1:.4g}: is the client's learning rate right "
            f"(lr={update.lr}), and the global weights? (a delta not divided by lr, a summed loss "
            f"or momentum do this too) {SKIP}")


def check_present_classes(dW: Tensor | None, db: Tensor | None, names: tuple, update, n: int,
                          source: str) -> None:
    """Fact 4: at most B entries of db are negative (fact 2, any features) and, given ``dW``
    (pass it only for o >= 0), at most B rows of dW have a negative entry; with 2B < N, N - B or
    more means a flipped sign, fewer a batch larger than the one given."""
    b = update.batch_size
    counts = {names[1]: (int((db < 0).sum()), "is negative for")} if db is not None else {}
    if dW is not None:
        counts[names[0]] = (int((dW < 0).any(dim=1).sum()), "has negative entries for")
    name, (present, what) = max(counts.items(), key=lambda kv: kv[1][0], default=(None, (0, "")))
    if present <= b:
        return
    if 2 * b < n and present >= n - b:
        why = ("the sign looks flipped: a delta read as weights or gradients, or global and local "
               "weights swapped? (--format)")
    else:
        why = (f"is the batch size right (batch_size={b}, --batch-size), and the sign (global and "
               "local weights swapped?)")
    raise InputError(f"{source}: gradient {name!r} {what} {present} of {n} "
                     f"classes, expected at most {b} (the batch's classes): {why} {SKIP}")


def check_calibration(dW: Tensor, db: Tensor, names: tuple, update, model, source: str) -> None:
    """Fact 3: refuse r < R_MIN (too small: lr too large) and, for FedSGD only, r > R_MAX_FEDSGD
    (flipped): after K > 1 steps an absent class may have gained any probability (a client whose
    loss rises), so r has no upper bound there."""
    fc = model.final_layer
    r = absent_class_calibration(dW, db, fc.weight, fc.bias)
    if r is None:
        return
    k = update.local_steps
    if r < R_MIN:
        raise InputError(
            f"{source}: gradient {names[1]!r}: the absent classes' entries are {r:.2g} times the "
            f"probabilities the global model gives them (expected about 1 to {k}): the gradients "
            f"look ~{1 / r:.0f}x too small: is the client's learning rate right (lr={update.lr}), "
            f"or is the update zero or rounded (float16)? {SKIP}")
    if update.is_fedsgd and r > R_MAX_FEDSGD:
        raise InputError(
            f"{source}: gradient {names[1]!r}: the classes whose {names[0]!r} rows are >= 0 have "
            f"entries {r:.2g} times the probabilities the global model gives them (expected about "
            f"1): the sign looks flipped (global and local weights swapped, a delta read "
            f"as weights?), or the lr is too small (lr={update.lr}) {SKIP}")


def check_plausible(update, model, source: str, slack: float = 0.0) -> None:
    """Raise InputError where the update cannot come from K mean cross-entropy SGD steps of
    ``model``: zero, a wrong scale, a flipped sign or a wrong batch size (module docstring).

    Without a final-layer bias only the zero check and fact 4 (for o >= 0) run.
    """
    check_not_zero(update, source)
    layer, n = model.final_layer_name, model.num_classes
    names = (f"{layer}.weight", f"{layer}.bias")
    dW, db = update.gradients[names[0]], update.gradients.get(names[1])
    if not bool(dW.any()):
        raise InputError(f"{source}: gradient {names[0]!r} is zero: the final layer did not change "
                         f"(weights rounded to float16, or the wrong global weights?) {SKIP}")
    if db is not None:
        check_scale_upper(db, names[1], update, source, slack)
    shape = update.image_shape
    softmax_of_layer = output_is_final_layer(model, shape)
    features_ok = premises_hold(model, shape)
    # fact 2 on db holds for any features; on dW rows and fact 3 only for o >= 0
    check_present_classes(dW if features_ok else None, db if softmax_of_layer else None, names,
                          update, n, source)
    if db is not None and features_ok:
        check_calibration(dW, db, names, update, model, source)


def check_bn_pairs(values: dict, reference: dict, model, source: str) -> None:
    """Refuse local weights whose BatchNorm weight and bias lie much nearer the global bias and
    weight than the global weight and bias (same shape, so a list in another order passes every
    shape check); only for local weights, where the global values are the reference."""
    for layer in model.bn_layers():
        w, b = f"{layer}.weight", f"{layer}.bias"
        if w not in values or b not in values:
            continue
        same = (values[w] - reference[w]).norm() + (values[b] - reference[b]).norm()
        swapped = (values[w] - reference[b]).norm() + (values[b] - reference[w]).norm()
        if swapped < 0.5 * same:
            raise InputError(f"{source}: {w.removeprefix('body.')!r} and {b.removeprefix('body.')!r} "
                             f"look swapped: each lies nearer the other's global values "
                             f"({float(swapped):.3g} against {float(same):.3g}); is the list in "
                             f"state_dict() order? {SKIP}")


def check_orientation(update, local: dict, model, source: str) -> None:
    """FedSGD local weights: refuse when the calibration r (fact 3) fits the reverse reading
    (global and local files swapped: the model at the local weights, gradient -g) at least 4x
    better on the log scale than the given one; r of a correct reading is 1 up to Jensen's gap."""
    layer = model.final_layer_name
    names = (f"{layer}.weight", f"{layer}.bias")
    if not update.is_fedsgd or names[1] not in local or not premises_hold(model, update.image_shape):
        return
    fc = model.final_layer
    dW, db = update.gradients[names[0]], update.gradients[names[1]]
    given = absent_class_calibration(dW, db, fc.weight, fc.bias)
    reverse = absent_class_calibration(-dW, -db, local[names[0]], local[names[1]])
    if given is None or reverse is None:
        return
    off, off_reverse = abs(math.log(given)), abs(math.log(reverse))
    if off > 0.05 and off_reverse < off / 4:
        raise InputError(f"{source}: the global and local weights look swapped: read the other way "
                         f"round, {names[1]!r} fits the global model's probabilities (r = {reverse:.3g}, "
                         f"against {given:.3g}; expected 1); is --global-weights the server's file? {SKIP}")
