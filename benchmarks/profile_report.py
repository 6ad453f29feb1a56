"""Summarise hardware profiles as a Markdown table (for BENCHMARKS.md).

.venv/bin/python benchmarks/profile_report.py profiles/*.json
"""

from __future__ import annotations

import sys
from pathlib import Path

from kdcompress.latency.schema import HardwareProfile


def row(path: Path) -> str:
    profile = HardwareProfile.load(path)
    s, err = profile.settings, profile.error
    kind = "quick" if s.runs <= 20 else "full"
    heldout = "- | - | - | -"
    if err:
        heldout = f"{err.mape:.1f}% | {err.worst_ape:.1f}% | {err.heldout_architectures} | "
        heldout += f"{err.fit_mape:.1f}%"
    shapes = ", ".join(str(x) for x in s.seq_lens)
    return (
        f"| `{path}` | {s.backend} {profile.backend_version} | {kind} | {shapes} | {s.threads} | "
        f"{len(profile.blocks)} / {len(profile.models)} | {profile.noise:.1%} | {heldout} |"
    )


def main(paths: list[str]) -> None:
    print(
        "| profile | backend | kind | seq lens | threads | blocks / encoders timed | "
        "median noise | held-out MAPE | worst | held-out archs | fit MAPE |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for path in paths:
        print(row(Path(path)))


if __name__ == "__main__":
    main(sys.argv[1:])
