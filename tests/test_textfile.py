"""Reading the user's own text files: UTF-8 lines, bad bytes named by line and offset."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdcompress.errors import UsageError
from kdcompress.textfile import read_text_lines


def test_lines_are_stripped_and_empty_ones_dropped(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_bytes("\ufeffhello world\r\n\n  你好 世界  \nlast".encode())
    assert read_text_lines(path) == ["hello world", "你好 世界", "last"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xef\xbb\xbfab\ncd\xff\n", r"byte 0xff at line 2, byte offset 8\)"),
        (b"ab\ncd\xe2\x82", r"byte 0xe2 at line 2, byte offset 5\)"),  # cut mid-character
        (b"\x89PNG\r\n\x1a\n\x00\x00", "a binary file"),
        (b"\n  \n", "no text"),
    ],
)
def test_bad_files_are_one_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "c.txt"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=message):
        read_text_lines(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        read_text_lines(tmp_path / "nope.txt")
    with pytest.raises(UsageError, match="cannot be read"):
        read_text_lines(tmp_path)
