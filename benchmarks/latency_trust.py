"""Can the latency numbers be trusted? Predicted vs measured, speedup spread, disturbance flags.

Run on a quiet machine (each mode prints a Markdown table for BENCHMARKS.md):

    # N fresh quick runs, run-1 .. run-N under the folder, then the table (about 15 min each)
    .venv/bin/python benchmarks/latency_trust.py runs N=3 runs/trust
    # re-time existing run folders K times each (validation without quality or memory; the
    # run's own validation.json/.md are put back afterwards), then the table
    .venv/bin/python benchmarks/latency_trust.py revalidate K=3 runs/demo runs/trust/run-1
    # the table of validations already written (a run's validation.json, or the re-timings)
    .venv/bin/python benchmarks/latency_trust.py table runs/demo runs/trust/run-*
    # one process per model vs both in one process, K times, on a run's teacher and student
    .venv/bin/python benchmarks/latency_trust.py isolation K=3 runs/demo
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from common import KDCOMPRESS, call

from kdcompress.artifacts import STUDENT_FP32, TEACHER, ValidationReport

RETIMED = "validation-trust-{}.json"  # a re-timing, kept next to the run's validation.json
SHAPE = (1, 128)  # the shape the numbers are at: batch 1, seq 128


def validations(run_dir: Path) -> list[Path]:
    """The run's validation and every re-timing of it."""
    found = sorted(run_dir.glob("export-*/validation.json"))
    return found + sorted(run_dir.glob("export-*/" + RETIMED.format("*")))


def rows(run_dir: Path, path: Path) -> list[str]:
    """One table row per predicted model: predicted, measured, error, speedup, flags."""
    report = ValidationReport.load(path)
    batch, seq = SHAPE
    rounds = report.speedup_rounds(batch, seq, STUDENT_FP32)
    speedup = report.speedup(batch, seq, STUDENT_FP32)
    spread = f"{min(rounds):.2f}-{max(rounds):.2f}" if rounds else "-"
    flags = sorted({f for r in report.latency for f in r.latency.flags})
    disturbed = f"{sum(r.latency.disturbed for r in report.latency)}/{len(report.latency)}"
    out = []
    for pred in report.predictions():
        if (pred.batch, pred.seq_len) != SHAPE or pred.measured_ms is None or pred.error is None:
            continue
        stats = report.stats(pred.model, batch, seq)
        steal = stats.steal if stats else None
        drift = stats.reference_drift if stats else None
        cells = [
            f"`{run_dir.name}/{path.name}`",
            pred.model,
            f"{pred.predicted_ms:.2f}",
            f"{pred.measured_ms:.2f}",
            f"{pred.error:+.0%}" + (" **off**" if pred.off else ""),
            f"{speedup:.2f}x" if speedup and pred.model == STUDENT_FP32 else "",
            spread if pred.model == STUDENT_FP32 else "",
            "-" if steal is None else f"{steal:.0%}",
            "-" if drift is None else f"{drift:+.0%}",
            f"{disturbed} {', '.join(flags)}".strip(),
        ]
        out.append("| " + " | ".join(cells) + " |")
    return out


def table(run_dirs: list[Path]) -> None:
    print(f"Batch {SHAPE[0]}, seq {SHAPE[1]}; error = predicted / measured - 1.\n")
    print(
        "| validation | model | predicted ms | measured ms | error | speedup | speedup range "
        "over rounds | steal | reference kernel | disturbed timings |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for run_dir in run_dirs:
        for path in validations(run_dir):
            for line in rows(run_dir, path):
                print(line)


def fresh_runs(count: int, folder: Path) -> list[Path]:
    """``count`` quick runs of the default teacher, each in a folder of its own."""
    run_dirs = [folder / f"run-{i + 1}" for i in range(count)]
    for run_dir in run_dirs:
        command = [*KDCOMPRESS, "run", "--teacher", "me5-small", "--backend", "onnxruntime"]
        call([*command, "--budget", "quick", "--output", str(run_dir)], folder / "runs.log")
    return run_dirs


def revalidate(run_dir: Path, times: int) -> None:
    """Time the run's export and teacher export again ``times`` times, keeping each result as
    ``validation-trust-K.json``; the run's own validation files are put back afterwards."""
    from kdcompress.validate import MARKDOWN, REPORT, validate_export

    (export_dir,) = (p.parent for p in run_dir.glob("export-*/validation.json"))
    teacher_dir = run_dir / export_dir.name.replace("export-", "teacher-export-")
    kept = {name: (export_dir / name).read_bytes() for name in (REPORT, MARKDOWN)}
    try:
        for k in range(times):
            validate_export(
                export_dir=export_dir,
                teacher=teacher_dir,
                profile=run_dir / "profile.json",
                quality="none",
                memory=False,
                rounds=5,
            )
            shutil.copy2(export_dir / REPORT, export_dir / RETIMED.format(k + 1))
    finally:
        for name, data in kept.items():
            (export_dir / name).write_bytes(data)


def _child(files: list[str]) -> None:
    """In a process of its own: the given models side by side (alone when there is one)."""
    from kdcompress.backends import get_backend
    from kdcompress.backends.base import compare_latency
    from kdcompress.encoding import synthetic_batch

    backend = get_backend("onnxruntime")
    models = {f: backend.load(model_path=Path(f), threads=2) for f in files}
    batch = synthetic_batch(vocab_size=30_000, batch=SHAPE[0], seq_len=SHAPE[1])
    stats = compare_latency(models, batch, rounds=5)
    print(json.dumps({f: {"p50": s.p50_ms, "flags": list(s.flags)} for f, s in stats.items()}))


def isolation(run_dir: Path, times: int) -> None:
    """Teacher and student p50 with both models in one process vs each in its own."""
    report = ValidationReport.load(validations(run_dir)[0])
    files = {m.name: m.file for m in report.models if m.name in (TEACHER, STUDENT_FP32)}

    def measure(paths: list[str]) -> dict[str, dict[str, Any]]:
        command = [sys.executable, __file__, "child", *paths]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        result: dict[str, dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    print("| try | model | alone p50 ms | together p50 ms | together / alone | flags |")
    print("|---|---|---|---|---|---|")
    for k in range(times):
        together = measure(list(files.values()))
        for name, path in files.items():
            alone, both = measure([path])[path], together[path]
            flags = ", ".join([*alone["flags"], *both["flags"]])
            print(
                f"| {k + 1} | {name} | {alone['p50']:.2f} | {both['p50']:.2f} | "
                f"{both['p50'] / alone['p50']:.3f} | {flags} |"
            )


def _count(arg: str) -> int:
    if not arg.startswith(("N=", "K=")):
        raise SystemExit(f"expected N=COUNT or K=COUNT, got {arg}")
    return int(arg[2:])


def main(argv: list[str]) -> None:
    mode, *rest = argv or ["help"]
    if mode == "runs":
        table(fresh_runs(_count(rest[0]), Path(rest[1])))
    elif mode == "revalidate":
        times, run_dirs = _count(rest[0]), [Path(p) for p in rest[1:]]
        for run_dir in run_dirs:
            revalidate(run_dir, times)
        table(run_dirs)
    elif mode == "table":
        table([Path(p) for p in rest])
    elif mode == "isolation":
        isolation(Path(rest[1]), _count(rest[0]))
    elif mode == "child":
        _child(rest)
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
