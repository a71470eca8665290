"""Defences against gradient inversion (beyond the paper), as transforms of a client's round:
gradient pruning, DP-SGD (Opacus), larger batches, FedAvg local steps, secure aggregation, MixUp.
Each is a frozen config (:mod:`.configs`); :func:`defended_update` runs the client simulation
under one, and the attack receives an ordinary update without being told which defence ran."""

from .apply import (clean_update, client_update, data_only, defended_update, epsilon, images_needed, mix_batch,
                    prune_gradients, update_cosine)
from .configs import (DEFENCES, DPSGD, Compose, Defence, FedAvg, GradientPruning, LargerBatch, MixUp, NoDefence,
                      PrivateBN, SecureAggregation, compose, defence_from_dict, parse_defence)
from .dp import dp_epsilon, dp_sgd_update, frozen_bn_copy, per_sample_norms

__all__ = ["DEFENCES", "DPSGD", "Compose", "Defence", "FedAvg", "GradientPruning", "LargerBatch", "MixUp",
           "NoDefence", "PrivateBN", "SecureAggregation", "clean_update", "client_update", "compose", "data_only",
           "defence_from_dict", "defended_update", "dp_epsilon", "dp_sgd_update", "epsilon", "frozen_bn_copy",
           "images_needed", "mix_batch", "parse_defence", "per_sample_norms", "prune_gradients", "update_cosine"]
