"""The GradInversion optimisation loop (eq. 1, sec. 3.5): G seeds optimised jointly as one batched
tensor with Adam, cosine-decayed learning rate and Langevin noise, kept inside the image box."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from gradinv_lib.errors import InputError
from gradinv_lib.registration import ConsensusSchedule, lazy_consensus, registered_consensus
from gradinv_lib.runtime.checkpoint import InversionInterrupted, load_checkpoint, save_checkpoint, stop_on_signals

from .config import InversionConfig
from .objectives import AttackState, Objective
from .schedule import cosine_with_warmup
from .seed_gradients import per_seed_gradients


@dataclass
class Progress:
    """What the loop hands to a callback: it never needs to know what the callback does."""

    iteration: int
    total: int
    images: Tensor              # (G, B, C, H, W) normalised, detached
    losses: dict[str, float]
    to_pixels: Callable[[Tensor], Tensor]


@dataclass
class InversionResult:
    """Per-seed reconstructions, their consensus and the loss history, in pixel space [0, 1]."""

    images: Tensor              # (G, B, C, H, W)
    consensus: Tensor           # (B, C, H, W)
    start: Tensor               # (B, C, H, W): seed 0's starting noise, the paper's first row
    labels: Tensor              # (B,) labels the attack used
    history: dict[str, list[float]]
    config: InversionConfig
    iterations: int
    seconds: float
    resumed_from: int = 0
    extra: dict = field(default_factory=dict)
    forces: dict = field(default_factory=dict)  # "start"/"end": term -> ||d(w term)/dx|| (Objective.forces)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
_ALLOCATOR_TUNED: bool | None = None


def keep_freed_memory() -> bool:
    """Let glibc keep freed blocks up to 32 MiB (the most mallopt allows) in the heap instead of
    unmapping them, and never trim the heap, so each iteration reuses the previous one's memory
    instead of page-faulting it in afresh (on this CPU a double backward spent ~15% of its time
    in the kernel doing so). Process-wide, idempotent; False where glibc is absent.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED is None:
        try:
            import ctypes
            libc = ctypes.CDLL("libc.so.6")
            _ALLOCATOR_TUNED = bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)
                                    and libc.mallopt(_M_TRIM_THRESHOLD, 2**30))
        except (OSError, AttributeError):
            _ALLOCATOR_TUNED = False
    return _ALLOCATOR_TUNED


def image_box(model, device) -> tuple[Tensor, Tensor]:
    """Bounds of the valid image range [0, 1] in the model's normalised space, (1, 3, 1, 1) each."""
    lo = model.normalize(torch.zeros(1, 3, 1, 1, device=device))
    hi = model.normalize(torch.ones(1, 3, 1, 1, device=device))
    return lo, hi


class _Consensus:
    """The group target (eq. 12): lazy pixel mean, or the registered mean, refreshed on schedule.

    With a ``seed_group`` (``distributed.SeedGroup``) ``images`` are this process's seeds only;
    both means are then summed over processes with one all-reduce each, so every process holds
    the consensus of all G seeds (each registers only its own seeds onto the shared coarse mean).
    """

    def __init__(self, config: InversionConfig, seed_group=None):
        self.config = config
        self.seed_group = seed_group
        self.schedule = ConsensusSchedule(config.register_start, config.register_every)
        self.current: Tensor | None = None

    def update(self, t: int, images: Tensor) -> Tensor:
        total = self.config.iterations
        if self.config.group != "registered" or t < self.schedule.start(total):
            self.current = self._lazy(images)
        elif self.schedule.should_register(t, total):
            self.current = self._registered(images)
        return self.current

    def final(self, images: Tensor) -> Tensor:
        if self.config.group == "registered" and self.config.seeds > 1:
            return self._registered(images)
        return self._lazy(images)

    def _lazy(self, images: Tensor) -> Tensor:
        if self.seed_group is None:
            return lazy_consensus(images)
        return self._over_all_seeds(lazy_consensus(images), len(images))

    def _registered(self, images: Tensor) -> Tensor:
        method = self.config.registration
        if self.seed_group is None:
            return registered_consensus(images, method=method)
        mean = registered_consensus(images, method=method, coarse=self._lazy(images))
        return self._over_all_seeds(mean, len(images))

    def _over_all_seeds(self, local_mean: Tensor, local_seeds: int) -> Tensor:
        return self.seed_group.sum(local_mean * local_seeds) / self.config.seeds


class InversionLoop:
    """The loop's state (G seeds' images, Adam, noise generator, consensus, loss history) and one
    iteration of it, :meth:`step` (eqs. 1, 12, sec. 3.5); :func:`run_inversion` drives it.

    The step is the hot path: no host-device synchronisation (losses stay on the device in
    ``history`` until a logging interval reads them), per-seed gradients in one batched call.

    ``seed_group`` (None: all seeds here) spreads the seeds over processes
    (``distributed.SeedGroup``): ``x`` holds only this process's slice ``owned`` of them, noise
    is drawn for all G and sliced (so each seed gets the noise a single process gives it), and
    ``history`` holds this process's part of every (seed-summed) loss.
    """

    def __init__(self, model, objective: Objective, labels: Tensor, image_shape,
                 config: InversionConfig, device=None, seed_group=None, client_step=None):
        self.device = torch.device(device or next(model.parameters()).device)
        if self.device.type == "cpu":
            keep_freed_memory()
        self.model, self.objective, self.config = model, objective, config
        self.client_step = client_step or functools.partial(per_seed_gradients, factored=True)
        self.labels = labels.to(self.device)
        self.shape = (config.seeds, len(self.labels), *image_shape)
        self.lo, self.hi = image_box(model, self.device)
        self.gen = torch.Generator(device=self.device).manual_seed(config.seed)
        x = torch.randn(self.shape, generator=self.gen, device=self.device) * config.init_std
        x = x.clamp_(self.lo, self.hi)
        self.start_images = x[0].detach().clone()
        self.seed_group = seed_group
        self.owned = slice(None) if seed_group is None else seed_group.owned(config.seeds)
        if seed_group is not None:
            x = x[self.owned].clone()
        self.x = x.requires_grad_(True)
        self.opt = torch.optim.Adam([self.x], lr=config.lr)
        self.consensus = _Consensus(config, seed_group)
        self.names = [t.name for _, t in objective.items()]
        self.history = torch.zeros(config.iterations, len(self.names) + 1, device=self.device)
        self.start_forces: dict[str, float] = {}

    def _state(self, x: Tensor, t: int | None) -> AttackState:
        """What the objective reads for images ``x``; ``t``: the iteration whose consensus to use
        (None: the current one, unchanged)."""
        objective, config = self.objective, self.config
        state = AttackState(images=x)
        if objective.needs_grads or objective.needs_bn:
            state.grads, state.bn = self.client_step(
                self.model, x, self.labels, with_bn=objective.needs_bn, mode=config.seed_mode,
                amp=config.amp)
        if objective.needs_consensus:
            current = self.consensus.current
            if t is None and current is not None:
                state.consensus = current
            else:  # before the first iteration the consensus is the lazy mean (iteration 0's)
                state.consensus = self.consensus.update(0 if t is None else t, x.detach())
        return state

    def forces(self) -> dict[str, float]:
        """Each weighted term's force on the current images (``Objective.forces``)."""
        x = self.x.detach().clone().requires_grad_(True)
        return self.objective.forces(self._state(x, None))

    def step(self, t: int) -> float:
        """Iteration ``t`` (0-based): loss, Adam step, Langevin noise, clamp; returns the lr."""
        config, x, objective = self.config, self.x, self.objective
        lr = cosine_with_warmup(t, config.iterations, config.lr, config.warmup)
        for group in self.opt.param_groups:
            group["lr"] = lr
        total, parts = objective.parts(self._state(x, t))
        self.opt.zero_grad(set_to_none=True)
        total.backward(inputs=[x])
        self.opt.step()
        with torch.no_grad():
            if config.alpha_noise:
                noise = torch.randn(self.shape, generator=self.gen, device=self.device)
                x.add_(noise if self.seed_group is None else noise[self.owned],
                       alpha=lr * config.alpha_noise)
            x.clamp_(self.lo, self.hi)
            self.history[t, 0] = total.detach()
            self.history[t, 1:] = torch.stack(list(parts.values()))
        return lr

    def snapshot(self, t: int) -> dict:
        """Everything a resumed run needs to continue bit-for-bit from iteration ``t``."""
        return {"iteration": t, "images": self.x.detach(), "optimizer": self.opt.state_dict(),
                "rng": self.gen.get_state(), "consensus": self.consensus.current,
                "history": self.history[:t], "start": self.start_images,
                "config": self.config.to_dict(), "labels": self.labels.cpu(),
                "shape": list(self.shape), "forces_start": self.start_forces}

    def restore(self, state: dict) -> int:
        """Load a :meth:`snapshot`; returns the iteration to continue from."""
        _check_resumable(state, self.config, self.labels, self.shape)
        with torch.no_grad():
            self.x.copy_(state["images"])
        self.opt.load_state_dict(state["optimizer"])
        self.gen.set_state(state["rng"].to(self.gen.get_state().device))
        self.consensus.current = state["consensus"]
        self.history[: state["iteration"]] = state["history"][: state["iteration"]]
        self.start_images = state["start"]
        self.start_forces = state.get("forces_start") or {}
        return int(state["iteration"])


def run_inversion(model, objective: Objective, labels: Tensor, image_shape, config: InversionConfig,
                  device=None, callback: Callable[[Progress], None] | None = None,
                  callback_every: int | None = None, checkpoint_dir: str | Path | None = None,
                  resume: bool = False, progress: bool = True, seed_group=None,
                  client_step=None) -> InversionResult:
    """Minimise ``objective`` over G seeds of a batch of ``len(labels)`` images (eq. 1).

    Every ``config.checkpoint_every`` iterations and on SIGINT/SIGTERM the state is saved
    atomically to ``checkpoint_dir``; ``resume=True`` continues from it and, on CPU, ends with
    exactly the images an uninterrupted run gives.

    ``seed_group`` (``distributed.SeedGroup``; None: one process) runs this process's share of
    the seeds; every process returns the same result for all G seeds. Checkpoints and callback
    images are then this process's seeds only (give each process its own ``checkpoint_dir``).
    """
    loop = InversionLoop(model, objective, labels, image_shape, config, device, seed_group, client_step)
    first = 0
    if resume and checkpoint_dir is not None:
        state = load_checkpoint(checkpoint_dir, loop.device)
        if state is not None:
            first = loop.restore(state)

    if first == 0:
        loop.start_forces = loop.forces()
    history, names = loop.history, loop.names
    every = callback_every or config.log_every
    started = time.perf_counter()
    bar = tqdm(range(first, config.iterations), initial=first, total=config.iterations,
               disable=not progress, desc="GradInversion", leave=False)
    with stop_on_signals() as stop:
        for t in bar:
            if stop:
                path = save_checkpoint(checkpoint_dir, loop.snapshot(t)) if checkpoint_dir else None
                raise InversionInterrupted(t, path)
            lr = loop.step(t)
            if (t + 1) % config.log_every == 0:  # the only host read of a loss in the loop
                bar.set_postfix(loss=f"{history[t, 0].item():.4g}", lr=f"{lr:.3g}")
            if checkpoint_dir and config.checkpoint_every and (t + 1) % config.checkpoint_every == 0:
                save_checkpoint(checkpoint_dir, loop.snapshot(t + 1))  # before a callback can fail
            if callback is not None and ((t + 1) % every == 0 or t + 1 == config.iterations):
                callback(Progress(t + 1, config.iterations, loop.x.detach(),
                                  dict(zip(["total", *names], history[t].tolist())), _pixels(model)))
    bar.close()
    if checkpoint_dir:
        save_checkpoint(checkpoint_dir, loop.snapshot(config.iterations))
    forces = {"start": loop.start_forces, "end": loop.forces()}
    final = loop.x.detach()
    to_pixels = _pixels(model)
    consensus = loop.consensus.final(final)
    if seed_group is not None:  # every process: all G seeds and the losses summed over them
        final, history = seed_group.gather(final, config.seeds), seed_group.sum(history)
    hist = history.cpu()
    return InversionResult(
        images=to_pixels(final), consensus=to_pixels(consensus),
        start=to_pixels(loop.start_images), labels=loop.labels.cpu(),
        history={name: hist[:, i].tolist() for i, name in enumerate(["total", *names])},
        config=config, iterations=config.iterations, seconds=time.perf_counter() - started,
        resumed_from=first, forces=forces)


def _pixels(model):
    return lambda x: model.denormalize(x).clamp(0, 1).cpu()


def _check_resumable(state: dict, config: InversionConfig, labels: Tensor, shape) -> None:
    saved = InversionConfig.from_dict(state["config"])
    differing = [k for k, v in config.to_dict().items()
                 if k not in ("log_every", "checkpoint_every") and saved.to_dict()[k] != v]
    if differing:
        raise InputError(f"checkpoint was made with a different configuration ({', '.join(differing)}); "
                         "use the same settings or a fresh --checkpoint directory")
    if list(state["shape"]) != list(shape) or not torch.equal(state["labels"], labels.cpu()):
        raise InputError(f"checkpoint is for images {tuple(state['shape'])} with labels "
                         f"{state['labels'].tolist()}, not {tuple(shape)} with {labels.tolist()}")
