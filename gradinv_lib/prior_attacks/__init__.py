"""The attacks GradInversion is compared with (Table 4, Fig. 5), each a configuration of the
shared pieces: objective terms, per-seed gradients, a small loop, and the same metrics."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from gradinv_lib.attack.bn_stats import bn_mode
from gradinv_lib.attack.inversion import InversionResult
from gradinv_lib.errors import InputError
from gradinv_lib.federated.client import ClientUpdate

from .deepinversion import DeepInversionConfig, deepinversion
from .dlg import DLGConfig, dlg, idlg
from .gan_projection import GANProjectionConfig, biggan_dir, biggan_unavailable_reason, gan_projection, load_biggan
from .inverting_gradients import InvertingGradientsConfig, inverting_gradients
from .loop import LoopSettings, minimise
from .state import attack_state, per_seed_forward, per_seed_losses


@dataclass(frozen=True)
class PriorAttack:
    """One row of Table 4: how to run it and what it needs beyond the update."""

    run: Callable[..., InversionResult]
    config: type
    needs_labels: bool
    needs_gan: bool
    title: str


PRIOR_ATTACKS: dict[str, PriorAttack] = {
    "dlg": PriorAttack(dlg, DLGConfig, False, False, "Deep Leakage from Gradients (Zhu et al. 2019)"),
    "idlg": PriorAttack(idlg, lambda **kw: DLGConfig(**{"labels": "sum", **kw}), False, False,
                        "iDLG (Zhao et al. 2020): DLG with analytic labels"),
    "inverting_gradients": PriorAttack(inverting_gradients, InvertingGradientsConfig, False, False,
                                       "Inverting Gradients (Geiping et al. 2020)"),
    "deepinversion": PriorAttack(deepinversion, DeepInversionConfig, True, False,
                                 "DeepInversion (Yin et al. 2020): BN prior + labels, no gradients"),
    "gan_projection": PriorAttack(gan_projection, GANProjectionConfig, True, True,
                                  "GAN latent projection (BigGAN-deep, StyleGAN2-style projector)"),
}


def run_prior_attack(name: str, model, update: ClientUpdate, config=None, labels=None,
                     **extra) -> InversionResult:
    """Run attack ``name`` on ``update`` with BN normalising as in the client's forward.

    ``labels``: the true labels, passed only to attacks that need them; ``extra`` goes to the
    attack (``generator=``, ``latent_dim=`` for ``gan_projection``).
    """
    if name not in PRIOR_ATTACKS:
        raise InputError(f"attack: expected one of {', '.join(PRIOR_ATTACKS)}, found {name!r}")
    spec = PRIOR_ATTACKS[name]
    config = config if config is not None else spec.config()
    with bn_mode(model, update.bn_mode):
        return spec.run(model, update.without_labels(), config=config,
                        labels=labels if spec.needs_labels else None, **extra)


__all__ = [
    "PRIOR_ATTACKS", "PriorAttack", "run_prior_attack",
    "dlg", "idlg", "DLGConfig", "inverting_gradients", "InvertingGradientsConfig",
    "deepinversion", "DeepInversionConfig", "gan_projection", "GANProjectionConfig",
    "load_biggan", "biggan_dir", "biggan_unavailable_reason",
    "LoopSettings", "minimise", "attack_state", "per_seed_forward", "per_seed_losses",
]
