"""Checking and cleaning the offline asset cache (``kdcompress cache verify | clean``).

Every cache entry (a built-in teacher, the Bible, IMDB, zh-inews) records in its marker file
the size and SHA-256 of each file it was built with. Normal use checks sizes only (hashing a
teacher's weights at every start would cost seconds); a damaged file of the same size would go
unnoticed until it gave wrong numbers or a library error, so ``verify`` re-hashes everything and
``--fix`` rebuilds what is damaged from the verified downloads.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdcompress import assets
from kdcompress.errors import UsageError, first_line

OK, DAMAGED, UNVERIFIABLE, NOT_BUILT = "ok", "damaged", "sizes only", "not built"


@dataclass(frozen=True)
class EntryCheck:
    name: str
    path: Path
    state: str  # OK, DAMAGED, UNVERIFIABLE (built before hashes were recorded), NOT_BUILT
    problems: tuple[str, ...] = ()


def entry_names(names: list[str] | None = None) -> list[str]:
    """The named entries (refusing unknown names), or every entry of the catalogue."""
    if not names:
        return sorted(assets.ASSETS)
    unknown = [n for n in names if n not in assets.ASSETS]
    if unknown:
        known = ", ".join(sorted(assets.ASSETS))
        raise UsageError(f"unknown cache entry {', '.join(unknown)} (entries: {known})")
    return names


def verify(name: str) -> EntryCheck:
    """Re-hash every file the entry's marker records; say what is missing or changed."""
    folder = assets.cache_dir() / name
    marker_file = folder / assets.MARKER
    if not folder.exists():
        return EntryCheck(name, folder, NOT_BUILT)
    try:
        files: dict[str, Any] = json.loads(marker_file.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return EntryCheck(name, folder, DAMAGED, (f"{assets.MARKER} is missing or unreadable",))
    problems = [p for rel, recorded in files.items() if (p := _check(folder / rel, recorded))]
    if problems:
        return EntryCheck(name, folder, DAMAGED, tuple(problems))
    hashed = all(isinstance(v, list) for v in files.values())
    return EntryCheck(name, folder, OK if hashed else UNVERIFIABLE)


def _check(path: Path, recorded: Any) -> str | None:
    if not path.is_file():
        return f"{path.name} is missing"
    if path.stat().st_size != assets.file_size(recorded):
        return f"{path.name} has another size than when it was built"
    if isinstance(recorded, list) and assets.sha256_file(path) != recorded[1]:
        return f"{path.name} has changed since it was built (SHA-256 differs)"
    return None


def remove(name: str) -> bool:
    """Delete one entry (it is rebuilt from the downloads on next use); False if absent."""
    folder = assets.cache_dir() / name
    if not folder.exists():
        return False
    shutil.rmtree(folder)
    return True


def rebuild(name: str) -> Path:
    """Delete and build one entry again (from the verified downloads when they are cached)."""
    remove(name)
    return assets.asset_dir(name)


def damage_hint(exc: BaseException) -> str | None:
    """One line for a library error that a damaged cache file typically causes, else None."""
    kind, text = type(exc).__name__, first_line(exc)
    if kind in ("DatabaseError", "SafetensorError", "HeaderTooLarge") or "malformed" in text:
        return (
            f"{text} ({kind}): a model or data file is damaged; for kdcompress's own cache, "
            "`kdcompress cache verify` finds it and `--fix` rebuilds it"
        )
    return None
