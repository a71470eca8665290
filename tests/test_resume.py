"""A real interruption: `gradinv invert` as a subprocess, stopped with SIGTERM mid-run, exits 130
with one line and a checkpoint; `--resume` then finishes with images bit-for-bit equal to an
uninterrupted run with the same seed (CPU, one thread)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gradinv_lib.runtime.checkpoint import FILENAME, load_checkpoint

ITERATIONS = 16
# Small CIFAR-style network at 32 px, 2 seeds with registered group consistency (its consensus
# is loop state that must survive the interruption), a checkpoint every 2 iterations.
ARGS = ["invert", "--model", "resnet18_cifar", "--dataset", "cifar10", "--resolution", "32",
        "--batch-size", "2", "--seeds", "2", "--group", "registered", "--iterations", str(ITERATIONS),
        "--checkpoint-every", "2", "--seed", "3", "--device", "cpu", "--no-progress"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _gradinv(*extra: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gradinv_lib.cli", *ARGS, *extra], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _wait_for_checkpoint_past(directory: Path, proc: subprocess.Popen, iteration: int,
                              timeout: float = 240) -> int:
    """Poll the periodic checkpoint until it records at least ``iteration``; its iteration."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"run ended before being interrupted: {proc.communicate()}")
        if (directory / FILENAME).exists():
            done = int(load_checkpoint(directory)["iteration"])  # atomic file: never half-written
            if done >= iteration:
                return done
        time.sleep(0.05)
    proc.kill()
    pytest.fail("no checkpoint appeared in time")


@pytest.mark.slow
def test_sigterm_then_resume_matches_uninterrupted_run(tmp_path):
    # Uninterrupted reference (runs alongside nothing else: one heavy process at a time).
    rc, _, err = _finish(_gradinv("--out", str(tmp_path / "full")))
    assert rc == 0, err

    ckpt = tmp_path / "ckpt"
    proc = _gradinv("--out", str(tmp_path / "resumed"), "--checkpoint", str(ckpt))
    seen = _wait_for_checkpoint_past(ckpt, proc, 2)
    proc.send_signal(signal.SIGTERM)
    rc, out, err = _finish(proc)
    assert rc == 130, (rc, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("gradinv invert: interrupted at iteration") and "--resume" in lines[0]
    stopped = int(load_checkpoint(ckpt)["iteration"])
    assert seen <= stopped < ITERATIONS, "the signal must land mid-run"
    assert not (tmp_path / "resumed" / "tensors.pt").exists(), "no result before the run finished"

    rc, out, err = _finish(_gradinv("--out", str(tmp_path / "resumed"), "--checkpoint", str(ckpt),
                                    "--resume"))
    assert rc == 0, err
    full = torch.load(tmp_path / "full" / "tensors.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resumed" / "tensors.pt", weights_only=True)
    for key in ("images", "consensus", "start", "labels", "originals"):
        assert torch.equal(full[key], resumed[key]), f"{key} differs after resume from {stopped}"
    assert full["history"] == resumed["history"]
    record = json.loads((tmp_path / "resumed" / "result.json").read_text())
    assert record["resumed_from"] == stopped and record["iterations"] == ITERATIONS


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path, capsys):
    """A checkpoint written with other settings is refused with one line, not silently mixed."""
    from gradinv_lib.cli.app import main
    ckpt = tmp_path / "ckpt"
    base = ["invert", "--model", "resnet18_cifar", "--dataset", "cifar10", "--resolution", "32",
            "--seeds", "1", "--iterations", "2", "--device", "cpu", "--no-progress",
            "--checkpoint", str(ckpt), "--out", str(tmp_path / "a")]
    assert main(base) == 0
    assert load_checkpoint(ckpt)["iteration"] == 2
    capsys.readouterr()
    assert main([*base, "--resume", "--lr", "0.05"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different configuration (lr)" in err[0]
    assert main([*base[:-2], "--resume", "--out", str(tmp_path / "b"), "--iterations", "2"]) == 0
