"""gradinv: a reproducible companion to GradInversion (Yin et al., CVPR 2021)."""

__version__ = "0.1.0"
