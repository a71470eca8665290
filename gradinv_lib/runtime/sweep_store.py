"""Each finished job's result kept on disk as it arrives, so that a sweep that fails, times out or
is interrupted keeps what it computed and a rerun runs only the jobs that are missing; and the
one-line report of the jobs that failed, with how to rerun just those."""

from __future__ import annotations

import hashlib
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

from gradinv_lib.errors import GradInvError, InputError
from gradinv_lib.io import atomic_write


def job_digest(job, context: tuple) -> str:
    """A job's identity: its key, function, arguments and the study context it runs in
    (``context``: notebook, profile, seed, resolution), never the executor or the device."""
    try:
        spec = pickle.dumps((job.key, job.fn.__module__, job.fn.__qualname__, sorted(job.kwargs.items()), context),
                            protocol=4)
    except Exception as exc:  # noqa: BLE001 - any pickling failure is the caller's argument
        raise InputError(f"job {job.key!r}: expected picklable arguments (each job's result is kept under a "
                         f"digest of them), found {type(exc).__name__}: {exc}") from None
    return hashlib.sha256(spec).hexdigest()[:20]


class JobStore:
    """``<folder>/<digest>.pkl`` per finished job, written atomically."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def path(self, digest: str) -> Path:
        return self.folder / f"{digest}.pkl"

    def has(self, digest: str) -> bool:
        return self.path(digest).exists()

    def get(self, digest: str):
        with self.path(digest).open("rb") as handle:
            return pickle.load(handle)

    def put(self, digest: str, result) -> None:
        atomic_write(self.path(digest), lambda f: pickle.dump(result, f, protocol=pickle.HIGHEST_PROTOCOL))

    def drop(self, digests) -> None:
        """Forget these jobs (the sweep is complete: its caller caches the results itself)."""
        for digest in digests:
            self.path(digest).unlink(missing_ok=True)


@dataclass(frozen=True)
class Failure:
    """One failed job: its key, where it ran (a cluster job id), its state (Slurm's FAILED,
    TIMEOUT, CANCELLED, OUT_OF_MEMORY, ...), the exception's own line and its log."""

    key: str
    state: str
    error: str
    job_id: str | None = None
    log: str | None = None

    def line(self) -> str:
        where = f"job {self.job_id}, " if self.job_id else ""
        log = f"; log {self.log}" if self.log else ""
        return f"{self.key} ({where}{self.state}: {self.error}{log})"


class SweepFailed(GradInvError):
    """Some jobs of a sweep failed; the others' results are kept in ``store`` for the rerun."""

    def __init__(self, failures: list[Failure], total: int, kept: int, store: Path):
        self.failures, self.total, self.kept, self.store = failures, total, kept, Path(store)
        super().__init__(f"{len(failures)} of {total} jobs failed: {'; '.join(f.line() for f in failures)}. "
                         f"The {kept} finished jobs are kept in {store}: run the same command again to run only "
                         f"the {len(failures)} missing (delete that folder to recompute all)")


def exception_text(exc: BaseException) -> str:
    """``Type: first line of the message`` of an exception raised in this process."""
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__


def exception_line(trace: str) -> str:
    """The exception's own line from a formatted traceback (``module.Type: message`` after the
    last frame, module dropped), not a log path or a note printed after it."""
    lines = [line for line in trace.rstrip().splitlines() if line.strip()]
    frames = [i for i, line in enumerate(lines) if line.startswith("  ")]
    rest = lines[frames[-1] + 1:] if frames else lines
    if not rest:
        return lines[-1].strip()[:300] if lines else "no traceback"
    return re.sub(r"^(?:\w+\.)+(?=\w+(?::|$))", "", rest[0].strip())[:300]
