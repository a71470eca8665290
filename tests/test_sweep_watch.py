"""How the submitter reads Slurm and when it gives up, without a cluster: scontrol's and sacct's
output parsed into task states, and the watch loop's deadlines on a fake clock (a job past its
time limit, a job Slurm forgot, states unreadable, a job that can never start)."""

import pickle
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from gradinv_lib.errors import GradInvError, InputError
from gradinv_lib.runtime import slurm_state, sweep_submitit
from gradinv_lib.runtime.sweep_store import exception_line

SCONTROL = (  # `scontrol show job -o 24` on Slurm 22.05 (fields abridged), one line per task or range
    "JobId=25 ArrayJobId=24 ArrayTaskId=1 JobName=gradinv-x UserId=root(0) JobState=CANCELLED Reason=None "
    "Dependency=(null) TimeLimit=00:20:00\n"
    "JobId=26 ArrayJobId=24 ArrayTaskId=0 JobName=gradinv-x JobState=RUNNING Reason=None TimeLimit=00:20:00\n"
    "JobId=24 ArrayJobId=24 ArrayTaskId=2-3,5%2 JobName=gradinv-x JobState=PENDING Reason=Resources\n")


def fake_run(replies):
    def run(args):
        out, err, rc = replies[args[0]]
        return subprocess.CompletedProcess(args, rc, out, err)
    return run


def test_states_from_scontrol_when_accounting_is_off(monkeypatch):
    monkeypatch.setattr(slurm_state, "_SACCT", {"available": None, "why": ""})
    monkeypatch.setattr(slurm_state, "_run", fake_run({
        "scontrol": (SCONTROL, "", 0), "sacct": ("", "Slurm accounting storage is disabled", 1)}))
    tasks = [f"24_{k}" for k in range(7)]
    states = slurm_state.read_states(["24"], tasks)
    assert states == {"24_0": ("RUNNING", "None"), "24_1": ("CANCELLED", "None"), "24_2": ("PENDING", "Resources"),
                      "24_3": ("PENDING", "Resources"), "24_5": ("PENDING", "Resources")}
    assert slurm_state.accounting_note() == "Slurm accounting storage is disabled"


def test_states_from_sacct_once_the_controller_forgot(monkeypatch):
    monkeypatch.setattr(slurm_state, "_SACCT", {"available": None, "why": ""})
    monkeypatch.setattr(slurm_state, "_run", fake_run({
        "scontrol": ("", "slurm_load_jobs error: Invalid job id specified", 1),
        "sacct": ("24_0|COMPLETED\n24_1|CANCELLED by 0\n24_[2-3]|PENDING\n", "", 0)}))
    assert slurm_state.read_states(["24"], ["24_0", "24_1", "24_2"]) == {
        "24_0": ("COMPLETED", ""), "24_1": ("CANCELLED", "")}
    monkeypatch.setattr(slurm_state, "_run", fake_run({"scontrol": ("", "Unable to contact slurm controller", 1)}))
    with pytest.raises(slurm_state.StateUnreadable, match="Unable to contact"):
        slurm_state.read_states(["24"], ["24_0"])


def test_exception_line_is_the_errors_own_line():
    trace = ('Traceback (most recent call last):\n  File "/x/submission.py", line 55, in process_job\n'
             '    result = delayed.result()\n           ^^^^^^^^^^^^^^^^\n'
             'gradinv_lib.errors.InputError: batches: expected a positive integer, found 0\n'
             'a note added to the exception\n')
    assert exception_line(trace) == "InputError: batches: expected a positive integer, found 0"


def test_default_time_limit_is_the_profiles():
    assert slurm_state.default_time_limit("quick") == 20 and slurm_state.default_time_limit("paper") == 720
    with pytest.raises(InputError, match="timeout_min"):
        slurm_state.default_time_limit("nobody's")


class Clock:
    def __init__(self):
        self.t = 0.0

    def monotonic(self):
        return self.t

    def sleep(self, seconds):
        self.t += seconds


def handle(tmp_path: Path, job_id: str):
    return SimpleNamespace(job_id=job_id, paths=SimpleNamespace(result_pickle=tmp_path / f"{job_id}_result.pkl",
                                                                stderr=tmp_path / f"{job_id}_log.err"))


@pytest.fixture
def watched(monkeypatch, tmp_path):
    """Run the watch loop on one job whose Slurm states come from ``script(t)``; returns
    (failures or the raised error, the clock's time, the jobs cancelled)."""
    pytest.importorskip("submitit")
    clock, cancelled = Clock(), []
    monkeypatch.setattr(sweep_submitit, "time", clock)
    monkeypatch.setattr(slurm_state, "cancel", lambda ids: cancelled.extend(ids))

    def run(script, limit_min=1.0):
        monkeypatch.setattr(slurm_state, "read_states", lambda arrays, tasks: script(clock.t))
        watch = sweep_submitit._Watch("job", handle(tmp_path, "24_0"))
        try:
            out = sweep_submitit._wait([watch], ["24"], limit_min, lambda i, r: None)
        except GradInvError as exc:
            out = exc
        return out, clock.t, cancelled
    return run


def test_a_job_past_its_time_limit_is_cancelled_and_named(watched):
    (failure,), t, cancelled = watched(lambda t: {"24_0": ("RUNNING", "None")})
    assert failure.state == "RUNNING" and "past its time limit of 1 min; cancelled" in failure.error
    assert 180 <= t <= 200 and cancelled == ["24_0"]          # 1 min + 2 min of grace, then the next poll


def test_a_job_slurm_forgot_without_a_result_fails_after_a_grace(watched, monkeypatch):
    monkeypatch.setattr(slurm_state, "_SACCT", {"available": False, "why": "Slurm accounting storage is disabled"})
    (failure,), t, _ = watched(lambda t: {"24_0": ("RUNNING", "None")} if t < 10 else {})
    assert failure.line().startswith("job (job 24_0, UNKNOWN: Slurm no longer knows the job and it wrote no result "
                                     "(sacct: Slurm accounting storage is disabled; its final state is lost)")
    assert 40 <= t <= 45


def test_unreadable_states_end_in_a_named_error(watched):
    def unreadable(t):
        raise slurm_state.StateUnreadable("scontrol show job 24: Unable to contact slurm controller")
    error, t, _ = watched(unreadable)
    assert isinstance(error, GradInvError) and "unreadable for 3 min" in str(error)
    assert "Unable to contact slurm controller" in str(error) and 180 <= t <= 200


def test_a_job_that_can_never_start_fails_at_once(watched):
    (failure,), t, cancelled = watched(lambda t: {"24_0": ("PENDING", "PartitionTimeLimit")})
    assert "cannot start: PartitionTimeLimit" in failure.error and t == 0 and cancelled == ["24_0"]


def test_a_cancelled_job_and_a_failed_one_are_named_with_their_state(watched, tmp_path):
    (failure,), _, _ = watched(lambda t: {"24_0": ("CANCELLED", "None")})
    assert failure.line().startswith("job (job 24_0, CANCELLED: cancelled (scancel, preemption or an administrator)")
    trace = 'Traceback (most recent call last):\n  File "x.py", line 1, in f\nValueError: negative factor\n'
    with open(tmp_path / "24_0_result.pkl", "wb") as f:
        pickle.dump(("error", trace), f)
    (failure,), _, _ = watched(lambda t: {"24_0": ("RUNNING", "None") if t < 4 else ("FAILED", "NonZeroExitCode")})
    assert failure.line() == f"job (job 24_0, FAILED: ValueError: negative factor; log {tmp_path}/24_0_log.err)"
