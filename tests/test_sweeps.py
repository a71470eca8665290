"""Sweeps: the same jobs run in this process ('local') and through submitit's job path
('submitit-local', what 'slurm' submits), and the study caches their results either way."""

import os
import socket
import sys

import pytest
import torch

from gradinv_lib.errors import GradInvError, InputError, MissingAssetError
from gradinv_lib.runtime import sweeps
from gradinv_lib.runtime.sweep_store import SweepFailed
from gradinv_lib.runtime.sweeps import Job, PortableContext, executor_settings, run_jobs
from gradinv_lib.studies.batch_scaling import batch_scaling
from gradinv_lib.studies.common import StudyContext, load_results, load_tensors


def scaled_seed(ctx, factor):
    """A job that shows which context it ran with."""
    if factor < 0:
        raise ValueError("negative factor")
    return {"value": ctx.seed * factor, "notebook": ctx.notebook, "out": str(ctx.out)}


@pytest.fixture
def ctx(tmp_path):
    return StudyContext("sweep_test", seed=3, device="cpu", output_dir=tmp_path / "results")


def test_local_jobs_run_in_order_with_the_callers_context(ctx, monkeypatch):
    monkeypatch.delenv("GRADINV_EXECUTOR", raising=False)
    calls = []
    jobs = [Job(f"x{k}", lambda c, k: calls.append(c) or k * c.seed, {"k": k}) for k in (5, 1, 2)]
    assert run_jobs(ctx, jobs, "local") == [15, 3, 6]
    assert all(c is ctx for c in calls)  # the cached model is reused, nothing rebuilt


def test_executor_from_the_environment_and_bad_settings(monkeypatch):
    monkeypatch.setenv("GRADINV_EXECUTOR", "slurm")
    monkeypatch.setenv("GRADINV_EXECUTOR_OPTIONS", '{"timeout_min": 60, "slurm_partition": "gpu"}')
    assert executor_settings(None, {"timeout_min": 5}) == ("slurm", {"timeout_min": 5, "slurm_partition": "gpu"})
    assert executor_settings("local", {})[0] == "local"
    with pytest.raises(InputError, match="expected one of local, processes, submitit-local, slurm"):
        executor_settings("sge", {})
    monkeypatch.setenv("GRADINV_EXECUTOR_OPTIONS", "[1, 2]")
    with pytest.raises(InputError, match="JSON object"):
        executor_settings(None, {})


def test_default_executor_is_processes_on_a_multicore_cpu(monkeypatch):
    monkeypatch.delenv("GRADINV_EXECUTOR", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sweeps, "available_cores", lambda: 2)
    assert executor_settings(None, {}, n_jobs=3)[0] == "processes"
    assert executor_settings(None, {}, n_jobs=1)[0] == "local"          # nothing to share out
    monkeypatch.setenv("GRADINV_EXECUTOR", "local")
    assert executor_settings(None, {}, n_jobs=3)[0] == "local"          # the environment overrides
    monkeypatch.delenv("GRADINV_EXECUTOR")
    monkeypatch.setattr(sweeps, "available_cores", lambda: 1)
    assert executor_settings(None, {}, n_jobs=3)[0] == "local"
    monkeypatch.setattr(sweeps, "available_cores", lambda: 16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert executor_settings(None, {}, n_jobs=3)[0] == "local"          # one GPU: one process


def counted(ctx, factor, log):
    """A job that appends its factor to ``log`` each time it runs, and fails for a negative one
    unless ``log`` + ".fixed" exists."""
    with open(log, "a") as handle:
        handle.write(f"{factor}\n")
    if factor < 0 and not os.path.exists(f"{log}.fixed"):
        raise InputError(f"factor: expected a positive number, found {factor}")
    return ctx.seed * abs(factor)


def test_failures_keep_the_rest_and_a_rerun_runs_only_them(ctx, tmp_path):
    """A failed job is named with its exception's own line, the others' results are kept as they
    arrive (every executor: 'processes' and submitit below), and the same call afterwards runs
    only the failed job; a complete sweep leaves nothing kept behind."""
    log = str(tmp_path / "calls.txt")
    jobs = [Job(f"f{k}", counted, {"factor": k, "log": log}) for k in (2, -5, 7)]
    with pytest.raises(SweepFailed, match=r"^1 of 3 jobs failed: f-5 \(FAILED: InputError: factor: expected a "
                                          r"positive number, found -5\)\. The 2 finished jobs are kept in ") as info:
        run_jobs(ctx, jobs, "local")
    assert "\n" not in str(info.value) and isinstance(info.value.__cause__, InputError)  # the traceback
    assert sorted(open(log).read().split()) == ["-5", "2", "7"]
    assert len(list(info.value.store.glob("*.pkl"))) == 2
    open(f"{log}.fixed", "w").close()
    assert run_jobs(ctx, jobs, "local") == [6, 15, 21]
    assert sorted(open(log).read().split()) == ["-5", "-5", "2", "7"]     # only the failed job ran again
    assert not list(info.value.store.glob("*.pkl"))


def test_processes_name_every_failing_job(ctx):
    """'processes': spawned workers rebuild the context; every failing job is named in one error
    (results in order: see the batch-scaling sweep below)."""
    jobs = [Job("good", scaled_seed, {"factor": 1}), Job("bad", scaled_seed, {"factor": -1})]
    with pytest.raises(GradInvError, match=r"1 of 2 jobs failed: bad \(FAILED: ValueError: negative factor\)") as info:
        run_jobs(ctx, jobs, "processes", workers=2)
    assert len(list(info.value.store.glob("*.pkl"))) == 1      # the good job's result, kept as it arrived
    assert [r["value"] for r in run_jobs(ctx, jobs[:1], "local")] == [3]
    assert not list(info.value.store.glob("*.pkl"))
    with pytest.raises(InputError, match="takes options workers, threads"):
        run_jobs(ctx, jobs, "processes", timeout_min=5)


def test_local_takes_no_cluster_options(ctx):
    with pytest.raises(InputError, match="takes no options"):
        run_jobs(ctx, [Job("a", scaled_seed, {"factor": 1})], "local", timeout_min=5)


def test_missing_submitit_is_a_clear_error(ctx, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    with pytest.raises(MissingAssetError, match=r"gradinv\[cluster\]"):
        run_jobs(ctx, [Job("a", scaled_seed, {"factor": 1})], "slurm")


def test_portable_context_rebuilds_the_same_study(ctx):
    portable = PortableContext.of(ctx, device=None)
    rebuilt = portable.build()
    assert rebuilt is not ctx and rebuilt is portable.build()   # built once per process
    assert (rebuilt.seed, rebuilt.out, rebuilt.notebook, rebuilt.resolution) == (ctx.seed, ctx.out, ctx.notebook,
                                                                                 ctx.resolution)


@pytest.mark.slow  # ~25 s: a job array of fresh Python processes importing torch
def test_submitit_path_runs_jobs_in_other_processes(ctx):
    """submitit-local: pickled jobs, a rebuilt context, a job array, every failed job named in one
    error with its log, the finished ones kept and returned in order by the next call."""
    cloudpickle = pytest.importorskip("cloudpickle")
    pytest.importorskip("submitit")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # this test module is not installed
    try:
        jobs = [Job(f"f{k}", scaled_seed, {"factor": k}) for k in (2, 7)]
        with pytest.raises(GradInvError, match=r"1 of 3 jobs failed: bad \(FAILED: ValueError: negative factor; "
                                               r"log \S+_log\.err\)\. The 2 finished jobs are kept"):
            run_jobs(ctx, [*jobs, Job("bad", scaled_seed, {"factor": -1})], "submitit-local", timeout_min=5)
        results = run_jobs(ctx, jobs, "submitit-local", timeout_min=5)    # kept: nothing is submitted
        assert [r["value"] for r in results] == [6, 21]
        assert {r["out"] for r in results} == {str(ctx.out)} and results[0]["notebook"] == "sweep_test"
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def test_batch_scaling_sweep_same_in_processes_and_locally(tmp_path, monkeypatch):
    """The study's sweep: one job per (size, batch), cached summary and per-batch rows with the two
    reference rows of every batch, the tensors the notebook reads; two worker processes give the
    same per-batch metrics, in the same order, as this process (to float rounding: a worker has one
    torch thread), and the provenance names the threads of the process that computed each run."""
    monkeypatch.delenv("GRADINV_EXECUTOR", raising=False)
    monkeypatch.setattr(sweeps, "available_cores", lambda: 2)
    ctx = StudyContext("04_batch_scaling", device="cpu", output_dir=tmp_path)
    record = batch_scaling(ctx, batch_sizes=[1, 2], iterations=1, batches=2, executor="local")
    pooled = batch_scaling(StudyContext("04_batch_scaling", device="cpu", output_dir=tmp_path / "pooled"),
                           batch_sizes=[1, 2], iterations=1, batches=2, executor="processes", workers=2)
    key = lambda rec: [(r["row"], r["batch_size"], r["batch_seed"]) for r in rec["batch_rows"]]
    metrics = lambda rec: [r[m] for r in rec["batch_rows"] for m in ("psnr", "ssim")]
    assert key(pooled) == key(record) and metrics(pooled) == pytest.approx(metrics(record), rel=1e-6)
    node = {"host": socket.gethostname(), "device": "cpu"}
    assert pooled["provenance"]["computed_on"] == [{**node, "threads": 1}]     # cores // workers
    assert record["provenance"]["computed_on"] == [{**node, "threads": torch.get_num_threads()}]
    cached = load_results(tmp_path, "batch_scaling")
    assert [(r["batch_size"], r["row"]) for r in cached["rows"]] == [
        (b, name) for b in (1, 2) for name in ("reconstruction", "noise start", "mean colour")]
    assert record["settings"]["batch_sizes"] == [1, 2] and record["settings"]["seeds"] == 1
    ours = [r for r in cached["rows"] if r["row"] == "reconstruction"]
    assert all(r["batches"] == 2 and r["psnr"] is not None and r["psnr_std"] is not None for r in ours)
    assert len(cached["batch_rows"]) == 2 * 2 * 3 and all(r["iterations"] == 1 for r in cached["batch_rows"]
                                                         if r["row"] == "reconstruction")
    images = load_tensors(tmp_path, "batch_2_images")
    assert images["reconstruction"].shape == images["original"].shape == (2, 3, ctx.resolution, ctx.resolution)
    assert torch.isfinite(images["reconstruction"]).all()


def test_a_worker_whose_parent_is_gone_exits():
    """The watchdog of every 'processes' worker: once its parent is not the one it was started
    by (a killed notebook kernel), the worker exits instead of idling with its memory."""
    import subprocess
    code = ("import os; from gradinv_lib.runtime.sweeps import exit_with_parent; "
            "exit_with_parent(os.getppid() + 1, poll_s=0.01)")
    done = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert done.returncode == 1
