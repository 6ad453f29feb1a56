"""Facts about the machine we run on: cores, ISA flags, memory."""

from __future__ import annotations

import os
import platform
from functools import cache
from pathlib import Path

_ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def threads_or_default(threads: int | None) -> int:
    """The thread count to run a model with: the one asked for, else one per physical core
    (the one place this default is decided; every stage and command goes through it)."""
    return threads or physical_cores()


@cache
def physical_cores() -> int:
    """Physical cores usable by this process (hyper-threads do not speed up GEMMs)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    pairs = set()
    physical = core = ""
    for line in _cpuinfo().splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            physical = value.strip()
        elif key == "core id":
            core = value.strip()
            pairs.add((physical, core))
    total = usable or 1
    return min(total, len(pairs)) if pairs else total


def cpu_model() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def isa_flags() -> list[str]:
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            present = set(line.partition(":")[2].split())
            return [flag for flag in _ISA_FLAGS if flag in present]
    return []


def memory_gib() -> float:
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0.0
    return round(pages / 2**30, 1)
