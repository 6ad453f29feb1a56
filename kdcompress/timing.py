"""The one timing method used for every latency kdcompress reports.

Warm-up runs first (caches, lazy allocations, JIT), then ``runs`` timed calls with
``perf_counter_ns``; statistics are percentiles (p50, p90, p95, p99), the standard deviation
and a mean with the slowest and fastest 10% trimmed, kept with the raw samples. While timing we
also read /proc/stat to estimate how much CPU *other* processes used: on a shared machine a
disturbed measurement must be recognised and repeated, not recorded.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from kdcompress.artifacts import LatencyStats


def summarise(samples_ms: np.ndarray, *, warmup: int, threads: int) -> LatencyStats:
    """Percentiles, standard deviation and a 10%-trimmed mean of raw samples, which are kept
    (rounded to the nanosecond the clock resolves) in the order they were measured."""
    ordered = np.sort(samples_ms)
    cut = int(len(ordered) * 0.1)
    core = ordered[cut : len(ordered) - cut] if len(ordered) > 2 * cut else ordered
    p50, p90, p95, p99 = (float(x) for x in np.percentile(ordered, [50, 90, 95, 99]))
    return LatencyStats(
        p50_ms=p50,
        p90_ms=p90,
        min_ms=float(ordered[0]),
        trimmed_mean_ms=float(core.mean()),
        runs=len(ordered),
        warmup=warmup,
        threads=threads,
        std_ms=float(np.std(ordered, ddof=1)) if len(ordered) > 1 else 0.0,
        p95_ms=p95,
        p99_ms=p99,
        samples_ms=tuple(round(float(x), 6) for x in samples_ms),
    )


def time_callable(
    fn: Callable[[], object],
    *,
    threads: int,
    warmup: int = 10,
    runs: int = 50,
    min_time_s: float = 0.0,
) -> LatencyStats:
    """Time ``fn`` with the fixed method: warm-up, timed calls, trimmed statistics.

    At least ``runs`` calls are timed, and more until ``min_time_s`` has passed: fast models
    then get more samples, and the foreign-load reading (tick-resolution counters) a window
    long enough to mean something.
    """
    if runs < 1 or warmup < 0:
        raise ValueError("runs must be >= 1 and warmup >= 0")
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    load = ForeignLoadMeter()
    deadline = time.perf_counter() + min_time_s
    while len(samples) < runs or time.perf_counter() < deadline:
        start = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - start) / 1e6)
    stats = summarise(np.array(samples), warmup=warmup, threads=threads)
    return replace(stats, foreign_load=load.read())


class ForeignLoadMeter:
    """Share of the machine's CPU used by processes other than this one since creation.

    System-wide busy time comes from /proc/stat, this process's own time from ``os.times``; the
    difference is what other processes consumed. ``None`` where /proc/stat does not exist.
    """

    _STAT = Path("/proc/stat")

    def __init__(self) -> None:
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._cpus = os.cpu_count() or 1
        self._start = self._snapshot()

    def _snapshot(self) -> tuple[float, float, float] | None:
        try:
            fields = self._STAT.read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return None
        ticks = [int(x) for x in fields]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
        busy_s = (sum(ticks[:8]) - idle) / self._tick
        own = os.times()
        return time.monotonic(), busy_s, own.user + own.system

    def read(self) -> float | None:
        end = self._snapshot()
        if self._start is None or end is None:
            return None
        wall = end[0] - self._start[0]
        if wall <= 0.05:  # too short for tick-resolution counters to mean anything
            return None
        foreign_cpu = (end[1] - self._start[1]) - (end[2] - self._start[2])
        return max(0.0, foreign_cpu / (wall * self._cpus))
