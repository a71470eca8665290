"""gradinv: a reproducible companion to GradInversion (Yin et al., CVPR 2021).

Where each concern lives (the names a user imports come from the packages in capitals):

- ``ATTACK``: the method (sec. 3): labels (eq. 8), the objective (eqs. 3, 9, 11-12), the loop (eq. 1)
- ``FEDERATED``: the client side: simulated FedSGD/FedAvg clients, real update files, their checks
- ``DEFENCES``: what a client may do against the attack (beyond the paper: DP, pruning, ...)
- ``EXPERIMENTS``: one attack on one update, scored; Table 4's attacks side by side
- ``MODELS``, ``DATA``, ``METRICS``: networks (with weights offline), images, the paper's metrics
- ``registration``, ``prior_attacks``: image alignment for group consistency; DLG, IG, DeepInversion
- ``STUDIES``: the notebooks' tables and figures (secs. 4.1-4.3), cached, with their claims
- ``cli``, ``bench``, ``runtime``, ``widgets``, ``course``, ``gpu_report``: commands, speed,
  processes and clusters, notebook widgets, teaching material, the GPU report
- modules: ``errors``, ``io``, ``profiles``, ``paper_results``, ``plotting``, ``exports``
"""

from . import deprecated_paths

__version__ = "0.1.0"
deprecated_paths.install()
