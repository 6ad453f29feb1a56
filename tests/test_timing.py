from __future__ import annotations

import sys
import time

import numpy as np

from kdcompress.artifacts import LatencyStats
from kdcompress.timing import ForeignLoadMeter, summarise, time_callable


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
