"""Fast, batched parametric image registration (Yin et al. 2021, sec. 3.4), one concern a file:

* ``translation``: FFT phase correlation (sub-pixel); ``logpolar``: rotation/scale;
  ``refine``: Gauss-Newton refinement; ``warps``: transform builders and kornia warps;
* ``parametric``: the unbounded registrations ``REGISTRATIONS`` used by the group consensus;
* ``consensus``: lazy/registered consensus and its schedule (eqs. 11-12);
* ``bounded``: the bounded, inverse-direction registration used to SCORE reconstructions.
"""

from .bounded import (DEFAULT_BOUNDS, MAX_ANGLE_DEG, MAX_SCALE, MAX_SHIFT_FRACTION, MIN_SCALE,
                      BoundedRegistration, WarpBounds, register_original_onto)
from .common import PADDING_MODE, Registration
from .consensus import ConsensusSchedule, lazy_consensus, registered_consensus
from .logpolar import estimate_rotation_scale
from .parametric import (MAX_WORKING_SIZE, REGISTRATIONS, register_affine, register_none,
                         register_similarity, register_translation)
from .translation import phase_correlation_shift
from .warps import similarity_matrix, similarity_params, translation_matrix, warp_affine, warp_translate

__all__ = [
    "Registration",
    "PADDING_MODE",
    "MAX_WORKING_SIZE",
    "phase_correlation_shift",
    "warp_affine",
    "warp_translate",
    "translation_matrix",
    "similarity_matrix",
    "similarity_params",
    "estimate_rotation_scale",
    "register_none",
    "register_translation",
    "register_similarity",
    "register_affine",
    "REGISTRATIONS",
    "registered_consensus",
    "lazy_consensus",
    "ConsensusSchedule",
    "WarpBounds",
    "DEFAULT_BOUNDS",
    "MAX_SHIFT_FRACTION",
    "MAX_ANGLE_DEG",
    "MIN_SCALE",
    "MAX_SCALE",
    "BoundedRegistration",
    "register_original_onto",
]
