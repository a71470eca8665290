"""Classifiers the attack runs against, built offline by name (``build_model``)."""

from gradinv_lib.models.base import ImageClassifier
from gradinv_lib.models.registry import MODEL_NAMES, build_model, describe_weights

__all__ = ["ImageClassifier", "MODEL_NAMES", "build_model", "describe_weights"]
