"""GradInversion end to end: recover the labels (eq. 8), assemble the objective the configuration
asks for (eqs. 3, 9, 12) and run the loop. Prior attacks reuse these pieces with other settings."""

from __future__ import annotations

import warnings

import torch

from gradinv_lib.errors import InputError
from gradinv_lib.federated.client import ClientUpdate, check_update_fits, target_gradients, validate_labels
from gradinv_lib.federated.fedavg import client_step_for

from .batch_labels import recover_batch_labels
from .bn_stats import bn_mode, running_bn_stats
from .config import InversionConfig
from .inversion import InversionResult, run_inversion
from .objectives import BNPrior, GradientMatching, GroupConsistency, L2Prior, Objective, TotalVariation


def bn_targets(model, update: ClientUpdate, which: str):
    """BN prior targets: the client batch's statistics (BN_exact) or running ones (BN_approx)."""
    if which == "exact":
        if not update.bn_stats:
            raise InputError("bn_target='exact' needs the client batch's BN statistics, and this "
                             "update carries none; use bn_target='running' (BN_approx)")
        return update.bn_stats
    # Running variance is an unbiased estimate; the prior compares biased batch variances, so
    # scale it by (n-1)/n for the batch's per-layer element count n.
    return running_bn_stats(model, batch_size=update.batch_size, image_shape=update.image_shape)


def build_objective(model, update: ClientUpdate, config: InversionConfig) -> Objective:
    """alpha_G L_grad + alpha_TV TV + alpha_l2 l2 + alpha_BN R_BN + alpha_group R_group, each term
    in the form ``config.weighting`` names (scale-free for "balanced", raw for "paper")."""
    device = next(model.parameters()).device
    targets = [t.to(device) for t in target_gradients(update, model)]
    scale_free = config.weighting == "balanced"
    objective = config.alpha_grad * GradientMatching(targets, metric=config.grad_metric, relative=scale_free)
    objective = (objective + config.alpha_tv * TotalVariation(normalized=scale_free)
                 + config.alpha_l2 * L2Prior(normalized=scale_free))
    if config.bn_target != "none" and config.alpha_bn:
        if not model.bn_layers():
            raise InputError(f"bn_target={config.bn_target!r}: expected a model with BatchNorm layers, "
                             f"found none in {model.name!r}; set bn_target='none'")
        stats = bn_targets(model, update, config.bn_target)
        objective = objective + config.alpha_bn * BNPrior(
            {k: (m.to(device), v.to(device)) for k, (m, v) in stats.items()}, normalized=scale_free)
    if config.group != "none" and config.seeds > 1:
        objective = objective + config.alpha_group * GroupConsistency(normalized=scale_free)
    return objective


def without_bn_prior_if_no_bn(model, config: InversionConfig) -> InversionConfig:
    """A network without BatchNorm (e.g. a wrapped user model) has no statistics for R_BN
    (eq. 9): the prior is switched off, with a warning, and the result's config says
    ``bn_target='none'``."""
    if config.bn_target == "none" or model.bn_layers():
        return config
    warnings.warn(f"{model.name!r} has no BatchNorm layers: the BN prior is off "
                  f"(bn_target={config.bn_target!r} -> 'none')", stacklevel=3)
    return config.replace(bn_target="none")


def gradinversion(model, update: ClientUpdate, config: InversionConfig = InversionConfig(),
                  labels: torch.Tensor | None = None, **loop_options) -> InversionResult:
    """Recover the batch behind ``update``: labels by ``config.label_rule`` unless given, then images.

    The label rule and the reasons it may be wrong (:mod:`gradinv_lib.attack.batch_labels`) are in
    ``result.extra["labels"]``.

    A FedAvg update (``update.local_steps > 1`` or a smaller local batch) is matched through the
    client's unrolled local steps (:mod:`gradinv_lib.federated.fedavg`); recovered labels, sorted, fill the
    mini-batches in order, since the client's order is unknown.

    ``loop_options`` go to :func:`gradinv_lib.attack.inversion.run_inversion` (device, callback,
    checkpoint_dir, resume, progress, client_step).
    """
    check_update_fits(update, model)
    config = without_bn_prior_if_no_bn(model, config)
    estimate = None
    if labels is None:  # repeats by default ("multiset"); the result says why it may be wrong
        estimate = recover_batch_labels(update, model, rule=config.label_rule)
        labels = estimate.labels
    else:
        validate_labels(torch.as_tensor(labels), update.batch_size, model.num_classes)
    objective = build_objective(model, update, config)
    with bn_mode(model, update.bn_mode):  # BN normalises as it did in the client's forward
        result = run_inversion(model, objective, torch.as_tensor(labels), update.image_shape,
                               config, **{"client_step": client_step_for(update), **loop_options})
    result.extra["labels"] = estimate.to_dict() if estimate else {"rule": "given", "uncertain": []}
    return result
