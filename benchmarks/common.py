"""What the benchmark scripts share: running a kdcompress command with its output in a log."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

KDCOMPRESS = [sys.executable, "-m", "kdcompress"]


def call(command: list[str], log: Path) -> None:
    """Run ``command``, appending its output to ``log``; stop the script if it fails."""
    print("$", shlex.join(command), flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}), see {log}")
