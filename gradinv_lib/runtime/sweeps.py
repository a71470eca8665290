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

Every executor keeps each finished job's result as it arrives (``sweep_store``), so a rerun after
a failure or an interruption runs only the missing jobs; ``sweep_submitit`` watches the cluster
jobs (states, deadlines, cancelling the array when the submitter is interrupted).
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

from gradinv_lib.errors import InputError

from .nodes import job_threads, wait_while_parent
from .slurm_state import default_time_limit
from .sweep_store import Failure, JobStore, SweepFailed, exception_text, job_digest
from .sweep_submitit import run_submitit

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
            from gradinv_lib.studies.common import StudyContext
            _CONTEXTS[self] = StudyContext(self.notebook, self.profile_name, self.seed, self.device,
                                           self.resolution, self.output_dir)
        return _CONTEXTS[self]


_CONTEXTS: dict[PortableContext, Any] = {}


def run_in_context(context: PortableContext, fn: Callable, kwargs: dict):
    """Rebuild the context (once per process), run one job."""
    return fn(context.build(), **kwargs)


def run_on_node(context: PortableContext, fn: Callable, kwargs: dict):
    """What a cluster job runs: as many torch threads as CPUs given to it, then the job."""
    import torch
    torch.set_num_threads(job_threads())
    return run_in_context(context, fn, kwargs)


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


def _run_local(ctx, jobs: list[Job], arrived) -> tuple[list[Failure], BaseException | None]:
    """One job after another in this process; a failing job does not stop the others."""
    failures, first = [], None
    for j, job in enumerate(jobs):
        try:
            arrived(j, job.fn(ctx, **job.kwargs))
        except Exception as exc:  # noqa: BLE001 - report every failed job, not only the first
            failures.append(Failure(job.key, "FAILED", exception_text(exc)))
            first = first or exc
    return failures, first


def _start_worker(threads: int, parent: int) -> None:
    """Worker initialiser: this process's share of the cores, and a watchdog that ends the
    worker when its parent is gone (a killed notebook kernel must not leave workers behind)."""
    import threading

    import torch
    torch.set_num_threads(threads)
    threading.Thread(target=exit_with_parent, args=(parent,), daemon=True).start()


def exit_with_parent(parent: int, poll_s: float = 2.0) -> None:
    """Return never: poll until this process's parent is no longer ``parent``, then exit(1)."""
    wait_while_parent(parent, poll_s)
    os._exit(1)


def run_in_worker(context: PortableContext, fn: Callable, kwargs: dict) -> bytes:
    """What a 'processes' worker runs: one job, its result pickled here with plain pickle (tensors
    travel as bytes, not as shared-memory handles that die with the worker)."""
    return pickle.dumps(run_in_context(context, fn, kwargs), protocol=pickle.HIGHEST_PROTOCOL)


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


def _run_processes(ctx, jobs: list[Job], arrived, workers: int | None = None,
                   threads: int | None = None) -> tuple[list[Failure], BaseException | None]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    cores = available_cores()
    workers = max(1, min(int(workers or cores), len(jobs)))
    threads = max(1, int(threads or cores // workers))
    portable = PortableContext.of(ctx, ctx.device)
    before = set(multiprocessing.active_children())
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker, initargs=(threads, os.getpid()))
    failures, first = [], None
    try:
        with _main_script_hidden(jobs):   # every worker starts within the first submits
            futures = {pool.submit(run_in_worker, portable, job.fn, job.kwargs): j for j, job in enumerate(jobs)}
        for future in as_completed(futures):
            j = futures[future]
            try:
                arrived(j, pickle.loads(future.result()))
            except Exception as exc:  # noqa: BLE001 - report every failed job, not only the first
                failures.append(Failure(jobs[j].key, "FAILED", exception_text(exc)))
                first = first or exc
        return failures, first
    except BaseException:  # Ctrl-C: stop the running jobs now, not at their end
        pool.shutdown(wait=False, cancel_futures=True)
        for worker in set(multiprocessing.active_children()) - before:
            worker.terminate()
        raise
    finally:
        pool.shutdown(wait=True)


def _run_submitit(ctx, jobs: list[Job], arrived, cluster: str, folder: Path, device: str | None,
                  options: dict) -> tuple[list[Failure], None]:
    if "slurm_time" in options:
        raise InputError("executor options: give the time limit as timeout_min (minutes), found slurm_time")
    limit = ("" if "timeout_min" in options
             else f" (the {ctx.profile_name} profile's default; set timeout_min to change it)")
    options = {"timeout_min": default_time_limit(ctx.profile_name), **options}
    portable = PortableContext.of(ctx, device if device or cluster == "slurm" else ctx.device)
    calls = [(job.key, run_on_node, (portable, job.fn, job.kwargs)) for job in jobs]
    return run_submitit(cluster, folder, f"gradinv-{ctx.notebook}", options, calls, arrived, limit), None


def run_jobs(ctx, jobs: list[Job], executor: str | None = None, folder: str | Path | None = None,
             device: str | None = None, **options) -> list:
    """Run ``jobs`` and return their results in order.

    ``local`` calls ``job.fn(ctx, **job.kwargs)`` here with the caller's context (its cached
    model). ``processes`` (options ``workers``, ``threads``) and the submitit executors send each
    process or node a :class:`PortableContext` instead; submitit on ``device`` (default: the
    caller's for ``submitit-local``, the node's own for ``slurm``), as one job array, each job
    with ``timeout_min`` (default: the profile's, ``slurm_state.DEFAULT_TIME_LIMIT_MIN``) and as
    many torch threads as CPUs given. Every executor keeps each finished job's result in
    ``<folder>/results`` (default folder ``<results>/submitit``) as it arrives and runs only the
    jobs not kept there; failed jobs are named together in one :class:`SweepFailed`, the rest kept
    for the rerun. A complete sweep's kept results are removed (the caller caches them).
    """
    name, options = executor_settings(executor, options, len(jobs))
    keys = [job.key for job in jobs]
    if len(set(keys)) != len(keys):
        raise InputError(f"job keys: expected unique names, found duplicates in {keys}")
    if name == "local" and options:
        raise InputError(f"executor 'local' takes no options, found {sorted(options)}")
    if name == "processes" and set(options) - {"workers", "threads"}:
        raise InputError(f"executor 'processes' takes options workers, threads; found {sorted(options)}")
    folder = Path(folder) if folder else Path(ctx.out) / "submitit"
    store = JobStore(folder / "results")
    digests = [job_digest(job, (ctx.notebook, ctx.profile_name, ctx.seed, ctx.resolution)) for job in jobs]
    results = {i: store.get(d) for i, d in enumerate(digests) if store.has(d)}
    todo = [i for i in range(len(jobs)) if i not in results]
    if results:
        print(f"gradinv sweep: {len(results)} of {len(jobs)} jobs kept from an earlier run in {store.folder}; "
              f"running the other {len(todo)}", file=sys.stderr, flush=True)

    def arrived(j: int, result) -> None:
        store.put(digests[todo[j]], result)
        results[todo[j]] = result

    missing = [jobs[i] for i in todo]
    if not missing:
        failures, first = [], None
    elif name == "local":
        failures, first = _run_local(ctx, missing, arrived)
    elif name == "processes":
        failures, first = _run_processes(ctx, missing, arrived, **options)
    else:
        failures, first = _run_submitit(ctx, missing, arrived, "slurm" if name == "slurm" else "local", folder,
                                        device, options)
    if failures:
        raise SweepFailed(failures, len(jobs), len(results), store.folder) from first
    store.drop(digests)
    return [results[i] for i in range(len(jobs))]
