"""The method of the paper (sec. 3): the batch's labels from the final layer's gradient (eq. 8:
``labels``, ``batch_labels``), the objective's terms (eqs. 3, 9, 11-12: ``objectives``,
``gradient_distances``, ``bn_stats``, per seed by ``seed_gradients`` with the classifier's gradient
kept factored by ``factored_gradient``), the loop and its schedule (eq. 1, sec. 3.5:
``inversion``, ``schedule``), its settings (``config``) and the entry point (``pipeline``)."""

from gradinv_lib.exports import lazy_exports

PUBLIC = {"InversionConfig": "config", "gradinversion": "pipeline", "build_objective": "pipeline",
          "recover_labels": "labels", "recover_label_multiset": "labels", "run_inversion": "inversion",
          "InversionResult": "inversion"}
__all__ = sorted(PUBLIC)
__getattr__ = lazy_exports(__name__, PUBLIC)
