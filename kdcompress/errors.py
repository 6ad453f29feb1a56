"""User-facing errors.

Every failure the user can cause or fix is one of these: the CLI prints its message as one red
line and exits with ``exit_code``. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

E = TypeVar("E", bound=StrEnum)


class KDCompressError(Exception):
    """Base class: a problem the user can understand and act on."""

    exit_code = 1


class UsageError(KDCompressError):
    """Bad input from the command line: unknown name, missing path, impossible setting."""

    exit_code = 2


class ModelNotFoundError(UsageError):
    """A model path or name that resolves to nothing loadable."""


class BackendUnavailableError(UsageError):
    """A backend whose runtime library is not installed, or a name that is no backend."""


class ArtifactError(KDCompressError):
    """A malformed, foreign or incompatible artifact file."""

    exit_code = 2


class OutputExistsError(UsageError):
    """An output that already exists and would be overwritten without ``--overwrite``."""


class OutputLockedError(KDCompressError):
    """An output that another live process is writing right now."""


class Interrupted(KDCompressError):
    """The user pressed Ctrl-C (SIGINT): outputs are left as they were, exit code 130."""

    exit_code = 130


class AssetError(KDCompressError):
    """A built-in asset that cannot be fetched, verified or converted."""


class AssetUnavailableError(AssetError):
    """A pinned package file that is neither cached nor downloadable (offline)."""


class IncompatibleReferenceError(ArtifactError):
    """A reference evaluation made with other task settings: its scores are not comparable."""


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (library errors can span pages), or its type's name
    when it has no message: what a one-line error quotes as the reason."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def parse_choice(
    choices: type[E], value: str, *, what: str, error: type[UsageError] = UsageError
) -> E:
    """``value`` as a member of the string enum ``choices`` (case-insensitive), or a one-line
    error naming ``what`` was asked for and the valid choices."""
    try:
        return choices(value.lower())
    except ValueError:
        valid = ", ".join(c.value for c in choices)
        raise error(f"unknown {what} '{value}' (choose one of: {valid})") from None
