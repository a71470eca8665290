"""Measuring primitives of ``gradinv bench``: interleaved wall times (the variants of one case
run round-robin, so their ratios come from the same moments of a shared machine), peak memory
and exact FLOP counts."""

from __future__ import annotations

import resource
import statistics
import time
from typing import Callable

import torch


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
