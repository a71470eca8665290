"""The labels the attack uses, by rule name, with the reasons the estimate may be wrong.

Rules: "multiset" (the default, beyond the paper: per-class counts, so repeated labels are
recovered, :func:`labels.recover_label_multiset`, FedSGD and FedAvg), "min" (eq. 8, sec. 3.2:
the B classes with the most negative row minima, distinct labels) and "sum" (the iDLG baseline
of Table 1). Where eq. 8's premises fail (negative features, something after the final layer,
units dropped at random in the client, large local steps) the result says so and a warning is
raised: never silently.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from gradinv_lib.errors import InputError
from gradinv_lib.federated.fedavg import minibatch_indices
from gradinv_lib.models.probes import negative_feature_fraction, output_is_final_layer, stochastic_modules

from .labels import LABEL_RULES, fc_gradients, recover_labels_from_update

LABEL_RULE_NAMES = ("multiset", *LABEL_RULES)
# Spread (max - min over classes) of the final layer's logit change over the K local steps,
# -lr (dW o_bar + db), above which counts read at the global weights are flagged approximate:
# one nat changes a probability ratio by e (README, label multiset table).
DRIFT_LIMIT = 1.0


@dataclass(frozen=True)
class LabelEstimate:
    """Recovered labels (B,) sorted ascending, the rule that produced them, and why they may be wrong."""

    labels: Tensor
    rule: str
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"rule": self.rule, "uncertain": list(self.notes)}


def local_step_drift(update, model) -> float | None:
    """Spread over classes of the final layer's logit change over the K local steps at the batch's
    p-weighted mean feature o_bar (from the absent classes' rows, dW_n / db_n); None for FedSGD or
    where no row is entirely >= 0."""
    if update.is_fedsgd or update.lr is None:
        return None
    dW, db = (None if t is None else t.detach().double().cpu() for t in fc_gradients(update, model))
    if db is None:
        return None
    absent = (dW >= 0).all(dim=1) & (db > 0)
    if not absent.any():
        return None
    o_bar = dW[absent].sum(0) / db[absent].sum()
    change = -update.lr * (dW @ o_bar + db)
    return float(change.max() - change.min())


def _uses_uneven(update) -> bool:
    """Whether the K local mini-batches use some images more often than others."""
    steps = minibatch_indices(update.batch_size, update.local_steps, update.local_batch_size)
    uses = torch.bincount(torch.cat(steps), minlength=update.batch_size)
    return bool(uses.min() != uses.max())


def label_notes(update, model) -> list[str]:
    """Why label recovery (eq. 8 and the counts) may be wrong for this network and update."""
    notes, shape = [], update.image_shape
    negative = negative_feature_fraction(model, shape)
    if negative > 0:
        notes.append(f"{100 * negative:.0f}% of the features entering the final layer are negative "
                     "(e.g. SiLU): eq. 8 assumes them >= 0")
    if not output_is_final_layer(model, shape):
        notes.append(f"the network's output is not {model.final_layer_name!r}'s (e.g. a ReLU follows "
                     "it): a class whose logit is cut off gives no label signal")
    dropped = stochastic_modules(model)
    if dropped:
        notes.append(f"{', '.join(dropped[:3])}{' ...' if len(dropped) > 3 else ''} drop units at "
                     "random: a client training with them on sent the gradient of a random sub-network")
    drift = local_step_drift(update, model)
    if drift is not None and drift > DRIFT_LIMIT:
        notes.append(f"the {update.local_steps} local steps moved the final layer's logits by up to "
                     f"{drift:.2g} (client lr {update.lr}): counts read at the global weights are approximate")
    if not update.is_fedsgd and _uses_uneven(update):
        notes.append(f"{update.local_steps} steps of {update.local_batch_size} images use some images "
                     "more often than others: counts weigh each image by its uses")
    return notes


def recover_batch_labels(update, model, rule: str = "multiset", warn: bool = True) -> LabelEstimate:
    """The labels for ``update`` by ``rule`` (:data:`LABEL_RULE_NAMES`), with :func:`label_notes`.

    "multiset" needs the final layer's bias; without one the min rule (distinct labels) is used
    and a note says so. ``warn``: raise a UserWarning per note. Never reads ``update.labels``.
    """
    if rule not in LABEL_RULE_NAMES:
        raise InputError(f"label rule: expected one of {LABEL_RULE_NAMES}, found {rule!r}")
    notes = label_notes(update, model)
    if rule == "multiset" and model.final_layer.bias is None:
        notes.append(f"{model.final_layer_name!r} has no bias: label counts need it, so the labels "
                     "are eq. 8's (min rule, distinct labels)")
        rule = "min"
    labels = recover_labels_from_update(update, model, rule=rule)
    if warn:
        for note in notes:
            warnings.warn(f"label recovery may be wrong: {note}", UserWarning, stacklevel=2)
    return LabelEstimate(labels=labels, rule=rule, notes=tuple(notes))
