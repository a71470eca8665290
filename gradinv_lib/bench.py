"""How fast the inversion loop runs against its own lower bounds: a training step, the bare
double-backward pass, one full iteration of our loop (every paper term on), G seeds batched versus
sequential, one registration call, label recovery (eq. 8) and peak memory.

Every time is the median over repeats after warm-up, with the variants of one case interleaved
(train, bare, loop, train, bare, loop, ...) so that their ratios come from the same moments of a
shared, noisy machine. Weights are random: speed does not depend on them.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .attack import build_objective
from .client import simulate_client, target_gradients
from .config import InversionConfig
from .inversion import InversionLoop, keep_freed_memory
from .io import provenance
from .labels import recover_labels_from_update
from .models import build_model
from .objectives import GradientMatching, Objective
from .registration import ConsensusSchedule, registered_consensus

PAPER = {"model": "resnet50", "resolution": 224, "batch_size": 8, "seeds": 8, "iterations": 20_000}
ASSUMED_TFLOPS = (10.0, 30.0, 100.0)  # sustained GPU throughputs for the projection (assumptions)


@dataclass(frozen=True)
class BenchCase:
    """One model at one resolution; ``batched``: also time G seeds batched vs one seed."""

    model: str
    resolution: int
    repeats: int = 5
    batched: bool = True


FULL_CASES = (
    BenchCase("resnet18_cifar", 32, repeats=7),
    BenchCase("resnet18", 64, repeats=5),
    BenchCase("resnet50", 224, repeats=2, batched=False),
    BenchCase("efficientnet_lite0", 64, repeats=5),
    BenchCase("efficientnet_lite0", 224, repeats=2, batched=False),
)
QUICK_CASES = (
    BenchCase("resnet18_cifar", 32, repeats=3),
    BenchCase("resnet18", 64, repeats=2),
    BenchCase("efficientnet_lite0", 64, repeats=2),
)


# ----------------------------------------------------------------------------- measuring
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(fns: dict[str, Callable[[], object]], repeats: int, device,
                      warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each callable, run round-robin ``repeats`` times after ``warmup`` rounds."""
    device = torch.device(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for round_ in range(warmup + repeats):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int, device,
                        warmup: int = 1) -> dict[str, float]:
    """Median seconds of each callable (see :func:`interleaved_times`)."""
    return {k: statistics.median(v) for k, v in interleaved_times(fns, repeats, device, warmup).items()}


def _proc_status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_memory() -> None:
    """Hand memory the allocator keeps cached back to the OS (glibc), so RSS counts live data."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory_mib(fn: Callable[[], object], device) -> tuple[float, str]:
    """(MiB above the memory in use before the call, how it was measured) for one call of ``fn``.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the process's resident-set high-water mark,
    reset before the call through ``/proc/self/clear_refs`` (Linux); where that is impossible, the
    growth of ``ru_maxrss``, which only sees peaks above every earlier one (a lower bound).
    """
    device = torch.device(device)
    if device.type == "cuda":
        _sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20, "cuda max_memory_allocated"
    _release_free_memory()
    rss = _proc_status_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        fn()
        return (_proc_status_kib("VmHWM") - rss) / 1024, "VmHWM - VmRSS (peak RSS reset per call)"
    except (OSError, TypeError):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        fn()
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
        return grown / 1024, "ru_maxrss growth (lower bound)"


def flop_count(fn: Callable[[], object]) -> int:
    """Floating-point operations of one call, counted by ``torch.utils.flop_counter``."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


# ----------------------------------------------------------------------------- the passes
def _setup(case: BenchCase, batch_size: int, device, amp: bool, channels_last: bool):
    model = build_model(case.model, weights="random", device=device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(0)
    shape = (3, case.resolution, case.resolution)
    images01 = torch.rand((batch_size, *shape), generator=gen).to(device)
    labels = torch.randperm(model.num_classes, generator=gen)[:batch_size].sort().values.to(device)
    update = simulate_client(model, images01, labels)
    config = InversionConfig(seeds=1, amp=amp)  # the paper's terms; group needs G > 1
    return model, update, labels, shape, config


def _autocast(device: torch.device, amp: bool):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda")


def training_step(model, images, labels, amp=False) -> Callable[[], object]:
    """Forward and parameter gradients of the mean cross-entropy: what a client does once."""
    params = [p for p in model.parameters() if p.requires_grad]

    def step():
        with _autocast(images.device, amp):
            logits = model(images)
        return torch.autograd.grad(F.cross_entropy(logits.float(), labels), params)
    return step


def bare_double_backward(model, images, labels, targets, amp=False) -> Callable[[], object]:
    """Forward, create_graph gradient, eq.-3 matching loss, backward to the input: no loop."""
    params = [p for p in model.parameters() if p.requires_grad]

    def step():
        x = images.detach().requires_grad_(True)
        with _autocast(images.device, amp):
            logits = model(x)
        grads = torch.autograd.grad(F.cross_entropy(logits.float(), labels), params, create_graph=True)
        loss = torch.stack(torch._foreach_norm(torch._foreach_sub(list(grads), targets))).sum()
        return torch.autograd.grad(loss, [x])
    return step


def loop_step(loop: InversionLoop, first: int = 1000) -> Callable[[], object]:
    """One iteration of the loop itself (Adam + Langevin, every term), at consecutive iterations
    from ``first`` (past warm-up, before registration starts)."""
    counter = iter(range(first, loop.config.iterations))
    return lambda: loop.step(next(counter))


# ----------------------------------------------------------------------------- one case
def bench_case(case: BenchCase, batch_size: int = 8, seeds: int = 8, device="cpu",
               amp: bool = False, channels_last: bool = False, flops: bool = True) -> dict:
    """Times, ratios and peak memory of one model at one resolution (see the module docstring)."""
    device = torch.device(device)
    model, update, labels, shape, config = _setup(case, batch_size, device, amp, channels_last)
    targets = target_gradients(update, model)
    objective = build_objective(model, update, config)
    images = model.normalize(torch.rand((batch_size, *shape), generator=torch.Generator().manual_seed(1))
                             .to(device))
    passes = {
        "train": training_step(model, images, labels, amp),
        "bare": bare_double_backward(model, images, labels, targets, amp),
        "loop": loop_step(InversionLoop(model, objective, labels, shape, config, device)),
    }
    if not amp:  # the reference matching loss (one op per layer), to show what foreach saves
        passes["loop_reference"] = loop_step(InversionLoop(
            model, with_reference_matching(objective), labels, shape, config, device))
    out = {"model": case.model, "resolution": case.resolution, "batch_size": batch_size}
    if flops:
        out["loop_gflop"] = flop_count(passes["loop"]) / 1e9
    times = interleaved_times(passes, case.repeats, device)
    medians = {k: statistics.median(v) for k, v in times.items()}
    out.update({f"{k}_ms": 1e3 * v for k, v in medians.items()})
    # minima: the least disturbed run of each, a second view where other jobs share the cores
    out.update({f"{k}_min_ms": 1e3 * min(v) for k, v in times.items()})
    out["loop_over_bare_min"] = min(times["loop"]) / min(times["bare"])
    out["loop_over_train_min"] = min(times["loop"]) / min(times["train"])
    out["loop_over_bare"] = medians["loop"] / medians["bare"]
    out["loop_over_train"] = medians["loop"] / medians["train"]
    out["bare_over_train"] = medians["bare"] / medians["train"]
    if flops:
        out["loop_gflops_per_s"] = out["loop_gflop"] / medians["loop"]
    out["loop_peak_mib"], out["memory_method"] = peak_memory_mib(passes["loop"], device)
    if case.batched and seeds > 1:
        out.update(_batched_vs_sequential(model, update, labels, shape, config, seeds, case, device,
                                          passes["loop"]))
    return out


def with_reference_matching(objective: Objective) -> Objective:
    """The same objective with L_grad computed by the reference (one op per layer) path."""
    return Objective([(w, GradientMatching(t.targets, t.metric, t.layer_weights, "reference", t.relative)
                       if isinstance(t, GradientMatching) else t) for w, t in objective.items()])


def _batched_vs_sequential(model, update, labels, shape, config, seeds, case, device, one_seed):
    """G seeds as one (G, B, ...) tensor (vmap and loop per-seed modes) against G runs of one seed
    (``one_seed``: a loop step, timed in the same rounds); and one registration call against the
    loop at the paper's schedule."""
    out, loops = {"seeds": seeds}, {}
    for mode in ("vmap", "loop"):
        batched = config.replace(seeds=seeds, seed_mode=mode, group="registered")
        loops[mode] = InversionLoop(model, build_objective(model, update, batched), labels, shape,
                                    batched, device)
    passes = {f"batched_{mode}": loop_step(loop) for mode, loop in loops.items()}
    x = loops["vmap"].x.detach()
    passes["registration"] = lambda: registered_consensus(x, method=config.registration)
    passes["sequential"] = lambda: [one_seed() for _ in range(seeds)]
    medians = interleaved_medians(passes, max(1, case.repeats // 2), device)
    one_seed_s = medians["sequential"] / seeds
    best = min(("vmap", "loop"), key=lambda m: medians[f"batched_{m}"])
    for mode in ("vmap", "loop"):
        out[f"batched_{mode}_ms_per_seed"] = 1e3 * medians[f"batched_{mode}"] / seeds
    out["sequential_ms_per_seed"] = 1e3 * one_seed_s
    out["batched_best_mode"] = best
    out["batched_over_sequential"] = medians[f"batched_{best}"] / seeds / one_seed_s
    out["batched_peak_mib"], _ = peak_memory_mib(passes[f"batched_{best}"], device)
    out.update(registration_share(medians["registration"], medians[f"batched_{best}"], config))
    return out


def registration_share(registration_s: float, iteration_s: float, config: InversionConfig,
                       iterations: int = PAPER["iterations"]) -> dict:
    """Share of the loop's time spent registering at the paper's schedule (sec. 3.4: one call
    every ``register_every`` iterations after ``register_start`` of them)."""
    schedule = ConsensusSchedule(config.register_start, config.register_every)
    start = schedule.start(iterations)
    calls = 0 if start >= iterations else 1 + (iterations - 1 - start) // config.register_every
    total = iterations * iteration_s + calls * registration_s
    return {"registration_ms": 1e3 * registration_s, "registration_calls": calls,
            "registration_share": calls * registration_s / total}


def compile_probe(device="cpu") -> dict:
    """Whether ``torch.compile`` can run our double backward (tried on a tiny ResNet with the
    ``aot_eager`` backend, which fails or works as inductor does at this stage, without its
    compile time)."""
    model = build_model("resnet18_cifar", weights="random", device=device)
    compiled = torch.compile(model, backend="aot_eager")
    x = torch.randn(2, 3, 16, 16, device=device, requires_grad=True)
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        grads = torch.autograd.grad(F.cross_entropy(compiled(x), torch.tensor([1, 2], device=device)),
                                    params, create_graph=True)
        torch.autograd.grad(torch.stack(torch._foreach_norm(list(grads))).sum(), [x])
        return {"double_backward": True, "error": None}
    except Exception as exc:  # noqa: BLE001 - the message is the result
        return {"double_backward": False, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
    finally:
        torch._dynamo.reset()


# ----------------------------------------------------------------------------- the rest
def label_recovery_time(model_name: str, batch_size: int = 96, device="cpu", repeats: int = 5) -> dict:
    """Seconds of eq. 8 on a real client update of ``batch_size`` images (the final layer's
    gradient does not depend on the resolution, so the client batch is made at 32 px)."""
    model = build_model(model_name, weights="random", device=device)
    gen = torch.Generator().manual_seed(0)
    labels = torch.randperm(model.num_classes, generator=gen)[:batch_size].to(device)
    update = simulate_client(model, torch.rand((batch_size, 3, 32, 32), generator=gen).to(device), labels)
    seconds = interleaved_medians({"labels": lambda: recover_labels_from_update(update, model)},
                                  repeats, device)["labels"]
    recovered = recover_labels_from_update(update, model)
    right = len(set(recovered.tolist()) & set(labels.cpu().tolist()))
    return {"model": model_name, "batch_size": batch_size, "ms": 1e3 * seconds,
            "correct": right, "note": "random weights: accuracy here says nothing about Table 1"}


def paper_projection(cases: list[dict], device) -> dict:
    """What the paper profile (ResNet-50, 224 px, batch 8, 8 seeds, 20K iterations) needs, from the
    ResNet-50 case: measured here when it ran batched, else extrapolated as 8x one seed."""
    r50 = next((c for c in cases if c["model"] == PAPER["model"]
                and c["resolution"] == PAPER["resolution"]), None)
    if r50 is None:
        return {"available": False, "why": "the ResNet-50 224 px case was not run (--quick)"}
    if "batched_vmap_ms_per_seed" in r50:
        per_iteration = PAPER["seeds"] * min(r50["batched_vmap_ms_per_seed"],
                                             r50["batched_loop_ms_per_seed"]) / 1e3
        how = f"measured with {PAPER['seeds']} seeds batched on {device}"
    else:
        per_iteration = PAPER["seeds"] * r50["loop_ms"] / 1e3
        how = f"extrapolated: {PAPER['seeds']} x one seed on {device} (not measured batched)"
    out = {"available": True, "profile": PAPER, "seconds_per_iteration": per_iteration,
           "hours_for_all_iterations": per_iteration * PAPER["iterations"] / 3600, "how": how}
    if "loop_gflop" in r50:
        tflop = r50["loop_gflop"] * PAPER["seeds"] * PAPER["iterations"] / 1e3
        out["tflop_total"] = tflop
        out["hours_at_assumed_gpu_tflops"] = {f"{t:g}": tflop / t / 3600 for t in ASSUMED_TFLOPS}
        out["gpu_note"] = ("not measured: no GPU here. FLOPs are counted exactly; the hours assume a "
                           "sustained throughput (a V100 peaks at 125 TFLOP/s in fp16, far less "
                           "is sustained in the many small ops of a double backward).")
    return out


def run_bench(device="cpu", quick: bool = False, cases=None, batch_size: int = 8, seeds: int = 8,
              amp: bool | None = None, channels_last: bool | None = None, label_batch: int = 96,
              label_models=None, flops: bool = True) -> dict:
    """Every measurement of ``gradinv bench`` in one process; returns a JSON-able dict.

    ``amp`` and ``channels_last`` default to on for CUDA and off for CPU.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    amp = cuda if amp is None else amp
    channels_last = cuda if channels_last is None else channels_last
    cases = list(cases if cases is not None else (QUICK_CASES if quick else FULL_CASES))
    allocator_tuned = keep_freed_memory() if device.type == "cpu" else None  # as the loop does
    started = time.perf_counter()
    load_before = os.getloadavg()
    results = [bench_case(c, batch_size, seeds, device, amp, channels_last, flops) for c in cases]
    names = label_models if label_models is not None else sorted(
        {c.model for c in cases if build_model(c.model, weights="random").num_classes >= label_batch})
    labels = [label_recovery_time(n, label_batch, device) for n in names]
    return {
        "cases": results, "label_recovery": labels, "torch_compile": compile_probe(device), "paper_projection": paper_projection(results, device),
        "settings": {"batch_size": batch_size, "seeds": seeds, "amp": amp, "channels_last": channels_last,
                     "weights": "random init (timing only; speed does not depend on the weights)",
                     "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                     "glibc_keeps_freed_memory": allocator_tuned,
                     "torch_threads": torch.get_num_threads(), "cases": [asdict(c) for c in cases],
                     "load_average_before": load_before, "load_average_after": os.getloadavg(),
                     "paper_schedule": {"iterations": PAPER["iterations"],
                                        "register_start": InversionConfig().register_start,
                                        "register_every": InversionConfig().register_every}},
        "provenance": provenance(device), "seconds": time.perf_counter() - started,
    }


def format_bench(report: dict) -> str:
    """The report as text tables."""
    s = report["settings"]
    lines = [f"gradinv bench on {report['provenance']['device']}, {s['torch_threads']} thread(s), "
             f"batch {s['batch_size']}, AMP {'on' if s['amp'] else 'off'}, {s['weights']}",
             f"load average before/after: {s['load_average_before'][0]:.2f} / {s['load_average_after'][0]:.2f}"
             " (a shared machine makes every time noisy)", "",
             f"{'model':<20}{'px':>5}{'train ms':>10}{'bare ms':>10}{'loop ms':>10}{'ref ms':>9}"
             f"{'loop/bare':>10}{'loop/train':>11}{'bare/train':>11}{'GFLOP/s':>9}{'peak MiB':>9}"]
    for c in report["cases"]:
        ref = f"{c['loop_reference_ms']:9.1f}" if "loop_reference_ms" in c else f"{'-':>9}"
        gf = f"{c['loop_gflops_per_s']:9.1f}" if "loop_gflops_per_s" in c else f"{'-':>9}"
        lines.append(f"{c['model']:<20}{c['resolution']:>5}{c['train_ms']:10.1f}{c['bare_ms']:10.1f}"
                     f"{c['loop_ms']:10.1f}{ref}{c['loop_over_bare']:10.2f}{c['loop_over_train']:11.2f}"
                     f"{c['bare_over_train']:11.2f}{gf}{c['loop_peak_mib']:9.0f}")
    batched = [c for c in report["cases"] if "seeds" in c]
    if batched:
        lines += ["", f"G={s['seeds']} seeds as one batched tensor vs sequential runs (ms per seed per "
                  "iteration); registration at the paper's schedule",
                  f"{'model':<20}{'px':>5}{'vmap':>9}{'loop':>9}{'seq':>9}{'best/seq':>9}"
                  f"{'peak MiB':>9}{'reg ms':>9}{'calls':>6}{'reg share':>10}"]
        for c in batched:
            lines.append(f"{c['model']:<20}{c['resolution']:>5}{c['batched_vmap_ms_per_seed']:9.1f}"
                         f"{c['batched_loop_ms_per_seed']:9.1f}{c['sequential_ms_per_seed']:9.1f}"
                         f"{c['batched_over_sequential']:9.2f}{c['batched_peak_mib']:9.0f}"
                         f"{c['registration_ms']:9.1f}{c['registration_calls']:6d}"
                         f"{100 * c['registration_share']:9.2f}%")
    for lab in report["label_recovery"]:
        lines.append(f"label recovery (eq. 8), {lab['model']}, batch {lab['batch_size']}: {lab['ms']:.2f} ms")
    p = report["paper_projection"]
    lines.append("")
    if not p["available"]:
        lines.append(f"paper profile: {p['why']}")
    else:
        lines.append(f"paper profile (ResNet-50, 224 px, batch 8, 8 seeds, 20K iterations) on this "
                     f"device: {p['seconds_per_iteration']:.2f} s/iteration -> "
                     f"{p['hours_for_all_iterations']:.1f} h ({p['how']})")
        if "tflop_total" in p:
            hours = ", ".join(f"{h:.2f} h at {t} TFLOP/s" for t, h in p["hours_at_assumed_gpu_tflops"].items())
            lines.append(f"  {p['tflop_total']:.0f} TFLOP in all; GPU {hours}; {p['gpu_note']}")
    probe = report.get("torch_compile", {})
    lines.append("torch.compile with double backward: " + (
        "works" if probe.get("double_backward") else f"not usable ({probe.get('error')})"))
    lines.append(f"memory: {report['cases'][0]['memory_method'] if report['cases'] else '-'}; "
                 f"bench took {report['seconds']:.0f} s")
    return "\n".join(lines)


def speed_targets(report: dict) -> dict[str, bool]:
    """The issue's targets for the ResNets: loop <= 1.10 x bare and <= 4 x train, registration
    <= 5% at the paper's schedule, batched seeds no slower per seed than sequential runs."""
    resnets = [c for c in report["cases"] if c["model"].startswith("resnet")]
    return {
        "loop_le_1.10_bare": all(c["loop_over_bare"] <= 1.10 for c in resnets),
        "loop_le_4_train": all(c["loop_over_train"] <= 4.0 for c in resnets),
        "registration_le_5pct": all(c["registration_share"] <= 0.05 for c in resnets if "seeds" in c),
        "batched_le_sequential": all(c["batched_over_sequential"] <= 1.0 for c in resnets if "seeds" in c),
    }
