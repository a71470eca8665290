"""A small minimisation loop for the prior attacks (Table 4): Adam, Adam on the signed gradient
(Inverting Gradients) or L-BFGS (DLG), a learning-rate schedule and a projection after each step.
It knows nothing about images or objectives: it minimises ``loss_fn`` over a list of tensors."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import Tensor

from gradinv_lib.attack.schedule import cosine_with_warmup
from gradinv_lib.errors import InputError

OPTIMIZERS = ("adam", "signed_adam", "lbfgs")


def step_decay(step: int, total: int, base_lr: float, warmup: int = 0) -> float:
    """Inverting Gradients' schedule: lr divided by 10 at 3/8, 5/8 and 7/8 of the run."""
    drops = sum(step >= math.floor(total * f) for f in (3 / 8, 5 / 8, 7 / 8))
    return base_lr * 0.1 ** drops


SCHEDULES: dict[str, Callable[[int, int, float, int], float]] = {
    "constant": lambda step, total, base_lr, warmup: base_lr,
    "cosine": cosine_with_warmup,
    "steps": step_decay,
}


@dataclass(frozen=True)
class LoopSettings:
    """How to minimise: ``iterations`` counts objective evaluations (L-BFGS included)."""

    iterations: int
    lr: float
    optimizer: str = "adam"
    schedule: str = "constant"
    warmup: int = 0
    lbfgs_history: int = 100
    keep_best: bool = False          # return the variables at the lowest loss seen

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"optimizer: expected one of {OPTIMIZERS}, found {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise InputError(f"schedule: expected one of {tuple(SCHEDULES)}, found {self.schedule!r}")
        if self.iterations < 1 or self.lr <= 0:
            raise InputError(f"iterations >= 1 and lr > 0 expected, found {self.iterations}, {self.lr}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LoopResult:
    history: dict[str, list[float]]
    evaluations: int
    seconds: float
    best_loss: float


LossFn = Callable[[int], tuple[Tensor, dict[str, Tensor]]]


def minimise(variables: list[Tensor], loss_fn: LossFn, settings: LoopSettings,
             project: Callable[[], None] | None = None) -> LoopResult:
    """Minimise ``loss_fn(t) -> (total, parts)`` over ``variables`` (in place).

    ``project`` runs after every optimiser step under ``no_grad`` (e.g. the image box). A non-finite
    loss stops the run and restores the best variables seen so far.
    """
    history: dict[str, list[float]] = {}
    best = {"loss": math.inf, "values": [v.detach().clone() for v in variables]}
    count = [0]
    started = time.perf_counter()

    def evaluate() -> Tensor:
        t = count[0]
        total, parts = loss_fn(t)
        value = float(total.detach())
        for name, v in {"total": total, **parts}.items():
            history.setdefault(name, []).append(float(v.detach()))
        if math.isfinite(value) and value < best["loss"]:
            best["loss"] = value
            best["values"] = [v.detach().clone() for v in variables]
        count[0] += 1
        return total

    def restore_best():
        with torch.no_grad():
            for v, b in zip(variables, best["values"]):
                v.copy_(b)

    if settings.optimizer == "lbfgs":
        _run_lbfgs(variables, evaluate, settings, project, count, best)
    else:
        _run_adam(variables, evaluate, settings, project, count)
    last = history["total"][-1] if history else math.inf
    if settings.keep_best or not math.isfinite(last):
        restore_best()
    return LoopResult(history, count[0], time.perf_counter() - started, best["loss"])


def _run_adam(variables, evaluate, settings, project, count):
    opt = torch.optim.Adam(variables, lr=settings.lr)
    schedule = SCHEDULES[settings.schedule]
    for t in range(settings.iterations):
        for group in opt.param_groups:
            group["lr"] = schedule(t, settings.iterations, settings.lr, settings.warmup)
        opt.zero_grad(set_to_none=True)
        total = evaluate()
        if not torch.isfinite(total):
            return
        total.backward(inputs=variables)
        if settings.optimizer == "signed_adam":
            for v in variables:
                v.grad.sign_()
        opt.step()
        if project is not None:
            with torch.no_grad():
                project()


def _run_lbfgs(variables, evaluate, settings, project, count, best):
    """L-BFGS with strong-Wolfe line search until ``iterations`` evaluations are spent; when it
    stalls (a zero step) it restarts with a fresh curvature history, and stops once a restart
    finds nothing lower.

    Departure: DLG ran L-BFGS with a fixed step (lr 1) and no line search, which diverges often;
    the line search keeps it stable. Tolerances are 0 so only the budget or a stall ends a run.
    """
    def closure():
        opt.zero_grad(set_to_none=True)
        total = evaluate()
        if torch.isfinite(total):
            total.backward(inputs=variables)
        else:  # a zero gradient ends the line search; minimise() then restores the best point
            for v in variables:
                v.grad = torch.zeros_like(v)
        return total

    while count[0] < settings.iterations:
        left, before = settings.iterations - count[0], best["loss"]
        opt = torch.optim.LBFGS(variables, lr=settings.lr, max_iter=left, max_eval=left,
                                history_size=settings.lbfgs_history, tolerance_grad=0.0,
                                tolerance_change=0.0, line_search_fn="strong_wolfe")
        opt.step(closure)
        if project is not None:
            with torch.no_grad():
                project()
        if not best["loss"] < before:
            break
