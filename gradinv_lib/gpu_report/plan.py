"""The plan of ``gradinv gpu-report``: probe each stage's cost on this device, then give the time
there is to the stages by priority (each its minimum first, then the rest up to what it wants),
and keep the plan in ``plan.json`` so that a later call resumes the same iterations."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from gradinv_lib.attack.inversion import InversionLoop
from gradinv_lib.attack.pipeline import build_objective
from gradinv_lib.bench.speed import BenchCase, loop_step, setup_case
from gradinv_lib.bench.timing import interleaved_medians
from gradinv_lib.errors import InputError
from gradinv_lib.io import provenance, write_json_atomic

from . import attack_stage
from .stages import StageSpec

# bench stage: predicted seconds = BENCH_FIXED_S + loop passes of one seed and of G seeds, counted
# in bench_case and bench_with_profile at 3 repeats (warm-up + 3 rounds of each timed variant, the
# profile's 7 steps, 3 Adam comparisons of 3 steps, FLOP counting, peak memory): about 82 and 51,
# rounded up for the setup
BENCH_FIXED_S, BENCH_ONE_SEED_PASSES, BENCH_BATCHED_PASSES = 10.0, 90, 55


def probe_bench(spec: StageSpec, materials, amp: bool) -> dict:
    """One-seed and G-seed loop iterations of the bench's case, and the stage's predicted cost."""
    started = time.monotonic()
    cuda = materials.device.type == "cuda"
    case = BenchCase(spec.model, spec.resolution)
    model, update, labels, shape, config = setup_case(case, spec.batch, materials.device, amp, cuda)
    passes = {}
    for g in sorted({1, spec.seeds}):
        seeded = config.replace(seeds=g, group="registered" if g > 1 else "none")
        passes[g] = loop_step(InversionLoop(model, build_objective(model, update, seeded), labels, shape,
                                            seeded, materials.device))
    medians = interleaved_medians(passes, 2, materials.device)
    one, many = medians[1], medians[spec.seeds]
    return {"one_seed_s": one, "batched_s": many, "probe_s": time.monotonic() - started,
            "estimate_s": BENCH_FIXED_S + BENCH_ONE_SEED_PASSES * one + BENCH_BATCHED_PASSES * many}


def allot(stages: tuple[StageSpec, ...], probes: dict, available_s: float, chunk_s: float) -> list[dict]:
    """Plan entries in priority order: each stage's minimum (its fixed cost plus min_iterations,
    or the bench's estimate) while it fits, then the time left shared among the stages of each
    priority in turn, equally, up to what each wants (max_iterations, share of the call)."""
    order = sorted(stages, key=lambda s: s.priority)
    left, entries = available_s, {}
    for spec in order:
        p = probes[spec.name]
        need = p["estimate_s"] if spec.kind == "bench" else p["overhead_s"] + spec.min_iterations * p["per_iteration_s"]
        if need > left:
            entries[spec.name] = {"name": spec.name, "status": "skipped",
                                  "reason": f"needs {need:.0f} s, {left:.0f} s were left"}
            continue
        left -= need
        entries[spec.name] = {"name": spec.name, "status": "planned", "predicted_s": need,
                              **({} if spec.kind == "bench" else {"iterations": spec.min_iterations})}
    for priority in sorted({s.priority for s in order}):
        group = [s for s in order if s.priority == priority and s.kind == "attack"
                 and entries[s.name]["status"] == "planned"]
        while group and left > 1e-9:
            each = left / len(group)
            capped = []
            for spec in group:
                entry, rate = entries[spec.name], probes[spec.name]["per_iteration_s"]
                room = min((spec.max_iterations - entry["iterations"]) * rate,
                           spec.share * available_s - entry["predicted_s"])
                extra = max(0.0, min(each, room))
                added = int(extra / rate)
                entry["iterations"] += added
                entry["predicted_s"] += added * rate
                left -= added * rate
                if extra >= room:
                    capped.append(spec)
            group = [s for s in group if s not in capped] if capped else []
    for spec in order:
        entry = entries[spec.name]
        if spec.kind == "attack" and entry["status"] == "planned":
            rate = probes[spec.name]["per_iteration_s"]
            entry.update(every=max(1, min(entry["iterations"], int(chunk_s / rate))),
                         per_iteration_s=rate, overhead_s=probes[spec.name]["overhead_s"])
    return [entries[s.name] for s in order]


def make_plan(stages, materials, clock, plan_minutes: float, amp: bool, cache: Path) -> dict:
    """Probe every stage, then :func:`allot` the time from now to the plan's deadline
    (``plan_minutes`` from the call's start, less the margin). Each probe is kept in ``cache``
    as it ends, so that a call stopped among the probes does not repeat them."""
    probes = json.loads(cache.read_text()) if cache.exists() else {}
    for spec in stages:
        key = {"stage": spec.to_dict(), "amp": amp, "device": str(materials.device)}
        if any(probes.get(spec.name, {}).get(k) != v for k, v in key.items()):
            clock.log(f"probing {spec.name}")
            probes[spec.name] = {**key, **(
                probe_bench(spec, materials, amp) if spec.kind == "bench"
                else attack_stage.probe(spec, materials, amp=amp))}
            write_json_atomic(cache, probes)
    deadline = clock.start + 60.0 * plan_minutes - clock.margin_s
    available = deadline - time.monotonic()
    chunk = min(20.0, max(0.5, clock.margin_s / 4))
    return {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "plan_minutes": plan_minutes, "margin_s": clock.margin_s, "available_s": available,
            "chunk_s": chunk, "amp": amp, "seed": materials.seed,
            "stages": [s.to_dict() for s in stages], "probes": probes,
            "entries": allot(stages, probes, available, chunk), "provenance": provenance(materials.device)}


def load_or_make_plan(path: Path, stages, materials, clock, plan_minutes: float, amp: bool) -> tuple[dict, bool]:
    """(the plan in ``path`` if there is one, else a new one written there; whether it is new).
    A kept plan must be for the same stages, seed and AMP setting."""
    if path.exists():
        plan = json.loads(path.read_text())
        wanted = {"stages": [s.to_dict() for s in stages], "seed": materials.seed, "amp": amp}
        differing = [k for k, v in wanted.items() if plan.get(k) != v]
        if differing:
            raise InputError(f"{path} was planned with other {', '.join(differing)}; give the same options "
                             "or another --out to plan afresh")
        return plan, False
    plan = make_plan(stages, materials, clock, plan_minutes, amp, path.with_name("probes.json"))
    if not math.isfinite(plan["available_s"]) or plan["available_s"] <= 0:
        raise InputError(f"--minutes/--plan-minutes leave no time after the probes "
                         f"({plan['available_s']:.0f} s): give more minutes or a smaller --margin-s")
    write_json_atomic(path, plan)
    return plan, True
