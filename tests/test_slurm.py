"""Sweeps on a real Slurm (Debian's slurmctld/slurmd 22.05, one node of 2 CPUs, no accounting),
started by the fixture (``slurm_cluster.py``; as root, installing the packages when missing):
the results equal the local executor's, a cancelled and a failing job are named with their state
and their own error, a rerun submits only them, and an interrupted submitter (Ctrl-C on
``run_jobs`` or on ``gradinv reproduce --executor slurm``, or its death) leaves nothing queued,
``reproduce`` cancelling the jobs its kernels tagged even when their own cleanup was cut short."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import slurm_cluster
import torch

from gradinv_lib.errors import InputError
from gradinv_lib.runtime.slurm_state import cancel_tagged, job_ledger, tag_options
from gradinv_lib.runtime.sweep_store import SweepFailed
from gradinv_lib.runtime.sweeps import Job, run_jobs
from gradinv_lib.studies.batch_scaling import batch_scaling
from gradinv_lib.studies.common import StudyContext

pytestmark = pytest.mark.slow   # about 2 minutes with the cluster's start


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cloudpickle = pytest.importorskip("cloudpickle")
    pytest.importorskip("submitit")
    reason = slurm_cluster.unavailable()
    if reason:
        pytest.skip(reason)
    started = slurm_cluster.start(tmp_path_factory.mktemp("slurm"))
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = started.env["SLURM_CONF"]
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the nodes cannot import this test module
    try:
        yield started
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        os.environ.pop("SLURM_CONF") if saved is None else os.environ.update(SLURM_CONF=saved)
        started.stop()


def step(ctx, name, folder):
    """A job that logs each run in ``folder``; "bad" raises and "sleeper" sleeps (writing its Slurm
    job id first) until ``folder``/fixed exists."""
    folder = Path(folder)
    with open(folder / "calls.txt", "a") as handle:
        handle.write(name + "\n")
    fixed = (folder / "fixed").exists()
    if name == "bad" and not fixed:
        raise InputError("batches: expected a positive integer, found 0")
    if name == "sleeper" and not fixed:
        (folder / "sleeper.id").write_text(f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}")
        time.sleep(300)
    return {"name": name, "seed": ctx.seed, "threads": torch.get_num_threads()}


def test_a_study_on_slurm_gives_the_local_results(cluster, tmp_path, capfd):
    """04's sweep (2 batches: a job array of 2) on the cluster and in this process: the same rows,
    each recorded by the node that computed it (one thread: the CPU Slurm gave the job), under
    the profile's default time limit, which is said."""
    sizes = dict(batch_sizes=[1], iterations=1, batches=2)
    here = batch_scaling(StudyContext("04_batch_scaling", device="cpu", output_dir=tmp_path / "local"), **sizes,
                         executor="local")
    there = batch_scaling(StudyContext("04_batch_scaling", device="cpu", output_dir=tmp_path / "slurm"), **sizes,
                          executor="slurm")
    key = lambda rec: [(r["row"], r["batch_size"], r["batch_seed"], r.get("batch_ids")) for r in rec["batch_rows"]]
    metrics = lambda rec: [r[m] for r in rec["batch_rows"] for m in ("psnr", "ssim", "fft2d")]
    assert key(there) == key(here) and metrics(there) == pytest.approx(metrics(here), rel=1e-6)
    assert "time limit 20 min each (the quick profile's default; set timeout_min" in capfd.readouterr().err
    assert there["provenance"]["computed_on"] == [{"host": socket.gethostname(), "device": "cpu", "threads": 1}]
    runs = [r for r in there["batch_rows"] if r["row"] == "reconstruction"]
    assert all(r["node"]["slurm_job"].count("_") == 1 for r in runs)      # array tasks
    assert not list((tmp_path / "slurm" / "submitit" / "results").glob("*.pkl"))   # complete: nothing kept


def test_cancelled_and_failing_jobs_are_named_and_a_rerun_submits_only_them(cluster, tmp_path, capfd):
    ctx = StudyContext("sweep_slurm", seed=5, device="cpu", output_dir=tmp_path / "out")
    jobs = [Job(name, step, {"name": name, "folder": str(tmp_path)}) for name in ("ok1", "ok2", "bad", "sleeper")]

    def cancel_the_sleeper():
        marker = tmp_path / "sleeper.id"
        for _ in range(240):
            if marker.exists() and marker.read_text():
                subprocess.run(["scancel", marker.read_text()], check=True)
                return
            time.sleep(0.5)
    canceller = threading.Thread(target=cancel_the_sleeper, daemon=True)
    canceller.start()
    with pytest.raises(SweepFailed) as info:
        run_jobs(ctx, jobs, "slurm", timeout_min=5)
    canceller.join()
    message = str(info.value)
    sleeper = (tmp_path / "sleeper.id").read_text()
    array = sleeper.split("_")[0]
    assert "\n" not in message and message.startswith("2 of 4 jobs failed: ")
    assert (f"bad (job {array}_2, FAILED: InputError: batches: expected a positive integer, found 0; log "
            f"{tmp_path}/out/submitit/{array}_2/{array}_2_0_log.err)") in message
    assert f"sleeper (job {sleeper}, CANCELLED: cancelled (scancel" in message
    assert "The 2 finished jobs are kept in " in message and "to run only the 2 missing" in message
    assert "time limit 5 min each" in capfd.readouterr().err

    (tmp_path / "fixed").touch()
    results = run_jobs(ctx, jobs, "slurm", timeout_min=5)
    assert [r["name"] for r in results] == ["ok1", "ok2", "bad", "sleeper"] and {r["seed"] for r in results} == {5}
    assert {r["threads"] for r in results} == {1}
    calls = (tmp_path / "calls.txt").read_text().split()
    assert sorted(calls) == ["bad", "bad", "ok1", "ok2", "sleeper", "sleeper"]   # only the two ran again
    assert "2 of 4 jobs kept from an earlier run" in capfd.readouterr().err
    assert cluster.wait_until_empty(30) == []


NAP = '''
import sys, time
from gradinv_lib.studies.common import StudyContext
from gradinv_lib.runtime.sweeps import Job, run_jobs

def nap(ctx, seconds):
    time.sleep(seconds)

if __name__ == "__main__":
    ctx = StudyContext("sweep_nap", device="cpu", output_dir=sys.argv[1])
    run_jobs(ctx, [Job(f"nap{k}", nap, {"seconds": 300}) for k in range(3)], "slurm", timeout_min=10)
'''


def interrupt_when_running(cluster, command, sig, env=None, timeout_s=180):
    """Start ``command`` in its own process group, send ``sig`` to the group (what Ctrl-C in a
    terminal does) once one of its jobs runs; returns the queue 30 s later at most."""
    process = subprocess.Popen(command, start_new_session=True, env={**os.environ, **(env or {})},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + timeout_s
        while not any(entry.endswith("|RUNNING") for entry in cluster.queue()):
            assert process.poll() is None and time.monotonic() < end, process.stderr.read() if process.poll() else ""
            time.sleep(0.5)
        os.killpg(process.pid, sig)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return cluster.wait_until_empty(30)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_an_interrupted_or_killed_submitter_leaves_nothing_queued(cluster, tmp_path, sig):
    """Ctrl-C: run_jobs cancels its array; kill -9: the reaper process does."""
    script = tmp_path / "nap.py"
    script.write_text(NAP)
    assert interrupt_when_running(cluster, [sys.executable, str(script), str(tmp_path / "out")], sig) == []


def test_an_interrupted_reproduce_leaves_nothing_queued(cluster, tmp_path):
    """``gradinv reproduce --executor slurm`` interrupted while a notebook's sweep runs."""
    nbformat = pytest.importorskip("nbformat")
    root = tmp_path / "root"
    (root / "notebooks").mkdir(parents=True)
    (root / "pyproject.toml").touch()
    cell = NAP.split('if __name__ == "__main__":')[0] + (
        'ctx = StudyContext("99_nap", device="cpu", output_dir=OUTPUT_DIR)\n'
        'run_jobs(ctx, [Job(f"nap{k}", nap, {"seconds": 300}) for k in range(3)])\n')
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("PROFILE = 'quick'\nOUTPUT_DIR = None", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(cell)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "notebooks" / "99_nap.ipynb")
    gradinv = Path(sys.executable).with_name("gradinv")
    command = [str(gradinv), "reproduce", "--only", "99", "--no-progress", "--executor", "slurm",
               "--executor-options", '{"timeout_min": 10}']
    assert interrupt_when_running(cluster, command, signal.SIGINT, env={"GRADINV_ROOT": str(root)}) == []


def test_a_ledger_cancels_only_the_jobs_tagged_under_it(cluster, tmp_path):
    """What ``gradinv reproduce`` does after Ctrl-C, whatever became of the kernel's own cleanup:
    cancel the jobs that sweeps under its ledger submitted (the comment a user gave is kept)."""
    sbatch = lambda comment: subprocess.run(
        ["sbatch", "--parsable", f"--comment={comment}", f"--output={tmp_path}/%j.out", "--wrap", "sleep 300"],
        capture_output=True, text=True, check=True).stdout.strip()
    with job_ledger() as ledger:
        comment = tag_options({"slurm_comment": "mine", "timeout_min": 5})["slurm_comment"]
        ours, other = sbatch(comment), sbatch("mine")
        cancel_tagged(ledger)
        end = time.monotonic() + 30
        while any(entry.startswith(f"{ours}|") for entry in cluster.queue()) and time.monotonic() < end:
            time.sleep(0.5)
        left = [entry.split("|")[0] for entry in cluster.queue()]
    subprocess.run(["scancel", other], check=True)
    assert comment == f"mine {ledger.name}" and left == [other]
    assert cluster.wait_until_empty(30) == []
