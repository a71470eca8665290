"""Classifiers the attack runs against, built offline by name (``build_model``)."""

from gradinv_lib.models.base import ImageClassifier
from gradinv_lib.models.registry import MODEL_NAMES, build_model, describe_weights
from gradinv_lib.models.wrap import wrap_model

__all__ = ["ImageClassifier", "MODEL_NAMES", "build_model", "describe_weights", "wrap_model"]
