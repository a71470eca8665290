"""The wall-clock budget of one ``gradinv gpu-report`` call: a soft deadline the stages plan and
stop by (checkpointed), and a hard alarm just before the limit as a backstop, so the call never
runs past the minutes it was given (a device command killed at its limit returns nothing)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager

from gradinv_lib.errors import InputError


class OutOfTime(Exception):
    """Raised by the hard alarm: the call is about to reach its limit."""


def process_age_s() -> float:
    """Seconds since this process started (interpreter and imports included), from Linux's
    /proc; 0 where that cannot be read."""
    try:
        with open("/proc/self/stat") as f:
            started_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


class Clock:
    """Deadlines of one call, in ``time.monotonic()`` seconds.

    ``minutes``: this call's limit, counted from ``since`` (epoch seconds; None: the process's
    start). ``margin_s`` (None: max(30 s, 8% of the limit)) is kept free before the limit: the
    soft deadline is limit - margin; the hard alarm fires at limit - margin / 3.
    """

    def __init__(self, minutes: float, margin_s: float | None = None, since: float | None = None):
        if not minutes > 0:
            raise InputError(f"--minutes: expected a positive number, found {minutes}")
        self.limit_s = 60.0 * minutes
        self.margin_s = max(30.0, 0.08 * self.limit_s) if margin_s is None else float(margin_s)
        if not 0 <= self.margin_s < self.limit_s:
            raise InputError(f"--margin-s: expected a value in [0, {self.limit_s:.0f}) s, found {self.margin_s}")
        age = process_age_s() if since is None else max(0.0, time.time() - float(since))
        self.start = time.monotonic() - age
        self.deadline = self.start + self.limit_s - self.margin_s
        self.hard_deadline = self.start + self.limit_s - self.margin_s / 3

    def log(self, text: str) -> None:
        """One progress line on stderr (a device returns the output's tail, even of a killed call)."""
        print(f"[gpu-report {self.elapsed():5.0f} s, {self.left():5.0f} s left] {text}", file=sys.stderr, flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self, deadline: float | None = None) -> float:
        """Seconds to the soft deadline (or to ``deadline``)."""
        return (self.deadline if deadline is None else deadline) - time.monotonic()

    @contextmanager
    def hard_alarm(self):
        """Within the block, SIGALRM at the hard deadline, and SIGTERM (a limit that came first),
        raise :class:`OutOfTime` (main thread only; elsewhere a no-op). Inside the inversion loop
        SIGTERM checkpoints first (``checkpoint.stop_on_signals``)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def fire(signum, frame):
            raise OutOfTime(f"the hard deadline ({self.limit_s - self.margin_s / 3:.0f} s) was reached"
                            if signum == signal.SIGALRM else "stopped by SIGTERM")

        previous = {s: signal.signal(s, fire) for s in (signal.SIGALRM, signal.SIGTERM)}
        signal.setitimer(signal.ITIMER_REAL, max(0.01, self.hard_deadline - time.monotonic()))
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            for s, handler in previous.items():
                signal.signal(s, handler)
