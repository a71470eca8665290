"""Fan a study's independent jobs (one attack each) out to a cluster through submitit, or run
them here, through one code path: the study builds :class:`Job` s, :func:`run_jobs` returns
their results in order, and the study caches them exactly as it would after a local run.

Executors (``executor=`` or ``$GRADINV_EXECUTOR``; default ``local``):

* ``local``: in this process, one job after another (no extra dependency);
* ``slurm``: one Slurm job array through ``submitit`` (``pip install gradinv[cluster]``); the
  results and submitit's logs need a folder every node sees (default ``<results>/submitit``);
* ``submitit-local``: the same submitit path as subprocesses of this machine (a multi-GPU
  workstation, or a check of a sweep before sending it to Slurm).

Options for submitit's ``update_parameters`` (``timeout_min``, ``gpus_per_node``,
``slurm_partition``, ...) come as keyword arguments or as JSON in ``$GRADINV_EXECUTOR_OPTIONS``
(so ``gradinv reproduce --executor slurm`` reaches the notebooks' sweeps).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import GradInvError, InputError, MissingAssetError

EXECUTORS = ("local", "submitit-local", "slurm")


@dataclass(frozen=True)
class Job:
    """One independent unit of a sweep: ``fn(ctx, **kwargs)`` with a study context ``ctx``.

    ``fn`` must be a module-level function of an installed module (it is pickled by reference).
    """

    key: str
    fn: Callable[..., Any]
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PortableContext:
    """What a node needs to rebuild a ``StudyContext`` (its model and data load lazily there)."""

    notebook: str
    profile_name: str
    seed: int
    device: str | None          # None: the node's default (CUDA when it has it)
    resolution: int
    output_dir: str

    @classmethod
    def of(cls, ctx, device: str | None) -> "PortableContext":
        return cls(ctx.notebook, ctx.profile_name, ctx.seed, device, ctx.resolution, str(ctx.out))

    def build(self):
        """The context, built once per process (jobs of one array share a node's model)."""
        if self not in _CONTEXTS:
            from .studies.common import StudyContext
            _CONTEXTS[self] = StudyContext(self.notebook, self.profile_name, self.seed, self.device,
                                           self.resolution, self.output_dir)
        return _CONTEXTS[self]


_CONTEXTS: dict[PortableContext, Any] = {}


def run_on_node(context: PortableContext, fn: Callable, kwargs: dict):
    """What a cluster job runs: rebuild the context, run one job."""
    return fn(context.build(), **kwargs)


def executor_settings(executor: str | None, options: dict) -> tuple[str, dict]:
    """The executor name and its options: arguments first, then ``$GRADINV_EXECUTOR(_OPTIONS)``."""
    name = executor or os.environ.get("GRADINV_EXECUTOR") or "local"
    if name not in EXECUTORS:
        raise InputError(f"executor: expected one of {', '.join(EXECUTORS)}, found {name!r}")
    from_env = os.environ.get("GRADINV_EXECUTOR_OPTIONS", "").strip()
    try:
        env_options = json.loads(from_env) if from_env else {}
    except json.JSONDecodeError as exc:
        raise InputError(f"$GRADINV_EXECUTOR_OPTIONS: expected a JSON object, found {from_env!r} ({exc})") from None
    if not isinstance(env_options, dict):
        raise InputError(f"$GRADINV_EXECUTOR_OPTIONS: expected a JSON object, found {from_env!r}")
    return name, {**env_options, **options}


def _submitit():
    try:
        import submitit
    except ImportError:
        raise MissingAssetError("executor 'slurm'/'submitit-local' needs submitit, which is not installed: "
                                "pip install 'gradinv[cluster]' (or pip install submitit), or use "
                                "executor='local'") from None
    return submitit


def run_jobs(ctx, jobs: list[Job], executor: str | None = None, folder: str | Path | None = None,
             device: str | None = None, **options) -> list:
    """Run ``jobs`` and return their results in order.

    ``local`` calls ``job.fn(ctx, **job.kwargs)`` here with the caller's context (its cached
    model). The submitit executors send each node a :class:`PortableContext` instead, on
    ``device`` (default: the caller's for ``submitit-local``, the node's own for ``slurm``), as
    one job array, and wait for all of it; failed jobs are named together in one error.
    """
    name, options = executor_settings(executor, options)
    if name == "local":
        if options:
            raise InputError(f"executor 'local' takes no options, found {sorted(options)}")
        return [job.fn(ctx, **job.kwargs) for job in jobs]
    keys = [job.key for job in jobs]
    if len(set(keys)) != len(keys):
        raise InputError(f"job keys: expected unique names, found duplicates in {keys}")
    submitit = _submitit()
    folder = Path(folder) if folder else Path(ctx.out) / "submitit"
    engine = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm" if name == "slurm" else "local")
    engine.update_parameters(name=f"gradinv-{ctx.notebook}", **options)
    portable = PortableContext.of(ctx, device if device or name == "slurm" else ctx.device)
    with engine.batch():
        submitted = [engine.submit(run_on_node, portable, job.fn, job.kwargs) for job in jobs]
    results, failed = [], []
    for job, handle in zip(jobs, submitted):
        try:
            results.append(handle.result())
        except Exception as exc:  # noqa: BLE001 - report every failed job, not only the first
            failed.append(f"{job.key} ({type(exc).__name__}; log {handle.paths.stderr})")
    if failed:
        raise GradInvError(f"{len(failed)} of {len(jobs)} jobs failed: {'; '.join(failed)}")
    return results
