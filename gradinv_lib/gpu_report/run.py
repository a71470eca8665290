"""One call of ``gradinv gpu-report``: plan (or read the plan), run the stages in priority order
until they are done or the deadline nears, and write the report after every stage."""

from __future__ import annotations

import time
from pathlib import Path

from gradinv_lib.io import provenance
from gradinv_lib.runtime.checkpoint import InversionInterrupted

from . import attack_stage, bench_stage
from .budget import Clock, OutOfTime
from .materials import Materials
from .plan import load_or_make_plan
from .report import export, read_json, write_report

RUNNERS = {"attack": attack_stage.run_stage, "bench": bench_stage.run_stage}


def run_report(stages, out: str | Path, clock: Clock, device, plan_minutes: float | None = None,
               amp: bool = False, seed: int = 0, export_to: str | Path | None = None) -> dict:
    """Plan and run ``stages`` into ``out`` within ``clock``'s deadline; resumes what an earlier
    call into ``out`` left unfinished. ``plan_minutes`` (None: the call's minutes) is the time
    the plan shares out, so that a plan may span several calls. Returns the report."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    materials = Materials(device, seed)
    calls = read_json(out / "report.json", {}).get("calls", [])
    call = {"call": len(calls) + 1, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "minutes": clock.limit_s / 60, "margin_s": clock.margin_s, "stopped": None}
    calls.append(call)
    by_name = {s.name: s for s in stages}
    plan, states = None, {}
    started = time.monotonic()

    def save():
        if plan is not None:  # what the stages wrote, also those a signal stopped
            states.update({e["name"]: read_json(out / e["name"] / "state.json", None) for e in plan["entries"]
                           if (out / e["name"] / "state.json").exists()})
        call["wall_s"] = clock.elapsed()
        call["stages_s"] = time.monotonic() - started
        report = write_report(out, plan, calls, states, provenance(materials.device))
        if export_to is not None:
            export(out, Path(export_to))
        return report

    with clock.hard_alarm():
        try:
            plan, call["planned_here"] = load_or_make_plan(out / "plan.json", stages, materials, clock,
                                                          plan_minutes or clock.limit_s / 60, amp)
            clock.log(("planned: " if call["planned_here"] else "plan kept: ") + "; ".join(
                f"{e['name']} {e.get('iterations', '')} {e['status']}".replace("  ", " ") for e in plan["entries"]))
            for entry in plan["entries"]:
                if entry["status"] == "skipped":
                    states[entry["name"]] = {"name": entry["name"], "status": "skipped", "reason": entry["reason"]}
                    continue
                spec = by_name[entry["name"]]
                clock.log(f"{spec.name}: running")
                states[spec.name] = RUNNERS[spec.kind](spec, entry, materials, clock, out / spec.name,
                                                       call["call"], amp)
                save()
                clock.log(f"{spec.name}: {states[spec.name]['status']}, "
                          f"{states[spec.name].get('iterations_done', '-')} iterations")
                if states[spec.name]["status"] != "done":
                    call["stopped"] = f"deadline: {spec.name} left for the next call"
                    break
        except InversionInterrupted as exc:
            call["stopped"] = f"signal: checkpointed at iteration {exc.iteration}"
        except OutOfTime as exc:
            call["stopped"] = f"out of time: {exc}"
    return save()
