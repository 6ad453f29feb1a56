"""Options shared by several commands, and the checks every option passes before work starts."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated

import typer

from kdcompress.errors import UsageError


def _usable_threads(threads: int | None) -> int | None:
    """--threads up to the CPUs this process may run on: more only wait for each other (and
    thousands take minutes to start, timing nothing)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if threads is not None and usable and threads > usable:
        raise UsageError(f"--threads {threads}: more than the {usable} CPUs this process may use")
    return threads


ThreadsOption = Annotated[
    int | None,
    typer.Option(
        "--threads",
        min=1,
        callback=_usable_threads,
        help="Inference threads (default: all physical cores).",
    ),
]


OverwriteOption = Annotated[
    bool, typer.Option("--overwrite", help="Replace an existing output directory.")
]


TeacherOption = Annotated[
    str,
    typer.Option(
        "--teacher",
        help="Built-in offline teacher (see `kdcompress teachers`), local HF folder or hub id.",
    ),
]


CompareTeacherOption = Annotated[
    str | None,
    typer.Option(
        "--teacher",
        help="The teacher to compare with: its export folder, or a model (built-in name, HF "
        "folder, hub id) exported to the same runtime once and kept in the cache.",
    ),
]


TargetOption = Annotated[
    Path | None, typer.Option(help="Hardware profile: show predicted vs measured latency.")
]


SeqLenOption = Annotated[
    list[int] | None,
    typer.Option("--seq-len", help="Sequence lengths to time (repeatable; default 32 and 128)."),
]


BatchOption = Annotated[
    list[int] | None,
    typer.Option("--batch", help="Batch sizes to time (repeatable; default 1 and 8)."),
]


def hold_output(ctx: typer.Context, path: Path) -> None:
    """Lock the output ``path`` until the command ends: a second process writing it gets one
    error line naming this one's PID (see ``kdcompress.outputs.output_lock``)."""
    from kdcompress.outputs import check_writable_location, output_lock

    check_writable_location(path)
    ctx.with_resource(output_lock(path))


# Longer than any encoder's position table: a --seq-len beyond it is a typo, not a request.
MAX_SEQ_LEN = 8192
# A latency or throughput batch; beyond it the inputs alone take gigabytes (a typo again).
MAX_BATCH = 1024


def check_positive(option: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise UsageError(f"{option} {value:g}: must be a number above 0")


def check_shapes(
    seq_lens: list[int] | None, batches: list[int] | None, *, model: Path | None = None
) -> None:
    """--seq-len and --batch, before any work: at least 1, and lengths the model takes."""
    for batch in batches or ():
        if not 1 <= batch <= MAX_BATCH:
            raise UsageError(f"--batch {batch}: must be between 1 and {MAX_BATCH}")
    positions = _model_positions(model) if model is not None else None
    limit = min(MAX_SEQ_LEN, positions or MAX_SEQ_LEN)
    for seq_len in seq_lens or ():
        if not 1 <= seq_len <= limit:
            why = f" (the model takes {positions} positions)" if limit == positions else ""
            raise UsageError(f"--seq-len {seq_len}: must be between 1 and {limit}{why}")


def _model_positions(model: Path) -> int | None:
    """The longest input a local model folder takes, counted as validation counts it."""
    try:
        from kdcompress.encoding import read_longest_input

        return read_longest_input(model.expanduser())
    except (OSError, ValueError, KeyError, TypeError):
        return None  # not a local folder, or no position table: the model is checked later


def check_compared(teacher: str | None, target: Path | None) -> None:
    """--teacher and --target of ``export`` and ``validate``, before an export is written or
    anything is timed: a teacher that is neither an export folder nor a model, a target that is
    no hardware profile."""
    from kdcompress.errors import ArtifactError
    from kdcompress.latency.schema import read_profile

    if target is not None:
        try:
            read_profile(target)
        except ArtifactError as exc:
            raise UsageError(f"--target {exc}") from None
    if teacher is not None:
        _check_teacher(teacher)


def _check_teacher(teacher: str) -> None:
    from kdcompress.artifacts import MANIFEST
    from kdcompress.catalog import TEACHERS
    from kdcompress.models import resolve_model

    if (Path(teacher).expanduser() / MANIFEST).is_file() or teacher in TEACHERS:
        return  # an export folder, or a built-in teacher (fetched when it is exported)
    resolve_model(teacher)  # a local folder is checked whole; a hub id fetched or refused


def check_device(device: str) -> None:
    if device.lower() != "cpu":
        raise UsageError(f"unknown device '{device}': only 'cpu' is supported")


# A profile name becomes a file name in profiles/: no separators, no "..", no hidden files.
_PROFILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def check_profile_name(name: str) -> None:
    if not _PROFILE_NAME.fullmatch(name):
        raise UsageError(
            f"--name {name!r}: a profile name is letters, digits, '-', '_' and '.' "
            "(not starting with a dot)"
        )
