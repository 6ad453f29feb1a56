"""The one Rich console: every line kdcompress prints goes through here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def info(message: str) -> None:
    console.print(message)


def warn(message: str) -> None:
    err_console.print(f"[bold yellow]warning:[/] {message}")


def error(message: str) -> None:
    """One red line; ``message`` is plain text (it may quote user input such as ``[x]``)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


@contextmanager
def progress() -> Iterator[Progress]:
    """A progress display with bar, count, elapsed time and ETA, for work longer than a second."""
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
    )
    with bar:
        yield bar


@contextmanager
def status(message: str) -> Iterator[None]:
    """A spinner for a single step of unknown length (loading a library, exporting a graph)."""
    with console.status(message):
        yield
