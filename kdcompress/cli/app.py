"""The Typer application, its root options, and the entry point that turns errors into one line."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from typer._click.exceptions import NoArgsIsHelpError  # Click as typer 0.29 vendors it
from typer.core import TyperGroup
from typer.exceptions import TyperException

from kdcompress import __version__
from kdcompress.console import error, info
from kdcompress.errors import Interrupted, KDCompressError, UsageError, first_line


class _Commands(TyperGroup):
    """Turns Ctrl-C inside a command into Interrupted: one line and exit code 130 (``main``).

    Typer would exit 130 without a word; a Ctrl-C still unwinds the command first, so locks
    are released and staging folders removed. Click's errors about a command's options, a
    box of five lines, become one line as well.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _reflow_help(self)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Interrupted("interrupted") from None
        except NoArgsIsHelpError:
            raise  # a command group called bare: its help
        except TyperException as exc:  # a command's options rejected by Click: not a box
            raise _one_line(exc) from None


def _reflow_help(group: Any) -> None:
    """Join the lines of each paragraph of every (sub)command's docstring help.

    In Rich markup mode Typer keeps a docstring's line breaks, so a docstring wrapped for the
    source file came out as a ragged right margin on an 80-column terminal; Rich wraps a
    paragraph that is one line to the terminal's width.
    """
    for command in group.commands.values():
        if command.help:
            paragraphs = command.help.split("\n\n")
            command.help = "\n\n".join(" ".join(p.split("\n")) for p in paragraphs)
        if hasattr(command, "commands"):
            _reflow_help(command)


def _one_line(exc: TyperException) -> KDCompressError:
    """Click's error about a command's options (unknown, missing, out of range) as one line;
    a usage error keeps exit code 2."""
    ctx = getattr(exc, "ctx", None)
    where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    kind = UsageError if exc.exit_code == UsageError.exit_code else KDCompressError
    return kind(" ".join(exc.format_message().split()) + where)


app = typer.Typer(
    cls=_Commands,
    name="kdcompress",
    help=(
        "Hardware-aware compression of transformer encoders for CPUs: profile the target, "
        "search a student with KD-NAS, distil it, export, quantize and validate it."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        info(f"kdcompress {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full tracebacks for errors.")
    ] = False,
) -> None:
    _state["debug"] = debug


def main() -> None:
    """Console entry point: user errors become one red line and a non-zero exit code."""
    try:
        app()
    except KDCompressError as exc:
        if _state["debug"]:
            raise
        error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:  # outside a command (see _Commands)
        error("interrupted")
        sys.exit(Interrupted.exit_code)
    except MemoryError as exc:  # sizes this machine cannot hold (option checks catch typos)
        if _state["debug"]:
            raise
        error(f"out of memory ({first_line(exc)}): choose smaller sizes (--batch, --seq-len)")
        sys.exit(1)
    except Exception as exc:  # a library error that a damaged cache file causes gets a hint
        from kdcompress.cache import damage_hint

        hint = damage_hint(exc)
        if hint is None or _state["debug"]:
            raise
        error(hint)
        sys.exit(1)
