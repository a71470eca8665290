"""One attack on one client update, end to end and scored: simulate the client, run GradInversion
or a prior attack, match the reconstructions to the originals, score them beside the noise start
(``run``); Table 4's attacks side by side on the same update (``compare``, sec. 4.1)."""

from gradinv_lib.exports import lazy_exports

PUBLIC = {"attack_batch": "run", "evaluate_attack": "run", "available_lpips": "run", "save_attack": "run",
          "compare_attacks": "compare"}
__all__ = sorted(PUBLIC)
__getattr__ = lazy_exports(__name__, PUBLIC)
