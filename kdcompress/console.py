"""The one Rich console: every line kdcompress prints goes through here."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# Output that is not a terminal (a log file, `| tee`, CI) gets no width from the terminal and
# Rich falls back to 80 columns, where wide tables (the validation table) cut every cell to
# "te…"; such output is read in an editor or a browser, so it gets room for the widest table.
LOG_WIDTH = 220


def _width(stream: Any) -> int | None:
    if stream.isatty() or os.environ.get("COLUMNS"):
        return None  # the terminal's own width, or the one the user set
    return LOG_WIDTH


console = Console(highlight=False, width=_width(sys.stdout))
err_console = Console(stderr=True, highlight=False, width=_width(sys.stderr))


def info(message: str) -> None:
    console.print(message)


def warn(message: str) -> None:
    err_console.print(f"[bold yellow]warning:[/] {message}")


def error(message: str) -> None:
    """One red line; ``message`` is plain text (it may quote user input such as ``[x]``)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


LOG_EVERY_S = 60.0  # progress lines in a log file (output that is not a terminal)


@contextmanager
def progress() -> Iterator[Progress]:
    """A progress display with bar, count, elapsed time and ETA, for work longer than a second.

    On a terminal it is a live bar; in a log file (``nohup``, ``| tee``, CI) a live bar shows
    nothing until the end, so there it is a plain line per task every ``LOG_EVERY_S`` seconds
    and one when the display closes.
    """
    live = console.is_terminal
    bar = Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
        disable=not live,
    )
    with bar:
        if live:
            yield bar
            return
        stop = threading.Event()
        logger = threading.Thread(target=_log_progress, args=(bar, stop), daemon=True)
        logger.start()
        try:
            yield bar
        finally:
            stop.set()
            logger.join()


def _log_progress(bar: Progress, stop: threading.Event) -> None:
    while not stop.wait(LOG_EVERY_S):
        _progress_lines(bar, finished=False)
    _progress_lines(bar, finished=True)


def _progress_lines(bar: Progress, *, finished: bool) -> None:
    for task in bar.tasks:
        if task.finished and not finished:
            continue
        total = f"/{task.total:.0f}" if task.total is not None else ""
        eta = task.time_remaining
        timing = f"{task.elapsed or 0.0:.0f} s" + (
            f", eta {eta:.0f} s" if eta and not finished else ""
        )
        console.print(f"{task.description}: {task.completed:.0f}{total} ({timing})")


@contextmanager
def status(message: str) -> Iterator[None]:
    """A spinner for a single step of unknown length (loading a library, exporting a graph)."""
    with console.status(message):
        yield
