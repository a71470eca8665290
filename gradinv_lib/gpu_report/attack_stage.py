"""One attack stage of ``gradinv gpu-report``: a timed probe of its per-iteration cost, and the run
itself (eq. 1 by :func:`~gradinv_lib.attack.pipeline.gradinversion`), checkpointed every chunk and stopped
at a chunk's end when the call's deadline is near, so that the next call resumes it; a finished
run is scored beside the noise start and the mean-colour oracle and saved with its grid."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from gradinv_lib.attack.pipeline import gradinversion
from gradinv_lib.experiments.run import available_lpips, evaluate_attack, save_attack
from gradinv_lib.io import provenance, write_json_atomic
from gradinv_lib.metrics.identification import pixel_correlation_nn
from gradinv_lib.registration import REGISTRATIONS
from gradinv_lib.runtime.checkpoint import InversionInterrupted, load_checkpoint
from gradinv_lib.studies.aggregate import reference_scores

from .budget import OutOfTime
from .stages import StageSpec, attack_config

SUMMARY_METRICS = ("psnr", "psnr_registered", "ssim", "fft2d", "feature_dist", "lpips")


class StageStop(Exception):
    """Raised by :class:`DeadlineGuard` right after a checkpoint, when the next chunk would not
    leave time to finish the call."""

    def __init__(self, iteration: int):
        super().__init__(f"stopped at iteration {iteration} for the deadline")
        self.iteration = iteration


class DeadlineGuard:
    """A ``run_inversion`` callback, called every chunk right after its checkpoint: raises
    :class:`StageStop` if another chunk (at the rate measured so far, else ``prior_s`` per
    iteration) plus ``reserve_s`` would pass ``deadline`` (monotonic seconds)."""

    def __init__(self, deadline: float, every: int, prior_s: float, reserve_s: float):
        self.deadline, self.every, self.prior_s, self.reserve_s = deadline, every, prior_s, reserve_s
        self.first: tuple[float, int] | None = None

    def __call__(self, progress) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = (now, progress.iteration)
        done = progress.iteration - self.first[1]
        rate = (now - self.first[0]) / done if done > 0 else self.prior_s
        if progress.iteration < progress.total and now + 1.2 * self.every * rate + self.reserve_s > self.deadline:
            raise StageStop(progress.iteration)


def probe(spec: StageSpec, materials, iterations: int = 6, amp: bool = False) -> dict:
    """Seconds per iteration (median over the probe's steps after the first) and the stage's
    fixed cost (setup, labels, forces, consensus, scoring and saving), from a short run of the
    stage's own attack scored and saved as the real one is (into a scratch folder)."""
    started = time.monotonic()
    stamps: list[float] = []
    result = _attack(spec, materials, attack_config(spec, iterations, 1, amp, materials.seed).replace(register_every=100),
                     callback=lambda progress: stamps.append(time.monotonic()), callback_every=1)
    with tempfile.TemporaryDirectory() as scratch:
        finish(spec, materials, result, Path(scratch), extra={})
    total = time.monotonic() - started
    per_iteration = statistics.median(b - a for a, b in zip(stamps[1:], stamps[2:])) if len(stamps) > 2 else total
    return {"per_iteration_s": per_iteration, "overhead_s": max(0.0, total - iterations * per_iteration),
            "probe_s": total, "probe_iterations": iterations}


def _attack(spec: StageSpec, materials, config, **loop_options):
    model = materials.model(spec)
    _, update = materials.batch(spec)
    return gradinversion(model, update.without_labels(), config, device=materials.device, progress=False,
                         **loop_options)


def run_stage(spec: StageSpec, entry: dict, materials, clock, out_dir: Path, call: int, amp: bool) -> dict:
    """Run (or resume) one planned attack stage until it ends or the deadline nears; returns its
    state (also written to ``out_dir/state.json``): status, iterations done, segments per call."""
    state_path = out_dir / "state.json"
    state = _read_state(state_path, spec, entry)
    if state["status"] == "done":
        return state
    checkpoints = out_dir / "checkpoint"
    saved = load_checkpoint(checkpoints, materials.device)
    first = 0 if saved is None else int(saved["iteration"])
    del saved
    config = attack_config(spec, entry["iterations"], entry["every"], amp, materials.seed)
    guard = DeadlineGuard(clock.deadline, entry["every"], entry["per_iteration_s"], entry["overhead_s"])
    started = time.monotonic()
    try:
        result = _attack(spec, materials, config, checkpoint_dir=checkpoints, resume=True,
                         callback=guard, callback_every=entry["every"])
    except (StageStop, InversionInterrupted, OutOfTime) as stop:
        last = getattr(stop, "iteration", None)
        if last is None:  # the hard alarm: the loop stopped between checkpoints
            saved = load_checkpoint(checkpoints, "cpu")
            last = first if saved is None else int(saved["iteration"])
        _add_segment(state, call, first, last, time.monotonic() - started, "interrupted")
        write_json_atomic(state_path, state)
        if not isinstance(stop, StageStop):  # a signal or the alarm: the caller stops the call
            raise
        return state
    _add_segment(state, call, first, result.iterations, time.monotonic() - started, "scoring")
    scoring = time.monotonic()
    extra = {"stage": spec.to_dict(), "segments": state["segments"], "wall_time_total_s": state["wall_s"],
             "provenance": provenance(materials.device)}
    state["summary"] = finish(spec, materials, result, out_dir, extra)
    state["status"], state["scoring_s"] = "done", time.monotonic() - scoring
    state["wall_s"] += state["scoring_s"]
    write_json_atomic(state_path, state)
    return state


def finish(spec: StageSpec, materials, result, out_dir: Path, extra: dict) -> dict:
    """Score the consensus (and the noise start and mean-colour references, eq.-free oracles),
    identify it among the data set by pixel correlation, save grid.png/result.json/tensors.pt;
    returns the summary the report shows."""
    batch, _ = materials.batch(spec)
    lpips, lpips_missing = available_lpips(materials.device)
    evaluation = evaluate_attack(materials.model(spec), result, batch.images, batch.labels, lpips=lpips,
                                 score_seeds=False)
    references = reference_scores(batch.images, result.start, registration=REGISTRATIONS["similarity"],
                                  lpips=lpips)
    dataset = materials.dataset(spec)
    index = [dataset.ids.index(i) for i in batch.ids]
    paired = [index[p] for p in evaluation["pairing"]]
    hits = {"reconstruction": pixel_correlation_nn(result.consensus, dataset.images, paired)["hits"],
            "noise start": pixel_correlation_nn(result.start, dataset.images, index)["hits"]}
    summary = {"iterations": result.iterations, "batch": len(batch), "seeds": result.config.seeds,
               "labels_accuracy": evaluation["labels"].get("accuracy"),
               "identified": {k: int(v.sum()) for k, v in hits.items()},
               "gallery_size": len(dataset),
               "metrics": {name: {m: scores.get(m) for m in SUMMARY_METRICS}
                           for name, scores in (("reconstruction", evaluation["metrics"]),
                                                *references.items())},
               "lpips_unavailable": lpips_missing, "grid": str(out_dir / "grid.png")}
    save_attack(out_dir, result, evaluation, batch.images,
                extra={**extra, "references": references, "summary": summary})
    return summary


def _read_state(path: Path, spec: StageSpec, entry: dict) -> dict:
    import json
    if path.exists():
        return json.loads(path.read_text())
    return {"name": spec.name, "status": "planned", "planned_iterations": entry["iterations"],
            "iterations_done": 0, "segments": [], "wall_s": 0.0}


def _add_segment(state: dict, call: int, first: int, last: int, seconds: float, status: str) -> None:
    """Record that call ``call`` ran iterations [first, last) in ``seconds``."""
    state["segments"].append({"call": call, "from": first, "to": last, "seconds": seconds})
    state["iterations_done"], state["status"] = last, status
    state["wall_s"] += seconds
