"""The one timing method used for every latency kdcompress reports.

Warm-up runs first (caches, lazy allocations, JIT), then ``runs`` timed calls with
``perf_counter_ns``; statistics are percentiles (p50, p90, p95, p99), the standard deviation
and a mean with the slowest and fastest 10% trimmed, kept with the raw samples. While timing we
also read /proc/stat to estimate how much CPU *other* processes used and how much the hypervisor
stole for other virtual machines, and time a fixed reference kernel before and after the block:
interference from outside the machine (a noisy neighbour, a lower clock) shows in none of the
counters but slows the kernel. On a shared machine a disturbed measurement must be recognised
and repeated, or flagged -- not recorded as if it were quiet.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
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
    probe: SpeedProbe | None = None,
) -> LatencyStats:
    """Time ``fn`` with the fixed method: warm-up, timed calls, trimmed statistics, flags.

    At least ``runs`` calls are timed, and more until ``min_time_s`` has passed: fast models
    then get more samples, and the load readings (tick-resolution counters) a window long
    enough to mean something. ``probe`` times the reference kernel just before and just after
    the timed calls; pass one probe to every block of a comparison so that its fastest
    reference (the baseline the drift is measured from) spans them all.
    """
    if runs < 1 or warmup < 0:
        raise ValueError("runs must be >= 1 and warmup >= 0")
    probe = probe or SpeedProbe()
    for _ in range(warmup):
        fn()
    before = probe.measure()
    load = ForeignLoadMeter()
    samples: list[float] = []
    deadline = time.perf_counter() + min_time_s
    while len(samples) < runs or time.perf_counter() < deadline:
        start = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - start) / 1e6)
    foreign, steal = load.shares()
    after = probe.measure()
    stats = summarise(np.array(samples), warmup=warmup, threads=threads)
    return replace(
        stats,
        foreign_load=foreign,
        steal=steal,
        reference_ms=(round(before, 6), round(after, 6)),
        reference_baseline_ms=probe.baseline_ms,
    ).flagged()


class SpeedProbe:
    """The machine's current speed: a fixed small matrix-product loop, timed.

    48 x 48 float32 products stay on one thread (OpenBLAS threads only larger products, and a
    BLAS pool spinning after the probe would steal cycles from the model timed next) and in the
    L1 cache, so the kernel's time moves with the clock, steal time and a busy sibling core --
    not with memory. A probe is the median of ``repeats`` loops of ``loops`` products (about
    4 ms in all on a recent x86 core); ``baseline_ms`` is the fastest probe so far.
    ``kernel`` replaces the timed loop (a test's fake timings).
    """

    def __init__(
        self, *, loops: int = 200, repeats: int = 5, kernel: Callable[[], float] | None = None
    ) -> None:
        rng = np.random.default_rng(0)
        self._a = rng.standard_normal((48, 48), dtype=np.float32)
        self._loops, self._repeats = loops, repeats
        self._kernel = kernel or self._timed_loop
        self.baseline_ms: float | None = None

    def _timed_loop(self) -> float:
        a, out = self._a, np.empty_like(self._a)
        start = time.perf_counter_ns()
        for _ in range(self._loops):
            np.matmul(a, a, out=out)
        return (time.perf_counter_ns() - start) / 1e6

    def measure(self) -> float:
        """The reference kernel's time now (ms); lowers the baseline when faster."""
        ms = float(np.median([self._kernel() for _ in range(self._repeats)]))
        self.baseline_ms = ms if self.baseline_ms is None else min(self.baseline_ms, ms)
        return ms


@dataclass(frozen=True)
class CpuTimes:
    """The machine's CPU seconds since boot, from the ``cpu`` line of /proc/stat."""

    busy_s: float  # user, nice, system, irq, softirq: work done by processes here
    steal_s: float  # time a virtual CPU was ready to run but the hypervisor ran another guest


def parse_proc_stat(text: str, *, tick: int) -> CpuTimes | None:
    """The aggregate CPU times of a /proc/stat text (``tick``: clock ticks per second); None
    without a ``cpu`` line. Kernels before 2.6.11 have no steal column (read as zero)."""
    fields = text.split("\n", 1)[0].split()
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(x) for x in fields[1:9]] + [0] * (9 - len(fields))
    user, nice, system, _idle, _iowait, irq, softirq, steal = ticks[:8]
    # guest time is already counted in user and nice
    return CpuTimes((user + nice + system + irq + softirq) / tick, steal / tick)


class ForeignLoadMeter:
    """Shares of the machine's CPU used, since creation, by other processes and by the
    hypervisor for other virtual machines (steal).

    System-wide times come from /proc/stat, this process's own time from ``os.times``; the
    difference is what other processes consumed. ``None`` where /proc/stat does not exist.
    """

    _STAT = Path("/proc/stat")

    def __init__(self) -> None:
        self._tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._cpus = os.cpu_count() or 1
        self._start = self._snapshot()

    def _snapshot(self) -> tuple[float, CpuTimes, float] | None:
        try:
            times = parse_proc_stat(self._STAT.read_text(), tick=self._tick)
        except (OSError, ValueError):
            return None
        if times is None:
            return None
        own = os.times()
        return time.monotonic(), times, own.user + own.system

    def shares(self) -> tuple[float | None, float | None]:
        """(other processes' share, steal share) of all CPUs' time since creation."""
        end = self._snapshot()
        if self._start is None or end is None:
            return None, None
        return cpu_shares(self._start, end, cpus=self._cpus)

    def read(self) -> float | None:
        """Other processes' share of all CPUs' time since creation."""
        return self.shares()[0]


def cpu_shares(
    start: tuple[float, CpuTimes, float], end: tuple[float, CpuTimes, float], *, cpus: int
) -> tuple[float | None, float | None]:
    """Foreign and steal shares between two (monotonic s, CPU times, own CPU s) snapshots."""
    wall = end[0] - start[0]
    if wall <= 0.05:  # too short for tick-resolution counters to mean anything
        return None, None
    capacity = wall * cpus
    foreign_cpu = (end[1].busy_s - start[1].busy_s) - (end[2] - start[2])
    steal = end[1].steal_s - start[1].steal_s
    # Tick-resolution counters and this process's own clock can overshoot by a tick: a share
    # is kept within [0, 1].
    return _share(foreign_cpu / capacity), _share(steal / capacity)


def _share(value: float) -> float:
    return min(1.0, max(0.0, value))
