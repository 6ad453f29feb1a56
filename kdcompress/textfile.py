"""The user's own text files (``distill --corpus``): UTF-8, one sentence per line.

A binary or non-UTF-8 file is refused with the line and byte offset of the first bad byte, so
the user can find it, instead of a UnicodeDecodeError traceback after the command started.
"""

from __future__ import annotations

import codecs
from pathlib import Path

from kdcompress.errors import UsageError


def read_text_lines(path: Path) -> list[str]:
    """The non-empty lines of the UTF-8 text file ``path``, stripped (a leading BOM is skipped).

    Raises UsageError for a missing or unreadable file, a binary file (a NUL byte), bytes that
    are not UTF-8, and a file without any non-empty line.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    nul = data.find(b"\0")
    if nul >= 0:
        raise UsageError(f"{path}: a binary file, not text (NUL byte {_where(data, nul)})")
    try:
        text = data[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = start + exc.start
        raise UsageError(
            f"{path}: not UTF-8 text (byte 0x{data[offset]:02x} {_where(data, offset)})"
        ) from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise UsageError(f"{path}: no text (every line is empty)")
    return lines


def _where(data: bytes, offset: int) -> str:
    line = data.count(b"\n", 0, offset) + 1
    return f"at line {line}, byte offset {offset}"
