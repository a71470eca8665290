"""Where one iteration of the inversion loop (eq. 1, sec. 3.5) spends its time, and what each
piece costs: a torch.profiler breakdown of the loop's own step by part (the client step's forward
and create_graph gradients, each objective term, the backward through both, Adam, Langevin
noise, the clamp), kernel launches per part, registration amortised at the paper's schedule;
an ablation that times the loop with one piece left out (or Adam fused / foreach) against the
full loop and the bare double backward; and whether fused or foreach Adam changes the images.

The loop is timed as it runs: terms and the client step are wrapped in profiler ranges only
(no synchronisation is added to the step).
"""

from __future__ import annotations

import functools
import statistics
from collections import defaultdict

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

from gradinv_lib.attack.inversion import InversionLoop
from gradinv_lib.attack.objectives import Objective, Term
from gradinv_lib.attack.pipeline import build_objective
from gradinv_lib.attack.seed_gradients import per_seed_gradients
from gradinv_lib.federated.client import target_gradients
from gradinv_lib.registration import registered_consensus

from .speed import BenchCase, bare_double_backward, bench_case, loop_step, registration_share, setup_case
from .timing import interleaved_times

CLIENT_STEP = "client step (forward, create_graph gradients)"
FIRST = 1000  # the profiled iterations: past warm-up, before registration starts


class _Annotated(Term):
    """A term evaluated inside a profiler range named after it."""

    def __init__(self, term: Term):
        self.term, self.name = term, term.name
        for flag in ("needs_grads", "needs_bn", "needs_consensus", "needs_logits"):
            setattr(self, flag, getattr(term, flag))

    def __call__(self, state):
        with record_function(f"term {self.name}"):
            return self.term(state)


def annotated(objective: Objective) -> Objective:
    """``objective`` with every term inside a profiler range ``term <name>``."""
    return Objective([(w, _Annotated(t)) for w, t in objective.items()])


def _annotated_client_step(*args, **kwargs):
    with record_function(CLIENT_STEP):
        return per_seed_gradients(*args, factored=True, **kwargs)


def _category(name: str) -> str:
    if name.startswith("term ") or name == CLIENT_STEP:
        return name
    if name.startswith("autograd::engine::evaluate_function"):
        return "backward (double backward and the terms')"
    if name.startswith("Optimizer."):
        return "Adam"
    if name in ("aten::randn", "aten::normal_", "aten::add_"):
        return "Langevin noise"
    if name.startswith("aten::clamp"):
        return "clamp to the image box"
    return "other (learning rate, loss history)"


def _inclusive_kernels(event) -> tuple[int, float, int]:
    """(kernels launched by ``event`` and its descendants, their device microseconds, aten ops
    among them: what launches kernels on a GPU, and costs dispatch time on any device)."""
    count, us = len(event.kernels), sum(k.duration for k in event.kernels)
    ops = int(event.name.startswith("aten::"))
    for child in event.cpu_children:
        c, u, o = _inclusive_kernels(child)
        count, us, ops = count + c, us + u, ops + o
    return count, us, ops


def breakdown(events, steps: int) -> dict:
    """Per part of the step: host milliseconds, device milliseconds, kernel launches and aten ops
    per iteration, from profiler ``events`` of ``steps`` iterations each inside a range "iteration"."""
    parts = []
    for event in events:  # host-side roots; device events (kernels, annotations) hang off them
        if event.cpu_parent is None and event.device_type == DeviceType.CPU:
            parts.extend(event.cpu_children if event.name == "iteration" else [event])
    out: dict[str, dict] = defaultdict(lambda: {"host_ms": 0.0, "device_ms": 0.0, "kernels": 0.0, "ops": 0.0})
    for event in parts:
        kernels, device_us, ops = _inclusive_kernels(event)
        row = out[_category(event.name)]
        row["host_ms"] += event.cpu_time_total / 1e3 / steps
        row["device_ms"] += device_us / 1e3 / steps
        row["kernels"] += kernels / steps
        row["ops"] += ops / steps
    return dict(out)


def _loop(model, update, labels, shape, config, device, objective=None, client_step=None):
    objective = objective if objective is not None else build_objective(model, update, config)
    return InversionLoop(model, objective, labels, shape, config, device, client_step=client_step)


def _without(objective: Objective, *names: str) -> Objective:
    return Objective([(w, t) for w, t in objective.items() if t.name not in names])


def _with_adam(loop: InversionLoop, **options) -> InversionLoop:
    loop.opt = torch.optim.Adam([loop.x], lr=loop.config.lr, **options)
    return loop


def adam_identity(make_loop, steps: int = 3) -> dict:
    """Images after ``steps`` iterations from the same start with Adam as the loop builds it and
    with ``foreach=True`` / ``fused=True``: bit-identical, or the largest difference."""
    reference = make_loop()
    for t in range(FIRST, FIRST + steps):
        reference.step(t)
    out = {}
    for name, options in (("foreach", {"foreach": True}), ("fused", {"fused": True})):
        try:
            loop = _with_adam(make_loop(), **options)
            for t in range(FIRST, FIRST + steps):
                loop.step(t)
        except (RuntimeError, ValueError) as exc:  # e.g. fused Adam on a device without it
            out[name] = {"available": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
            continue
        diff = (loop.x.detach() - reference.x.detach()).abs().max().item()
        out[name] = {"available": True, "bit_identical": torch.equal(loop.x, reference.x), "max_abs_diff": diff}
    return {"steps": steps, **out}


def profile_loop(model, update, labels, shape, config, device, steps: int = 5, warmup: int = 2,
                 repeats: int = 5) -> dict:
    """The profile of one case (see the module docstring); ``config.seeds`` seeds batched."""
    device = torch.device(device)
    objective = build_objective(model, update, config)
    make = functools.partial(_loop, model, update, labels, shape, config, device)
    loop = make(annotated(objective), _annotated_client_step)
    for t in range(FIRST, FIRST + warmup):
        loop.step(t)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for t in range(FIRST + warmup, FIRST + warmup + steps):
            with record_function("iteration"):
                loop.step(t)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    parts = breakdown(prof.events(), steps)
    top = sorted(prof.key_averages(), key=lambda e: -(e.self_device_time_total or e.self_cpu_time_total))[:12]
    variants = {
        "loop": loop_step(make()),
        "no BN prior": loop_step(make(_without(objective, "bn"))),
        "no TV, l2": loop_step(make(_without(objective, "tv", "l2"))),
        "no Langevin noise": loop_step(_loop(model, update, labels, shape, config.replace(alpha_noise=0.0), device)),
        "Adam foreach": loop_step(_with_adam(make(), foreach=True)),
    }
    if config.seeds > 1:
        variants["no group term"] = loop_step(make(_without(objective, "group")))
    if config.seeds == 1:
        images = loop.x.detach()[0]
        targets = target_gradients(update, model)
        variants["bare double backward"] = bare_double_backward(model, images, labels, targets, config.amp)
    adam = adam_identity(make)
    if adam["fused"]["available"]:
        variants["Adam fused"] = loop_step(_with_adam(make(), fused=True))
    times = {k: statistics.median(v) for k, v in interleaved_times(variants, repeats, device).items()}
    x = loop.x.detach()
    registration = statistics.median(interleaved_times(
        {"r": lambda: registered_consensus(x, method=config.registration)}, 2, device)["r"])
    return {
        "seeds": config.seeds, "batch_size": len(labels), "steps_profiled": steps,
        "parts": parts,
        "registration": registration_share(registration, times["loop"], config) if config.seeds > 1 else None,
        "variants_ms": {k: 1e3 * v for k, v in times.items()},
        "saved_ms": {k: 1e3 * (times["loop"] - v) for k, v in times.items() if k != "loop"},
        "loop_over_bare": times["loop"] / times["bare double backward"] if "bare double backward" in times else None,
        "adam": adam,
        "top_ops": [{"name": e.key, "calls_per_step": e.count / steps,
                     "self_device_ms": (e.self_device_time_total or 0) / 1e3 / steps,
                     "self_host_ms": e.self_cpu_time_total / 1e3 / steps} for e in top],
    }


def format_profile(report: dict) -> str:
    """One profile as a text table (per iteration)."""
    lines = [f"batch {report['batch_size']}, {report['seeds']} seed(s): per iteration, "
             f"{report['steps_profiled']} profiled",
             f"{'part':<48}{'host ms':>9}{'device ms':>10}{'kernels':>9}{'ops':>7}"]
    for name, row in sorted(report["parts"].items(), key=lambda kv: -max(kv[1]["host_ms"], kv[1]["device_ms"])):
        lines.append(f"{name:<48}{row['host_ms']:9.2f}{row['device_ms']:10.2f}{row['kernels']:9.0f}{row['ops']:7.0f}")
    reg = report.get("registration")
    if reg:
        lines.append(f"registration: {reg['registration_ms']:.1f} ms a call, {reg['registration_calls']} calls "
                     f"in the paper's 20K: {100 * reg['registration_share']:.2f}% of the loop")
    lines.append("variants (median ms; saved = loop - variant): " + ", ".join(
        f"{k} {v:.1f}" + (f" ({report['saved_ms'][k]:+.1f})" if k in report["saved_ms"] else "")
        for k, v in report["variants_ms"].items()))
    if report.get("loop_over_bare"):
        lines.append(f"loop / bare double backward: {report['loop_over_bare']:.2f}")
    adam = report["adam"]
    lines.append("Adam after {} steps: ".format(adam["steps"]) + "; ".join(
        f"{k}: " + (("bit-identical" if v["bit_identical"] else f"max |diff| {v['max_abs_diff']:.2e}")
                    if v["available"] else f"unavailable ({v['error']})")
        for k, v in adam.items() if k != "steps"))
    return "\n".join(lines)


def bench_with_profile(model_name: str, resolution: int, batch_size: int, seeds: int, device,
                       amp: bool = False, repeats: int = 3) -> dict:
    """``gradinv bench``'s measurements of one case (random weights; channels-last on CUDA, as
    the bench) and the loop's profile with one seed and with ``seeds`` seeds batched."""
    device = torch.device(device)
    channels_last = device.type == "cuda"
    case = BenchCase(model_name, resolution, repeats=repeats, batched=seeds > 1,
                     num_classes=None)
    out = {"bench": bench_case(case, batch_size, seeds, device, amp, channels_last), "profiles": {}}
    model, update, labels, shape, config = setup_case(case, batch_size, device, amp, channels_last)
    for g in sorted({1, seeds}):
        seeded = config.replace(seeds=g, group="registered" if g > 1 else "none")
        out["profiles"][f"{g} seed(s)"] = profile_loop(model, update, labels, shape, seeded, device,
                                                       repeats=repeats)
    out["settings"] = {"model": model_name, "resolution": resolution, "batch_size": batch_size,
                       "seeds": seeds, "amp": amp, "channels_last": channels_last, "repeats": repeats}
    return out
