"""Fan a study's independent jobs (one attack each) out to a cluster through submitit, or run
them here, through one code path: the study builds :class:`Job` s, :func:`run_jobs` returns
their results in order, and the study caches them exactly as it would after a local run.

Executors (``executor=`` or ``$GRADINV_EXECUTOR``; default: ``processes`` on a machine with at
least two cores and no CUDA when there are several jobs, ``local`` otherwise):

* ``local``: in this process, one job after another (no extra dependency);
* ``processes``: a pool of ``workers`` processes on this machine (default: one per core, at most
  one per job), each with ``cores // workers`` torch threads; started with 'spawn' (forking a
  process whose torch thread pools already run is unsafe), each rebuilds the study context once;
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
import pickle
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import GradInvError, InputError, MissingAssetError

EXECUTORS = ("local", "processes", "submitit-local", "slurm")


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


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def default_executor(n_jobs: int | None = None) -> str:
    """'processes' for several jobs on a machine with >= 2 cores and no CUDA, else 'local'."""
    import torch
    if (n_jobs is not None and n_jobs < 2) or available_cores() < 2 or torch.cuda.is_available():
        return "local"
    return "processes"


def executor_settings(executor: str | None, options: dict, n_jobs: int | None = None) -> tuple[str, dict]:
    """The executor name and its options: arguments first, then ``$GRADINV_EXECUTOR(_OPTIONS)``,
    then :func:`default_executor` for ``n_jobs`` jobs."""
    name = executor or os.environ.get("GRADINV_EXECUTOR") or default_executor(n_jobs)
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


def _run_here(ctx, job: Job):
    try:
        return job.fn(ctx, **job.kwargs)
    except Exception as exc:
        exc.add_note(f"gradinv sweep: job {job.key!r} failed")
        raise


def _start_worker(threads: int, parent: int) -> None:
    """Worker initialiser: this process's share of the cores, and a watchdog that ends the
    worker when its parent is gone (a killed notebook kernel must not leave workers behind)."""
    import threading

    import torch
    torch.set_num_threads(threads)
    threading.Thread(target=exit_with_parent, args=(parent,), daemon=True).start()


def exit_with_parent(parent: int, poll_s: float = 2.0) -> None:
    """Return never: poll until this process's parent is no longer ``parent``, then exit(1)."""
    import time
    while os.getppid() == parent:
        time.sleep(poll_s)
    os._exit(1)


def run_in_worker(context: PortableContext, fn: Callable, kwargs: dict) -> bytes:
    """What a 'processes' worker runs: one job, its result pickled here with plain pickle (tensors
    travel as bytes, not as shared-memory handles that die with the worker)."""
    return pickle.dumps(run_on_node(context, fn, kwargs), protocol=pickle.HIGHEST_PROTOCOL)


def _gather(jobs: list[Job], handles: list, where: Callable[[Any], str]) -> list:
    """Results of ``handles`` (futures) in job order; every failed job named in one error."""
    results, failed = [], []
    for job, handle in zip(jobs, handles):
        try:
            results.append(handle.result())
        except Exception as exc:  # noqa: BLE001 - report every failed job, not only the first
            lines = str(exc).strip().splitlines()   # submitit's error holds the whole traceback
            failed.append(f"{job.key} ({type(exc).__name__}: {lines[-1][:200] if lines else ''}{where(handle)})")
    if failed:
        raise GradInvError(f"{len(failed)} of {len(jobs)} jobs failed: {'; '.join(failed)}")
    return results


@contextmanager
def _main_script_hidden(jobs: list[Job]):
    """Spawned workers re-import the parent's main script, so a script without an ``if __name__ ==
    "__main__"`` guard would rerun itself in each of them. Jobs of installed modules do not need
    it: hide the script while the workers start (unless a job's function lives there)."""
    main = sys.modules.get("__main__")
    if main is None or any(getattr(job.fn, "__module__", None) == "__main__" for job in jobs):
        yield
        return
    saved = {k: main.__dict__[k] for k in ("__spec__", "__file__") if k in main.__dict__}
    main.__spec__ = None
    main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        main.__dict__.update(saved)


def _run_processes(ctx, jobs: list[Job], workers: int | None = None, threads: int | None = None) -> list:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    cores = available_cores()
    workers = max(1, min(int(workers or cores), len(jobs)))
    threads = max(1, int(threads or cores // workers))
    portable = PortableContext.of(ctx, ctx.device)
    before = set(multiprocessing.active_children())
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker, initargs=(threads, os.getpid()))
    try:
        with _main_script_hidden(jobs):   # every worker starts within the first submits
            futures = [pool.submit(run_in_worker, portable, job.fn, job.kwargs) for job in jobs]
        return [pickle.loads(r) for r in _gather(jobs, futures, lambda _: "")]
    except BaseException:  # Ctrl-C or a failed job: stop the running jobs now, not at their end
        pool.shutdown(wait=False, cancel_futures=True)
        for worker in set(multiprocessing.active_children()) - before:
            worker.terminate()
        raise
    finally:
        pool.shutdown(wait=True)


def run_jobs(ctx, jobs: list[Job], executor: str | None = None, folder: str | Path | None = None,
             device: str | None = None, **options) -> list:
    """Run ``jobs`` and return their results in order.

    ``local`` calls ``job.fn(ctx, **job.kwargs)`` here with the caller's context (its cached
    model). ``processes`` (options ``workers``, ``threads``) and the submitit executors send each
    process or node a :class:`PortableContext` instead; submitit on ``device`` (default: the
    caller's for ``submitit-local``, the node's own for ``slurm``), as one job array. They wait
    for every job; failed jobs are named together in one error.
    """
    name, options = executor_settings(executor, options, len(jobs))
    if name == "local":
        if options:
            raise InputError(f"executor 'local' takes no options, found {sorted(options)}")
        return [_run_here(ctx, job) for job in jobs]
    keys = [job.key for job in jobs]
    if len(set(keys)) != len(keys):
        raise InputError(f"job keys: expected unique names, found duplicates in {keys}")
    if name == "processes":
        unknown = sorted(set(options) - {"workers", "threads"})
        if unknown:
            raise InputError(f"executor 'processes' takes options workers, threads; found {unknown}")
        return _run_processes(ctx, jobs, **options)
    submitit = _submitit()
    folder = Path(folder) if folder else Path(ctx.out) / "submitit"
    engine = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm" if name == "slurm" else "local")
    engine.update_parameters(name=f"gradinv-{ctx.notebook}", **options)
    portable = PortableContext.of(ctx, device if device or name == "slurm" else ctx.device)
    with engine.batch():
        submitted = [engine.submit(run_on_node, portable, job.fn, job.kwargs) for job in jobs]
    return _gather(jobs, submitted, lambda handle: f"; log {handle.paths.stderr}")
