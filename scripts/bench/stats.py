"""Ratios with their spread: interleaved pairs of measurements, repeated until the 95% CI is narrow enough.

Each repetition measures side A and side B back to back, swapping the order every time (A B, B A, A B,
...), so slow drift of a shared machine hits both sides alike. The ratio of a pair is A_i / B_i; the
reported ratio is the geometric mean over pairs with a Student-t 95% interval on the mean log-ratio,
exponentiated. Sampling stops once the interval's half-width is at most `half_width` (in ratio units,
after `min_pairs`) or when `time_cap_s` of sampling has passed, whichever comes first; the result says
which. Sequential stopping makes the nominal 95% slightly optimistic; `min_pairs` keeps it honest.

Two clocks per measurement: wall time (`time.perf_counter`) and this process's CPU time
(`time.process_time`, all threads). On a machine shared with other jobs, being descheduled inflates wall
time but not CPU time, so the goals are judged on CPU time; wall time is reported beside it.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from scipy import stats as sps


@dataclass
class Timing:
    wall_s: float
    cpu_s: float


class Stopwatch:
    """Wall and CPU clocks started at construction; `stop()` returns the elapsed `Timing`."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> Timing:
        return Timing(time.perf_counter() - self.wall, time.process_time() - self.cpu)


def timed(fn: Callable[[], object]) -> Timing:
    """Run `fn` once and return its wall and CPU seconds."""
    watch = Stopwatch()
    fn()
    return watch.stop()


def ratio_ci(ratios: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(geometric mean, low, high) of paired ratios: a t-interval on their logs, exponentiated."""
    logs = [math.log(r) for r in ratios]
    mean = statistics.fmean(logs)
    if len(logs) < 2:
        return math.exp(mean), float("nan"), float("nan")
    half = sps.t.ppf(0.5 + confidence / 2, len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


@dataclass
class PairedRatio:
    """Samples of side A over side B for one clock, and the ratio with its CI."""

    a: list[float] = field(default_factory=list)
    b: list[float] = field(default_factory=list)

    def add(self, a: float, b: float) -> None:
        self.a.append(a)
        self.b.append(b)

    @property
    def ci(self) -> tuple[float, float, float]:
        return ratio_ci([x / y for x, y in zip(self.a, self.b)])

    @property
    def half_width(self) -> float:
        _, lo, hi = self.ci
        return (hi - lo) / 2 if len(self.a) > 1 else math.inf

    def summary(self) -> dict:
        ratio, lo, hi = self.ci
        return {"ratio": ratio, "ci": [lo, hi], "pairs": len(self.a), "a_median": statistics.median(self.a),
                "b_median": statistics.median(self.b), "a": self.a, "b": self.b}


class Sequential:
    """The stopping rule and records of one interleaved A/B comparison (wall and CPU clocks).

    A driver asks `a_first()` for the order of the next pair, measures both sides, and calls `add`, which
    says whether to stop. `interleaved` is the driver for two plain callables; a training loop that owns
    the peer's steps drives it from callbacks.
    """

    def __init__(self, label: str, *, half_width: float = 0.03, time_cap_s: float = 120.0, min_pairs: int = 4,
                 max_pairs: int = 60) -> None:
        self.label, self.target, self.cap, self.min_pairs, self.max_pairs = (label, half_width, time_cap_s,
                                                                             min_pairs, max_pairs)
        self.cpu, self.wall = PairedRatio(), PairedRatio()
        self.start = time.monotonic()
        self.stopped = ""

    def a_first(self) -> bool:
        return len(self.cpu.a) % 2 == 0

    def add(self, a: Timing, b: Timing) -> bool:
        self.cpu.add(a.cpu_s, b.cpu_s)
        self.wall.add(a.wall_s, b.wall_s)
        ratio, lo, hi = self.cpu.ci
        n = len(self.cpu.a)
        print(f"bench: {self.label}: pair {n}: cpu {a.cpu_s:.2f}/{b.cpu_s:.2f} s, wall {a.wall_s:.2f}/"
              f"{b.wall_s:.2f} s; cpu ratio {ratio:.3f} [{lo:.3f}, {hi:.3f}]", file=sys.stderr)
        if n >= self.min_pairs and self.cpu.half_width <= self.target:
            self.stopped = "ci"
        elif n >= 2 and time.monotonic() - self.start >= self.cap:
            self.stopped = "time_cap"
        elif n >= self.max_pairs:
            self.stopped = "max_pairs"
        return bool(self.stopped)

    def result(self) -> dict:
        """The CPU-time ratio (the one goals use) with its CI, the wall-time ratio beside it, and why it stopped."""
        return {"clock": "cpu", "cpu": self.cpu.summary(), "wall": self.wall.summary(), "stopped": self.stopped,
                "half_width_target": self.target, "time_cap_s": self.cap,
                "sampling_s": time.monotonic() - self.start}


def interleaved(measure_a: Callable[[], Timing], measure_b: Callable[[], Timing], label: str, **rule) -> dict:
    """Alternate A and B (order swapped every pair) until `Sequential`'s rule stops; its `result()`."""
    seq = Sequential(label, **rule)
    while True:
        if seq.a_first():
            ta, tb = measure_a(), measure_b()
        else:
            tb, ta = measure_b(), measure_a()
        if seq.add(ta, tb):
            return seq.result()
