from __future__ import annotations

import sys
import time

import numpy as np
import pytest

from kdcompress.artifacts import LatencyStats
from kdcompress.summaries import disturbance
from kdcompress.timing import (
    CpuTimes,
    ForeignLoadMeter,
    SpeedProbe,
    cpu_shares,
    parse_proc_stat,
    summarise,
    time_callable,
)


def test_summarise_known_samples() -> None:
    samples = np.array([10.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    stats = summarise(samples, warmup=3, threads=2)
    assert stats.min_ms == 1.0
    assert stats.p50_ms == 5.5
    assert stats.trimmed_mean_ms == 5.5  # 1 and 10 trimmed
    assert abs(stats.p90_ms - 9.1) < 1e-9
    assert (stats.runs, stats.warmup, stats.threads) == (10, 3, 2)


def test_summarise_keeps_std_tail_percentiles_and_raw_samples() -> None:
    samples = np.arange(1.0, 101.0)  # 1..100 ms, measured in this order
    stats = summarise(samples[::-1], warmup=0, threads=1)
    assert stats.samples_ms == tuple(samples[::-1])  # as measured, not sorted
    assert stats.std_ms is not None and abs(stats.std_ms - float(np.std(samples, ddof=1))) < 1e-9
    assert stats.p95_ms is not None and abs(stats.p95_ms - 95.05) < 1e-9
    assert stats.p99_ms is not None and abs(stats.p99_ms - 99.01) < 1e-9
    assert stats.without_samples().samples_ms == ()


def test_latency_stats_round_trip_and_older_files_load() -> None:
    stats = summarise(np.array([1.5, 2.25, 3.0]), warmup=1, threads=2)
    again = LatencyStats.from_json(stats.to_json())
    assert again == stats
    assert isinstance(again.samples_ms, tuple)
    old = {"kind": "latency", "schema_version": 1, "p50_ms": 2.0, "p90_ms": 3.0, "min_ms": 1.0}
    old |= {"trimmed_mean_ms": 2.0, "runs": 3, "warmup": 1, "threads": 2, "foreign_load": None}
    loaded = LatencyStats.from_json(old)
    assert (loaded.std_ms, loaded.p95_ms, loaded.p99_ms) == (None, None, None)
    assert loaded.samples_ms == ()
    assert (loaded.steal, loaded.reference_ms, loaded.flags, loaded.round_p50_ms) == (
        None,
        (),
        (),
        (),
    )
    assert loaded.reference_drift is None and not loaded.disturbed
    assert LatencyStats.from_json(old | {"foreign_load": 0.6}).disturbed  # flags not yet kept


def test_time_callable_runs_warmup_plus_timed_calls() -> None:
    calls = []
    stats = time_callable(lambda: calls.append(1), threads=1, warmup=4, runs=9)
    assert len(calls) == 13
    assert stats.runs == 9
    assert len(stats.samples_ms) == 9


def test_spread_and_disturbed_flags() -> None:
    quiet = LatencyStats(10.0, 12.0, 9.0, 10.5, 20, 5, 2, foreign_load=0.01)
    busy = LatencyStats(10.0, 30.0, 9.0, 15.0, 20, 5, 2, foreign_load=0.6)
    assert abs(quiet.spread - 0.2) < 1e-9
    assert not quiet.disturbed
    assert busy.disturbed


def test_foreign_load_meter_reads_a_share() -> None:
    meter = ForeignLoadMeter()
    deadline = time.monotonic() + 0.2
    while time.monotonic() < deadline:
        pass  # our own busy loop must not count as foreign load
    share = meter.read()
    if sys.platform == "linux":
        assert share is not None
        assert 0.0 <= share <= 1.0


def test_min_time_extends_the_number_of_runs() -> None:
    stats = time_callable(lambda: time.sleep(0.001), threads=1, warmup=0, runs=3, min_time_s=0.1)
    assert stats.runs > 3
    assert stats.foreign_load is None or 0.0 <= stats.foreign_load <= 1.0


PROC_STAT = """cpu  1000 50 200 5000 100 7 3 40 30 0
cpu0 500 25 100 2500 50 3 2 20 15 0
intr 12345
"""


def test_proc_stat_busy_and_steal_are_parsed_apart() -> None:
    times = parse_proc_stat(PROC_STAT, tick=100)
    # user + nice + system + irq + softirq; guest (30) is inside user already
    assert times == CpuTimes(busy_s=12.6, steal_s=0.4)
    old_kernel = parse_proc_stat("cpu  1000 50 200 5000\n", tick=100)
    assert old_kernel == CpuTimes(busy_s=12.5, steal_s=0.0)
    assert parse_proc_stat("intr 1 2 3\n", tick=100) is None


def test_cpu_shares_separate_other_processes_from_steal() -> None:
    start = (10.0, CpuTimes(busy_s=100.0, steal_s=5.0), 1.0)
    end = (11.0, CpuTimes(busy_s=101.2, steal_s=5.3), 1.8)  # 1 s on 2 CPUs; 0.8 s our own
    foreign, steal = cpu_shares(start, end, cpus=2)
    assert foreign == pytest.approx(0.2) and steal == pytest.approx(0.15)
    assert cpu_shares(start, (10.01, end[1], end[2]), cpus=2) == (None, None)  # too short
    overshoot = (11.0, CpuTimes(busy_s=102.1, steal_s=5.0), 1.0)  # a tick more than 2 CPUs
    assert cpu_shares(start, overshoot, cpus=2) == (1.0, 0.0)


def _stats(**fields: object) -> LatencyStats:
    return LatencyStats(10.0, 11.0, 9.0, 10.0, 20, 5, 2, **fields)  # type: ignore[arg-type]


def test_flags_name_each_kind_of_interference() -> None:
    quiet = _stats(foreign_load=0.01, steal=0.01, reference_ms=(1.0, 1.05)).flagged()
    assert quiet.flags == () and not quiet.disturbed
    assert quiet.reference_drift == pytest.approx(0.05)
    stolen = _stats(foreign_load=0.01, steal=0.08, reference_ms=(1.0, 1.0)).flagged()
    assert stolen.flags == ("steal",) and stolen.disturbed
    # the machine slowed down during the block: nothing in the counters, the kernel shows it
    slower = _stats(foreign_load=0.0, steal=0.0, reference_ms=(1.0, 1.2)).flagged()
    assert slower.flags == ("reference-drift",)
    assert disturbance(slower) == "reference kernel +20%"
    # slow throughout the block, against a faster baseline seen earlier in the session
    slow = _stats(reference_ms=(1.3, 1.3), reference_baseline_ms=1.0).flagged()
    assert slow.flags == ("reference-drift",)
    busy = _stats(foreign_load=0.5, steal=0.1).flagged()
    assert busy.flags == ("other-processes", "steal")
    assert disturbance(busy) == "other processes 50%, steal 10%"


def test_speed_probe_takes_the_median_and_keeps_the_fastest() -> None:
    timings = iter([5.0, 1.0, 2.0, 3.0, 9.0, 1.5])
    probe = SpeedProbe(repeats=3, kernel=lambda: next(timings))
    assert probe.measure() == 2.0 and probe.baseline_ms == 2.0
    assert probe.measure() == 3.0 and probe.baseline_ms == 2.0
    assert SpeedProbe(loops=5, repeats=1).measure() > 0  # the real kernel runs


def test_a_block_whose_reference_kernel_slowed_is_flagged() -> None:
    timings = iter([1.0, 1.3, 1.0, 1.02])  # before and after two blocks
    probe = SpeedProbe(repeats=1, kernel=lambda: next(timings))
    disturbed = time_callable(lambda: None, threads=1, warmup=0, runs=3, probe=probe)
    assert disturbed.reference_ms == (1.0, 1.3) and disturbed.flags == ("reference-drift",)
    quiet = time_callable(lambda: None, threads=1, warmup=0, runs=3, probe=probe)
    assert quiet.reference_ms == (1.0, 1.02) and quiet.reference_baseline_ms == 1.0
    assert "reference-drift" not in quiet.flags
