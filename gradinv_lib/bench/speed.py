"""How fast the inversion loop runs against its own lower bounds: a training step, the bare
double-backward pass, one full iteration of our loop (every paper term on) and the same with the classifier's
weight gradient formed densely instead of factored (``factored_gradient``), G seeds batched versus
sequential, one registration call, label recovery (eq. 8) and peak memory.

Every time is the median over repeats after warm-up, with the variants of one case interleaved
(train, bare, loop, train, bare, loop, ...) so that their ratios come from the same moments of a
shared, noisy machine. Weights are random: speed does not depend on them.
"""

from __future__ import annotations

import functools
import os
import statistics
import time
from dataclasses import asdict, dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F

from gradinv_lib.attack.config import InversionConfig
from gradinv_lib.attack.inversion import InversionLoop, keep_freed_memory
from gradinv_lib.attack.labels import recover_labels_from_update
from gradinv_lib.attack.objectives import GradientMatching, Objective
from gradinv_lib.attack.pipeline import build_objective
from gradinv_lib.attack.seed_gradients import per_seed_gradients
from gradinv_lib.federated.client import simulate_client, target_gradients
from gradinv_lib.io import provenance
from gradinv_lib.models import build_model
from gradinv_lib.registration import ConsensusSchedule, registered_consensus

from .report import PAPER, paper_projection
from .timing import flop_count, interleaved_medians, interleaved_times, peak_memory_mib


@dataclass(frozen=True)
class BenchCase:
    """One model at one resolution (``num_classes``: None for the model's own); ``batched``: also
    time G seeds batched vs one seed."""

    model: str
    resolution: int
    repeats: int = 5
    batched: bool = True
    num_classes: int | None = None


QUICK_NETWORK = BenchCase("lenet_bn", 32, repeats=7, num_classes=1000)  # the quick profile's attack
FULL_CASES = (
    QUICK_NETWORK,
    BenchCase("resnet18_cifar", 32, repeats=7),
    BenchCase("resnet18", 64, repeats=5),
    BenchCase("resnet50", 224, repeats=2, batched=False),
    BenchCase("efficientnet_lite0", 64, repeats=5),
    BenchCase("efficientnet_lite0", 224, repeats=2, batched=False),
)
QUICK_CASES = (
    QUICK_NETWORK,
    BenchCase("resnet18_cifar", 32, repeats=3),
    BenchCase("resnet18", 64, repeats=2),
    BenchCase("efficientnet_lite0", 64, repeats=2),
)


# ----------------------------------------------------------------------------- the passes
def setup_case(case: BenchCase, batch_size: int, device, amp: bool, channels_last: bool):
    """(model, client update, labels, image shape, one-seed config) of one case: random weights,
    a random batch of distinct labels."""
    model = build_model(case.model, weights="random", num_classes=case.num_classes, device=device)
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
    model, update, labels, shape, config = setup_case(case, batch_size, device, amp, channels_last)
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
        # the classifier's weight gradient formed per seed, to show what factoring it saves
        passes["loop_dense"] = loop_step(InversionLoop(
            model, objective, labels, shape, config, device,
            client_step=functools.partial(per_seed_gradients, factored=False)))
    out = {"model": case.model, "resolution": case.resolution, "batch_size": batch_size,
           "num_classes": model.num_classes}
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
    (``one_seed``: a loop step, timed in the same rounds), vmap also with the classifier's weight
    gradient dense ("dense"); and one registration call against the loop at the paper's schedule."""
    out, loops = {"seeds": seeds}, {}
    dense = functools.partial(per_seed_gradients, factored=False)
    for mode, step in (("vmap", None), ("loop", None), ("dense", dense)):
        batched = config.replace(seeds=seeds, seed_mode="vmap" if mode == "dense" else mode, group="registered")
        loops[mode] = InversionLoop(model, build_objective(model, update, batched), labels, shape,
                                    batched, device, client_step=step)
    passes = {f"batched_{mode}": loop_step(loop) for mode, loop in loops.items()}
    x = loops["vmap"].x.detach()
    passes["registration"] = lambda: registered_consensus(x, method=config.registration)
    passes["sequential"] = lambda: [one_seed() for _ in range(seeds)]
    medians = interleaved_medians(passes, max(1, case.repeats // 2), device)
    one_seed_s = medians["sequential"] / seeds
    best = min(("vmap", "loop"), key=lambda m: medians[f"batched_{m}"])
    for mode in ("vmap", "loop", "dense"):
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
    if cuda:  # 224 px cases skip the batched comparison only for CPU time
        cases = [replace(c, batched=True, repeats=max(c.repeats, 10)) for c in cases]
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
