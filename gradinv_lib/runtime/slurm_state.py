"""What a sweep's submitter asks Slurm: the state of each array task (``scontrol`` while the
controller remembers the job, ``sacct`` after that where the cluster keeps accounting), and
``scancel``; a reaper process that cancels the arrays if the submitter dies (a killed notebook
kernel); a ledger through which a parent (``gradinv reproduce``) cancels the jobs its children's
sweeps submitted; and the default time limit of a job in each profile.

Stdlib only: ``python -m gradinv_lib.runtime.slurm_state reap PID ARRAY...`` starts without torch."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .environment import environment_variable
from .nodes import wait_while_parent

# States in which a job will not run again (Slurm's job state codes).
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
            "BOOT_FAIL", "DEADLINE", "REVOKED")
# Pending reasons that never resolve by waiting: the job asks for what the partition cannot give.
HOPELESS = ("PartitionTimeLimit", "PartitionNodeLimit", "BadConstraints", "InvalidQOS", "InvalidAccount",
            "DependencyNeverSatisfied", "QOSMaxWallDurationPerJobLimit")

# Per-job time limit when the options set none: about 10x (quick, gpu) or 4x (paper) the longest job
# measured. quick: 106 s (a Table 4 row, 1200 iterations, one thread); gpu: 520 iterations of
# Lite0 at 224 px, 1.6 s each (14 min); paper: 20K iterations of ResNet-50 at batch 8, 2.8 h on an
# H100 (README, 'On a GPU'), slower GPUs such as the paper's V100 taking longer.
DEFAULT_TIME_LIMIT_MIN = {"quick": 20, "gpu": 120, "gpu_resnet50": 120, "paper": 720}


def default_time_limit(profile: str) -> int:
    """Minutes a job of ``profile`` may run when the executor options give no ``timeout_min``."""
    if profile not in DEFAULT_TIME_LIMIT_MIN:
        from gradinv_lib.errors import InputError
        raise InputError(f"profile {profile!r} has no default Slurm time limit: pass timeout_min (minutes) in "
                         "the executor options")
    return DEFAULT_TIME_LIMIT_MIN[profile]


class StateUnreadable(RuntimeError):
    """Neither scontrol nor sacct answered (the controller is down or unreachable)."""


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def _tasks(array: str, spec: str) -> list[str]:
    """Job ids of an ArrayTaskId field: "3", "2-5" or "2,4,6-9%2" -> ["<array>_2", ...]."""
    ids = []
    for part in spec.split("%")[0].split(","):
        low, _, high = part.partition("-")
        ids += [f"{array}_{k}" for k in range(int(low), int(high or low) + 1)]
    return ids


def _scontrol(array: str) -> dict[str, tuple[str, str]]:
    """{task id: (state, reason)} for every task the controller still remembers."""
    done = _run(["scontrol", "show", "job", "-o", array])
    if done.returncode:
        if "Invalid job id" in done.stderr:
            return {}          # forgotten (MinJobAge passed) or never accepted
        raise StateUnreadable(f"scontrol show job {array}: {done.stderr.strip() or done.returncode}")
    states = {}
    for line in done.stdout.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if "JobState" not in fields:
            continue
        ids = (_tasks(array, fields["ArrayTaskId"]) if fields.get("ArrayTaskId")
               else [fields.get("JobId", array)])
        for task in ids:
            states[task] = (fields["JobState"], fields.get("Reason", ""))
    return states


_SACCT: dict = {"available": None, "why": ""}


def _sacct(array: str) -> dict[str, tuple[str, str]]:
    """{task id: (state, "")} from accounting; {} (once said why) where the cluster keeps none."""
    if _SACCT["available"] is False:
        return {}
    try:
        done = _run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", array])
    except FileNotFoundError:
        done = subprocess.CompletedProcess([], 1, "", "sacct is not installed")
    if done.returncode:
        _SACCT.update(available=False, why=done.stderr.strip())
        return {}
    _SACCT["available"] = True
    states = {}
    for line in done.stdout.splitlines():
        job, _, state = line.partition("|")
        if "_" in job and "[" not in job:
            states[job] = (state.split()[0] if state else "UNKNOWN", "")
    return states


def read_states(arrays: list[str], tasks: list[str]) -> dict[str, tuple[str, str]]:
    """{task id: (state, pending reason)} for ``tasks`` of ``arrays``: scontrol first, sacct for
    the tasks the controller has forgotten; tasks neither knows are left out. States are Slurm's
    base names ("CANCELLED by 0" -> "CANCELLED")."""
    states: dict = {}
    for array in arrays:
        states.update(_scontrol(array))
    if any(t not in states for t in tasks):
        for array in arrays:
            states.update({k: v for k, v in _sacct(array).items() if k not in states})
    return {t: (states[t][0].split()[0], states[t][1]) for t in tasks if t in states}


def accounting_note() -> str:
    """Why sacct was not used ("" when it was, or was not needed)."""
    return _SACCT["why"] if _SACCT["available"] is False else ""


def cancel(arrays: list[str]) -> bool:
    """scancel the arrays (their finished tasks are unaffected); False if scancel failed. scancel
    runs in its own session and an interrupt of this process does not stop it: a notebook kernel
    being shut down signals its process group (ipykernel SIGTERMs its children), which killed
    scancel before its request reached the controller and left the array queued."""
    if not arrays:
        return True
    process = subprocess.Popen(["scancel", *arrays], start_new_session=True, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return process.wait(timeout=60) == 0
    except subprocess.TimeoutExpired:
        process.kill()
        return False


LEDGER = "GRADINV_SLURM_LEDGER"


@contextmanager
def job_ledger():
    """A folder named in ``$GRADINV_SLURM_LEDGER`` for the child processes started inside (a
    notebook kernel): their sweeps note in it that they submit, and tag each Slurm job with its
    name (``tag_options``), so that :func:`cancel_tagged` finds the jobs whatever became of them."""
    folder = Path(tempfile.mkdtemp(prefix="gradinv-jobs-"))
    try:
        with environment_variable(LEDGER, str(folder)):
            yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def tag_options(options: dict) -> dict:
    """Slurm ``options`` for a submission: under a ledger, noted in it first, and its tag added
    to the jobs' comment."""
    folder = Path(os.environ.get(LEDGER, ""))
    if not os.environ.get(LEDGER) or not folder.is_dir():
        return options
    (folder / "submitted").touch()
    return {**options, "slurm_comment": " ".join(filter(None, (options.get("slurm_comment"), folder.name)))}


def cancel_tagged(ledger: Path) -> None:
    """Cancel this user's queued jobs that carry ``ledger``'s tag, if any was submitted (quietly
    nothing where squeue cannot answer: it is a second line of defence)."""
    if not (ledger / "submitted").exists():
        return
    try:
        listed = _run(["squeue", "-h", "-u", str(os.geteuid()), "-o", "%F|%k"]).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return
    cancel(sorted({job for job, _, comment in (ln.partition("|") for ln in listed) if ledger.name in comment.split()}))


def start_reaper(arrays: list[str]) -> subprocess.Popen:
    """A process, in its own session (a terminal's Ctrl-C does not reach it), that cancels
    ``arrays`` once this process has died; terminate it when the sweep ends normally."""
    return subprocess.Popen([sys.executable, "-m", "gradinv_lib.runtime.slurm_state", "reap", str(os.getpid()), *arrays],
                            start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def reap(parent: int, arrays: list[str], poll_s: float = 1.0) -> None:
    """Wait while ``parent`` is this process's parent, then cancel ``arrays``."""
    wait_while_parent(parent, poll_s)
    cancel(arrays)


if __name__ == "__main__" and sys.argv[1:2] == ["reap"]:
    reap(int(sys.argv[2]), sys.argv[3:])
