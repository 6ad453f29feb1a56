"""The Typer application, its root options, and the entry point that turns errors into one line."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from kdcompress import __version__
from kdcompress.console import error, info
from kdcompress.errors import Interrupted, KDCompressError


class _Commands(TyperGroup):
    """Turns Ctrl-C inside a command into Interrupted: one line and exit code 130 (``main``).

    Typer would exit 130 without a word; a Ctrl-C still unwinds the command first, so locks
    are released and staging folders removed.
    """

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Interrupted("interrupted") from None


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
    except Exception as exc:  # a library error that a damaged cache file causes gets a hint
        from kdcompress.cache import damage_hint

        hint = damage_hint(exc)
        if hint is None or _state["debug"]:
            raise
        error(hint)
        sys.exit(1)
