"""Attack configuration: one frozen dataclass whose defaults are the paper's (sec. 4, PAPER.md),
saved as JSON beside every result."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError

GRAD_METRICS = ("l2", "sq_l2", "cosine")
BN_TARGETS = ("exact", "running", "none")
GROUP_MODES = ("none", "lazy", "registered")
SEED_MODES = ("vmap", "loop")


@dataclass(frozen=True)
class InversionConfig:
    """GradInversion hyperparameters; defaults follow the paper (eq. 1, 3, 9, 11-12, sec. 3.5).

    Where the paper is ambiguous the value is configuration: ``alpha_l2`` (1e-5, one reading
    gives 1e-6), ``warmup`` (the text reads "50 iterations").
    """

    iterations: int = 20_000
    lr: float = 0.1
    warmup: int = 50
    seeds: int = 8                      # G, group consistency (sec. 3.4)
    grad_metric: str = "l2"             # eq. 3: per-layer, non-squared L2
    alpha_grad: float = 1e-3            # alpha_G
    alpha_tv: float = 1e-4
    alpha_l2: float = 1e-5
    alpha_bn: float = 0.1
    bn_target: str = "exact"            # BN_exact (batch stats) | running (BN_approx) | none
    alpha_group: float = 0.01
    group: str = "registered"           # none | lazy | registered
    registration: str = "translation"   # departure: RANSAC-flow replaced (see README)
    register_start: float = 0.25        # the paper starts registering at 5K of 20K iterations
    register_every: int = 100
    alpha_noise: float = 0.2            # alpha_n, Langevin update (sec. 3.5)
    label_rule: str = "min"             # eq. 8
    init_std: float = 1.0               # x initialised N(0, init_std^2) in normalised space
    seed: int = 0
    seed_mode: str = "vmap"             # per-seed gradients: torch.func.vmap or a Python loop
    amp: bool = False                   # bf16 autocast of the forward pass (CUDA only)
    log_every: int = 50
    checkpoint_every: int = 500

    def __post_init__(self):
        choices = {"grad_metric": GRAD_METRICS, "bn_target": BN_TARGETS, "group": GROUP_MODES,
                   "seed_mode": SEED_MODES, "label_rule": ("min", "sum")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise InputError(f"{name}={getattr(self, name)!r}; expected one of {allowed}")
        for name in ("iterations", "seeds", "register_every", "log_every"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.checkpoint_every < 0:
            raise InputError(f"checkpoint_every must be >= 0 (0: only on interruption and at the end), "
                             f"got {self.checkpoint_every}")
        if self.lr <= 0 or not 0 <= self.register_start <= 1 or self.warmup < 0:
            raise InputError(f"invalid lr/warmup/register_start: {self.lr}, {self.warmup}, "
                             f"{self.register_start}")

    def replace(self, **changes) -> "InversionConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "InversionConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise InputError(f"unknown InversionConfig fields: {sorted(unknown)}")
        return cls(**values)

    def save(self, path: str | Path) -> None:
        from .io import write_json_atomic
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "InversionConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))
