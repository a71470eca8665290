"""The submitit executors of ``sweeps.run_jobs``: submit the missing jobs as one job array (Slurm,
or subprocesses of this machine for 'submitit-local'), then watch them one by one, handing each
result over as it arrives. A failed job is named with its Slurm state and its exception's own
line; a job that died without a result (cancelled, timed out, its node lost) is named from the
job state, which comes from scontrol/sacct (``slurm_state``), never from polling accounting that
the cluster may not keep. Interrupting the submitter (Ctrl-C, SIGTERM, or its death: a reaper
process) cancels the array; no wait is endless (deadlines below)."""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from gradinv_lib.errors import GradInvError, MissingAssetError

from . import slurm_state
from .sweep_store import Failure, exception_line

RESULT_GRACE_S = 30.0   # a finished job's result file may take this long to appear on a shared file system
POLL_S = (2.0, 10.0)    # seconds between polls in the first minute, and after it

WHY = {"CANCELLED": "cancelled (scancel, preemption or an administrator) before it wrote a result",
       "TIMEOUT": "ran past its time limit of {limit} min (raise timeout_min)",
       "OUT_OF_MEMORY": "ran out of memory (raise mem_gb)",
       "NODE_FAIL": "its node failed", "BOOT_FAIL": "its node failed to boot", "PREEMPTED": "preempted",
       "DEADLINE": "reached its deadline before it ran"}


def load_submitit():
    try:
        import submitit
    except ImportError:
        raise MissingAssetError("executor 'slurm'/'submitit-local' needs submitit, which is not installed: "
                                "pip install 'gradinv[cluster]' (or pip install submitit), or use "
                                "executor='local'") from None
    return submitit


def _say(text: str) -> None:
    print(f"gradinv sweep: {text}", file=sys.stderr, flush=True)


def log_cause(path: Path) -> str:
    """The last line of a job's error log that is not Slurm's own (srun:, slurmstepd:)."""
    try:
        lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no result and no error log"
    own = [ln for ln in lines if not ln.startswith(("srun:", "slurmstepd:"))]
    return (own or lines or ["no result, empty error log"])[-1][:300]


class _Watch:
    """One submitted job: what was seen of it, for its deadlines."""

    def __init__(self, key: str, handle):
        self.key, self.handle = key, handle
        self.started = self.gone = self.terminal = self.errored = None
        self.error: str | None = None


def run_submitit(cluster: str, folder: Path, name: str, options: dict, calls: list[tuple[str, Callable, tuple]],
                 on_result: Callable[[int, object], None], limit_note: str = "") -> list[Failure]:
    """Submit ``calls`` ((key, fn, args) each) as one array; call ``on_result(i, result)`` as each
    job's result arrives; return the failed jobs. ``options`` must hold ``timeout_min`` (where it
    came from: ``limit_note``, said with it)."""
    submitit = load_submitit()
    engine = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
    engine.update_parameters(name=name, **(slurm_state.tag_options(options) if cluster == "slurm" else options))
    with engine.batch():
        handles = [engine.submit(fn, *args) for _, fn, args in calls]
    arrays = sorted({h.job_id.split("_")[0] for h in handles}) if cluster == "slurm" else []
    _say(f"{len(handles)} jobs submitted" + (f" as Slurm job {', '.join(arrays)}" if arrays else " locally")
         + f", time limit {options['timeout_min']} min each{limit_note}, logs in {folder}")
    reaper = slurm_state.start_reaper(arrays) if arrays else None
    watches = [_Watch(key, h) for (key, _, _), h in zip(calls, handles)]
    previous = _sigterm_interrupts()
    try:
        return _wait(watches, arrays, float(options["timeout_min"]), on_result)
    except BaseException:
        if not slurm_state.cancel(arrays):
            reaper = None      # it cancels them once this process ends
        for w in watches if not arrays else ():
            w.handle.cancel(check=False)
        raise
    finally:
        _restore(previous)
        if reaper is not None:
            reaper.terminate()
            reaper.wait()


def _wait(watches: list[_Watch], arrays: list[str], limit_min: float, on_result) -> list[Failure]:
    """Poll until every job has a result or a failure. Deadlines: a job running longer than its
    time limit plus a grace (10%, at least 2 min) is cancelled and named; job states unreadable for
    as long is an error (the jobs are cancelled); a job Slurm no longer knows that wrote no result
    fails after ``RESULT_GRACE_S``."""
    index = {id(w): i for i, w in enumerate(watches)}
    pending, failures, began = list(watches), [], time.monotonic()
    overdue_s = limit_min * 60 + max(120.0, 6 * limit_min)
    last_read, summary = time.monotonic(), ""
    while pending:
        now = time.monotonic()
        for w in list(pending):
            outcome = _outcome(w.handle)
            if outcome is not None and outcome[0] == "success":
                on_result(index[id(w)], outcome[1])
                pending.remove(w)
            elif outcome is not None and w.error is None:
                w.error, w.errored = exception_line(outcome[1]), now
        try:
            states, last_read = _states(pending, arrays), now
        except slurm_state.StateUnreadable as exc:
            if now - last_read > overdue_s:
                raise GradInvError(f"Slurm's job states were unreadable for {overdue_s / 60:.0f} min (the time "
                                   f"limit plus a grace), so the sweep stops and cancels its jobs: {exc}") from None
            states = None
        for w in list(pending) if states is not None else ():
            failure = _judge(w, states.get(w.handle.job_id), now, limit_min, overdue_s, bool(arrays))
            if failure is not None:
                failures.append(failure)
                pending.remove(w)
        counts = {}
        for w in pending:
            state, reason = (states or {}).get(w.handle.job_id, ("UNKNOWN", ""))
            label = f"{state} ({reason})" if state == "PENDING" and reason not in ("", "None") else state
            counts[label] = counts.get(label, 0) + 1
        now_summary = ", ".join(f"{n} {label}" for label, n in sorted(counts.items()))
        if pending and now_summary != summary:
            summary = now_summary
            _say(f"{len(watches) - len(pending)} of {len(watches)} done; {summary}")
        if pending:
            time.sleep(POLL_S[0] if now - began < 60 else POLL_S[1])
    return failures


def _outcome(handle):
    """("success", result) or ("error", traceback) once the job wrote its result file, else None."""
    path = handle.paths.result_pickle
    if not path.exists():
        return None
    from submitit.core.utils import pickle_load
    try:
        return pickle_load(path)
    except EOFError:      # still being written
        return None


def _states(pending: list[_Watch], arrays: list[str]) -> dict:
    if arrays:
        return slurm_state.read_states(arrays, [w.handle.job_id for w in pending])
    return {w.handle.job_id: (w.handle.state, "") for w in pending}   # submitit-local: the process's state


def _judge(w: _Watch, seen, now: float, limit_min: float, overdue_s: float, slurm: bool) -> Failure | None:
    """The job's failure, if its state and what was seen of it say it has failed."""
    state, reason = seen or (None, "")
    log = str(w.handle.paths.stderr)
    if slurm:
        fail = lambda state, error: Failure(w.key, state, error, w.handle.job_id, log)
    else:   # submitit-local: the process's state (FINISHED, INTERRUPTED), named as Slurm would
        fail = lambda state, error: Failure(w.key, "FAILED" if w.error else {"INTERRUPTED": "CANCELLED"}.get(
            state, state), error, None, log)
    if state == "RUNNING" and w.started is None:
        w.started = now
    done = state in slurm_state.TERMINAL if slurm else state not in (None, "RUNNING")
    if w.error is not None and (done or now - w.errored > RESULT_GRACE_S):
        return fail(state if done else "FAILED", w.error)
    if done:
        w.terminal = w.terminal or now
        if now - w.terminal > RESULT_GRACE_S or state in WHY:
            return fail(state, WHY.get(state, "").format(limit=limit_min) or log_cause(log))
    elif state is None:
        w.gone = w.gone or now
        if now - w.gone > RESULT_GRACE_S:
            note = slurm_state.accounting_note()
            return fail("UNKNOWN", "Slurm no longer knows the job and it wrote no result"
                        + (f" (sacct: {note}; its final state is lost)" if note else ""))
    elif state == "PENDING" and reason in slurm_state.HOPELESS:
        slurm_state.cancel([w.handle.job_id])
        return fail("PENDING", f"cannot start: {reason} (the partition cannot grant what the job asks)")
    elif w.started is not None and now - w.started > overdue_s:
        if slurm:
            slurm_state.cancel([w.handle.job_id])
        else:
            w.handle.cancel(check=False)
        return fail(state, f"still {state} {(now - w.started) / 60:.0f} min after it started, past its time "
                           f"limit of {limit_min:g} min; cancelled")
    return None


def _sigterm_interrupts():
    """SIGTERM (a notebook kernel being shut down) raises KeyboardInterrupt, so the array is cancelled."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    return signal.signal(signal.SIGTERM, interrupt)


def _restore(previous) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)
