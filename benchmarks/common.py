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


def distill_then_score(distill: list[str], reference: Path, folder: Path) -> Path:
    """Run a ``kdcompress distill`` command writing ``folder/student`` (resuming a killed one)
    unless it is done, then the quick suite with retention against ``reference`` unless that is
    done; returns the report ``folder/eval-quick.json``."""
    from kdcompress.distill import checkpoint_dir_for

    student, report = folder / "student", folder / "eval-quick.json"
    if not (student / "distill.json").is_file():
        resume = ["--resume"] if checkpoint_dir_for(student).exists() else []
        call(distill + resume, folder / "distill.log")
    if not report.is_file():
        evaluate = [*KDCOMPRESS, "eval", "--model", str(student), "--quick"]
        call(
            [*evaluate, "--reference", str(reference), "--output", str(report)], folder / "eval.log"
        )
    return report
