"""The bench stage of ``gradinv gpu-report``: ``gradinv bench``'s measurements at the paper's
setting and the loop's profile (:mod:`gradinv_lib.bench.profile`), run whole when the call has the
time the plan predicted for it, else left for the next call."""

from __future__ import annotations

import time
from pathlib import Path

from gradinv_lib.bench.profile import bench_with_profile, format_profile
from gradinv_lib.io import provenance, write_json_atomic

from .stages import StageSpec

SUMMARY_KEYS = ("train_ms", "bare_ms", "loop_ms", "loop_over_bare", "loop_over_train",
                "batched_vmap_ms_per_seed", "batched_loop_ms_per_seed", "batched_peak_mib", "loop_peak_mib")


def run_stage(spec: StageSpec, entry: dict, materials, clock, out_dir: Path, call: int, amp: bool) -> dict:
    """Run the bench and profile into ``out_dir`` (bench.json, bench.txt) if the predicted time
    is left before the deadline; returns the stage's state (also in ``out_dir/state.json``)."""
    import json
    state_path = out_dir / "state.json"
    if state_path.exists():
        state = json.loads(state_path.read_text())
        if state["status"] == "done":
            return state
    if clock.left() < entry["predicted_s"]:
        return {"name": spec.name, "status": "waiting",
                "reason": f"needs {entry['predicted_s']:.0f} s, {clock.left():.0f} s left in this call"}
    started = time.monotonic()
    report = bench_with_profile(spec.model, spec.resolution, spec.batch, spec.seeds, materials.device, amp)
    report["provenance"] = provenance(materials.device)
    write_json_atomic(out_dir / "bench.json", report)
    (out_dir / "bench.txt").write_text(format_stage(report) + "\n")
    state = {"name": spec.name, "status": "done", "call": call, "wall_s": time.monotonic() - started,
             "predicted_s": entry["predicted_s"],
             "summary": {k: report["bench"].get(k) for k in SUMMARY_KEYS},
             "loop_over_bare_profiled": report["profiles"]["1 seed(s)"]["loop_over_bare"]}
    write_json_atomic(state_path, state)
    return state


def format_stage(report: dict) -> str:
    """The bench's main numbers and every profile as text."""
    s, b = report["settings"], report["bench"]
    lines = [f"{s['model']} at {s['resolution']} px, batch {s['batch_size']}, AMP {'on' if s['amp'] else 'off'}, "
             f"channels-last {'on' if s['channels_last'] else 'off'}, random weights, on {report['provenance']['device']}",
             f"train {b['train_ms']:.1f} ms, bare double backward {b['bare_ms']:.1f} ms, loop {b['loop_ms']:.1f} ms "
             f"(one seed): loop/bare {b['loop_over_bare']:.2f}, loop/train {b['loop_over_train']:.2f}"]
    if "batched_vmap_ms_per_seed" in b:
        lines.append(f"{b['seeds']} seeds batched: {b['batched_vmap_ms_per_seed']:.1f} ms per seed (vmap), "
                     f"{b['batched_loop_ms_per_seed']:.1f} (loop), peak {b['batched_peak_mib']:.0f} MiB")
    for profile in report["profiles"].values():
        lines += ["", format_profile(profile)]
    return "\n".join(lines)
