"""Classifiers the attack runs against, built offline by name (``build_model``)."""

from .base import ImageClassifier
from .registry import MODEL_NAMES, build_model, describe_weights
from .wrap import wrap_model

__all__ = ["ImageClassifier", "MODEL_NAMES", "build_model", "describe_weights", "wrap_model"]
