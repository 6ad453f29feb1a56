"""Safe writing of outputs: atomic files and folders, and the lock on an output while it is
written.

Files are written atomically (temp file + rename) and output directories are built in a
temporary sibling and renamed into place, so an interrupted run never leaves a half-written
output behind. An output is locked while it is written (``output_lock``), so two processes
never write the same one; what a killed writer left beside it is removed by the next one.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from filelock import FileLock, Timeout
from rich.markup import escape

from kdcompress.console import info
from kdcompress.errors import KDCompressError, OutputExistsError, OutputLockedError, UsageError


def _share_files(folder: Path) -> None:
    """Give files that a library wrote private (0600, e.g. safetensors' weights) the mode their
    neighbours have, so an output folder is readable as a whole."""
    mode = 0o666 & ~_umask()
    for item in folder.rglob("*"):
        if item.is_file() and item.stat().st_mode & 0o777 != mode:
            item.chmod(mode)


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file private (0600); artifacts get the usual umask-based mode.
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# The names tempfile gives: ".NAME." + 8 random characters + a suffix (see atomic_write_text
# and atomic_output_dir; "old" is an output being replaced).
_LEFTOVER = r"\.{name}\.[a-z0-9_]{{8}}\.(partial|old|tmp)"
_held: dict[Path, int] = {}  # lock file -> how many nested output_lock blocks hold it


def lock_file_for(path: Path) -> Path:
    """The lock file of output ``path``: a hidden sibling, so it works before ``path`` exists."""
    path = Path(os.path.abspath(path))
    return path.with_name(f".{path.name}.lock")


@contextmanager
def output_lock(path: Path, *, wait: bool = False) -> Iterator[None]:
    """Hold the exclusive lock of output ``path`` (a folder or a file) while the block runs.

    The lock file records the holder's PID. If another process holds it, raise
    OutputLockedError naming that PID, or with ``wait`` wait for it. Nested blocks for the same
    output in one process share the lock. Taking it removes what a killed writer of ``path``
    left beside it (hidden staging folders and temp files): no live process owns them then.
    """
    lock_file = lock_file_for(path)
    if lock_file in _held:
        _held[lock_file] += 1
        try:
            yield
        finally:
            _held[lock_file] -= 1
        return
    lock, owned = _acquire(lock_file, path, wait=wait)
    _held[lock_file] = 1
    try:
        _remove_leftovers(lock_file.parent, lock_file.name[1 : -len(".lock")])
        yield
    finally:
        del _held[lock_file]
        # Unlinked while still held: a process that opened the old file then finds it unlinked
        # (filelock checks) and does not take a lock that no longer guards the name.
        with suppress(OSError):
            if os.path.samestat(os.stat(lock_file), owned):
                lock_file.unlink()
        lock.release()


def _acquire(lock_file: Path, path: Path, *, wait: bool) -> tuple[FileLock, os.stat_result]:
    owned: list[os.stat_result] = []

    def record_holder(fd: int) -> None:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        owned.append(os.fstat(fd))

    lock_file.parent.mkdir(parents=True, exist_ok=True)
    # A short timeout, not 0: a holder that is just finishing unlinks the file, and a contender
    # that opened it in that instant must look again rather than report a stale holder.
    lock = FileLock(lock_file, timeout=0.5, thread_local=False, on_acquired=record_holder)
    try:
        try:
            lock.acquire()
        except Timeout:
            holder = _holder(lock_file)
            if not wait:
                raise OutputLockedError(
                    f"{path} is being written by {holder}: wait for it to finish or stop it"
                ) from None
            info(f"waiting for {holder} to finish writing {escape(str(path))}")
            lock.acquire(timeout=-1)
    except OSError as exc:
        raise KDCompressError(f"cannot lock {path} ({lock_file}): {exc}") from exc
    return lock, owned[-1]


def _holder(lock_file: Path) -> str:
    try:
        pid = int(lock_file.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return "another process"
    return f"another process (PID {pid})"


def _remove_leftovers(folder: Path, name: str) -> None:
    pattern = re.compile(_LEFTOVER.format(name=re.escape(name)))
    for entry in folder.iterdir():
        if not pattern.fullmatch(entry.name):
            continue
        info(f"removing {escape(str(entry))}, left behind by an interrupted run")
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def check_writable_location(path: Path, *, what: str = "output") -> None:
    """``path`` can be created: no part of the way to it is a file, and the deepest folder
    that exists is writable (checked before any work, so a long run cannot fail at its end)."""
    path = Path(path).expanduser().absolute()
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{what} {path}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise UsageError(f"{what} {path}: cannot write in {parent} (permission denied)")
            return


def check_output_dir(path: Path, *, overwrite: bool) -> None:
    """Refuse an existing, non-empty output directory unless ``overwrite`` is set."""
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"{path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise OutputExistsError(f"{path} already exists and is not empty; pass --overwrite")


@contextmanager
def atomic_output_dir(path: Path, *, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` only if the block succeeds.

    On failure the temporary directory is removed and ``path`` is left exactly as it was.
    The output's lock is held meanwhile (see ``output_lock``; a writer already holding it, such
    as the command that asked for ``path``, keeps it; another one is waited for).
    """
    with output_lock(path, wait=True):
        check_output_dir(path, overwrite=overwrite)
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(
            tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
        )
        staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; outputs get the usual mode
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _share_files(staging)
        if path.exists():
            retired = staging.with_suffix(".old")
            path.rename(retired)
            staging.rename(path)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(path)
