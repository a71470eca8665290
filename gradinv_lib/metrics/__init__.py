"""Reconstruction metrics of the paper (sec. 4, Tables 2-4, Fig. 8), one concern a file:

* ``pixel``: FFT-2D, PSNR, bounded PSNR after registration, SSIM;
* ``features``: avg-pool features (pretrained EfficientNet-Lite0 by default) and feature distance;
* ``identification``: IIP and pixel-correlation nearest neighbours, siblings counted apart;
* ``perceptual``: LPIPS; ``summary``: pairing by label, reference images, ``evaluate_reconstruction``.

Image metrics take PAIRED batches in pixel space [0, 1], shape (N, 3, H, W): reconstruction i is
compared with original i (pair them first with :func:`match_by_labels`), and return (N,).
"""

from .features import (LITE0, Lite0FeaturesUnavailable, feature_distance, features_of, lite0_features,
                       lite0_model, penultimate_features)
from .identification import (identifiability_precision, nearest_neighbour_hits, pixel_correlation_nn,
                             pool_source_groups)
from .perceptual import ALEXNET_FILE, LPIPSUnavailable, _load_alexnet_backbone, alexnet_cache_path, lpips_metric
from .pixel import (IMAGENET_MEAN, IMAGENET_STD, PSNR_CAP_DB, Registration, RegistrationFn, fft2d_distance,
                    imagenet_normalize, psnr, registered_psnr, ssim)
from .summary import evaluate_reconstruction, match_by_labels, noise_start_like, reference_images

__all__ = [
    "ALEXNET_FILE", "IMAGENET_MEAN", "IMAGENET_STD", "LITE0", "LPIPSUnavailable", "Lite0FeaturesUnavailable",
    "PSNR_CAP_DB", "Registration", "RegistrationFn", "alexnet_cache_path", "evaluate_reconstruction",
    "feature_distance", "features_of", "fft2d_distance", "identifiability_precision", "imagenet_normalize",
    "lite0_features", "lite0_model", "lpips_metric", "match_by_labels", "nearest_neighbour_hits",
    "noise_start_like", "penultimate_features", "pixel_correlation_nn", "pool_source_groups", "psnr",
    "reference_images", "registered_psnr", "ssim",
]
