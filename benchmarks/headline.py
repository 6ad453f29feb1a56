"""The paper's headline, measured here: teacher vs KD-NAS student vs a hand-picked student.

One run, every stage resumable (re-run the same command after an interruption):

1. KD-NAS search against the hardware profile (the ``standard`` budget's search by default);
   the student is the search's 7x recommendation.
2. The hand-picked baseline: the conventional choice an engineer makes without a search -- a
   slice of the teacher at full width (first/uniform k layers x 384) or a uniform 4-layer model
   -- whose *predicted* latency is closest to the KD-NAS student's, so the two are compared
   at (nearly) equal latency.
3. Both distilled with the same budget, the same corpus, the same teacher cache and seed.
4. Teacher and both students exported to the same runtime (fp32, plus int8 for the students),
   then measured side by side in one process: latency at batch 1 / seq 128, peak memory of a
   process that only loads the runtime and the model, file size, and the evaluation suite
   through the runtime. The result is written to ``OUTPUT/headline.md`` and, with
   ``--benchmarks-md``, into BENCHMARKS.md between the headline markers.

    .venv/bin/python benchmarks/headline.py --output runs/headline --benchmarks-md BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from kdcompress.artifacts import (
    STUDENT_FP32,
    STUDENT_INT8,
    TEACHER,
    ModelSummary,
    StudentArch,
    ValidationReport,
)
from kdcompress.console import info
from kdcompress.errors import ArtifactError
from kdcompress.outputs import atomic_write_text
from kdcompress.pipeline import PLANS, Budget, BudgetPlan, chosen_arch, search_stage
from kdcompress.space import SearchSpace

SEQ_LEN = 128
TASKS = ("retrieval", "imdb", "zh-inews")
START_MARK = "<!-- headline:start -->"
END_MARK = "<!-- headline:end -->"


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    standard = PLANS[Budget.STANDARD]
    parser.add_argument("--teacher", default="me5-small")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--target", type=Path, default=Path("profiles/amd-epyc-onnxruntime.json"))
    parser.add_argument("--episodes", type=int, default=standard.episodes)
    parser.add_argument("--candidates", type=int, default=standard.candidates)
    parser.add_argument("--proxy-size", type=int, default=standard.proxy_sentences)
    parser.add_argument("--proxy-steps", type=int, default=standard.proxy_steps)
    parser.add_argument("--speedup", default="7x", help="which recommendation to distil")
    parser.add_argument("--distill-sentences", type=int, default=standard.distill_sentences)
    parser.add_argument("--distill-steps", type=int, default=1_000)
    parser.add_argument("--quantize", default="static", help="int8 mode for the students")
    parser.add_argument("--quick-eval", action="store_true", help="the quick evaluation suite")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("runs/headline"))
    parser.add_argument("--benchmarks-md", type=Path, default=None)
    return parser.parse_args()


@dataclass(frozen=True)
class Students:
    teacher: StudentArch
    kdnas: StudentArch
    baseline: StudentArch
    why_baseline: str


def hand_picked_options(teacher: StudentArch) -> list[tuple[StudentArch, str]]:
    """What one picks without a search: teacher-width slices, or uniform 4-layer models."""
    options = [
        (
            StudentArch(k, teacher.hidden, teacher.heads, teacher.ffn),
            f"{k} of the teacher's layers at full width",
        )
        for k in range(1, teacher.layers // 2 + 1)
    ]
    for hidden in (128, 192, 256, 320):
        # The teacher's head size, and the FFN ratio of 4 every BERT-like model uses.
        heads = hidden // (teacher.hidden // teacher.heads)
        options.append((StudentArch(4, hidden, heads, 4 * hidden), f"uniform 4 x {hidden}"))
    space = SearchSpace()  # only shapes the hardware profile measured
    return [option for option in options if space.allows(option[0])]


def pick_students(run_dir: Path, args: argparse.Namespace, plan: BudgetPlan) -> Students:
    from kdcompress.latency.predictor import LatencyModel
    from kdcompress.latency.schema import load_profile
    from kdcompress.search.runner import SearchResult

    search_json = search_stage(run_dir, args.teacher, args.target, plan, args.seed)
    kdnas, label = chosen_arch(search_json, args.speedup)
    result = SearchResult.load(search_json)
    latency = LatencyModel.from_profile(load_profile(args.target))

    def predicted(arch: StudentArch) -> float:
        return latency.predict_ms(arch, seq_len=128, batch=1)

    goal = predicted(kdnas)
    options = [o for o in hand_picked_options(result.teacher_arch) if o[0] != kdnas]
    baseline, why = min(options, key=lambda o: abs(predicted(o[0]) - goal))
    info(
        f"KD-NAS {label}: {kdnas.describe()} ({goal:.2f} ms predicted); hand-picked: "
        f"{baseline.describe()} ({why}, {predicted(baseline):.2f} ms predicted)"
    )
    return Students(result.teacher_arch, kdnas, baseline, why)


def distill(run_dir: Path, name: str, arch: StudentArch, args: argparse.Namespace) -> Path:
    from kdcompress.distill import DistillJob, checkpoint_dir_for, run_distill
    from kdcompress.models import resolve_teacher

    out = run_dir / name
    if (out / "distill.json").is_file():
        info(f"[dim]{name}: distilled earlier[/]")
        return out
    job = DistillJob(
        arch=arch,
        output=out,
        steps=args.distill_steps,
        sentences=args.distill_sentences,
        trim_vocab=True,
        seed=args.seed,
        cache_dir=run_dir / "teacher-cache",  # both students learn from the same targets
        checkpoint_every=100,
        resume=checkpoint_dir_for(out).exists(),
    )
    run_distill(job, teacher=resolve_teacher(args.teacher))
    return out


def export_and_validate(
    run_dir: Path, name: str, student: Path, args: argparse.Namespace
) -> ValidationReport:
    """The student exported (fp32 + int8) and validated side by side with the teacher (whose
    export and scores the validation keeps in the cache, so both students share them)."""
    from kdcompress.export import ExportFormat, format_for_backend, teacher_export
    from kdcompress.hardware import threads_or_default
    from kdcompress.pipeline import export_stage
    from kdcompress.quantize import QuantizeOptions, parse_quantization
    from kdcompress.validate import REPORT, validate_export

    fmt: ExportFormat = format_for_backend(args.backend)
    options = QuantizeOptions(mode=parse_quantization(args.quantize), seed=args.seed)
    out = export_stage(str(student), run_dir / f"export-{name}", fmt, args.threads, options)
    suite = "quick" if args.quick_eval else "full"
    try:
        earlier = ValidationReport.load(out / REPORT)
        if earlier.eval_suite == suite and earlier.teacher_export is not None:
            return earlier
    except ArtifactError:
        pass
    return validate_export(
        export_dir=out,
        teacher=teacher_export(args.teacher, args.backend, threads_or_default(args.threads)),
        profile=args.target,
        threads=args.threads,
        quality=suite,
    )


def _row(label: str, arch: str, model: ModelSummary | None, report: ValidationReport) -> str:
    if model is None:
        return f"| {label} | {arch} | (not measured) |"
    p50 = report.p50(model.name, 1, SEQ_LEN)
    speedup = report.speedup(1, SEQ_LEN, model.name)
    memory = model.memory
    cells = [
        label,
        arch,
        f"{p50:.2f}" if p50 else "",
        f"{speedup:.1f}x" if speedup else "",
        f"{memory.peak_mib:.0f}" if memory else "",
        f"{model.size_bytes / 2**20:.1f}",
        *(f"{model.scores.get(task, float('nan')):.3f}" for task in TASKS),
        f"{model.retention:.1%}" if model.retention is not None else "",
    ]
    return "| " + " | ".join(cells) + " |"


def _target(met: bool, text: str) -> str:
    return f"- {'**met**' if met else '**missed**'}: {text}"


def headline_markdown(
    args: argparse.Namespace,
    students: Students,
    kdnas: ValidationReport,
    baseline: ValidationReport,
    minutes: float,
) -> list[str]:
    import onnxruntime
    import openvino
    import torch

    from kdcompress.hardware import cpu_model

    teacher = kdnas.summary(TEACHER)
    assert teacher is not None and teacher.memory is not None
    header = [
        "model",
        "architecture",
        f"p50 ms (b1, seq {SEQ_LEN})",
        "speedup vs teacher",
        "peak RSS MiB",
        "file MiB",
        *TASKS,
        "retention",
    ]
    lines = [
        f"Teacher `{args.teacher}`, runtime {args.backend}, {kdnas.threads} threads, "
        f"{cpu_model()}; Python {platform.python_version()}, torch {torch.__version__}, "
        f"onnxruntime {onnxruntime.__version__}, openvino {openvino.__version__}. Whole run "
        f"{minutes:.0f} min of work (resumed stages count their original time).",
        "",
        "```bash",
        " ".join([".venv/bin/python", *sys.argv]),
        "```",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        _row("teacher", students.teacher.describe(), teacher, kdnas),
    ]
    for label, arch, report in (
        ("KD-NAS", students.kdnas.describe(), kdnas),
        (f"hand-picked ({students.why_baseline})", students.baseline.describe(), baseline),
    ):
        for name in (STUDENT_FP32, STUDENT_INT8):
            lines.append(
                _row(f"{label} {name.removeprefix('student-')}", arch, report.summary(name), report)
            )
    lines += [
        "",
        f"Latency: each student timed in turns with the teacher in one process ({SEQ_LEN} "
        "tokens, batch 1); speedups are ratios within one run. Peak RSS: a fresh process that "
        "imports only the runtime, loads the model and runs it. Quality: the "
        f"{'quick' if args.quick_eval else 'full'} evaluation suite through the runtime; "
        "retention = mean of per-task ratios to the teacher.",
        "",
        "Targets:",
        *targets(students, kdnas, baseline),
        "",
    ]
    return lines


def targets(students: Students, kdnas: ValidationReport, baseline: ValidationReport) -> list[str]:
    teacher = kdnas.summary(TEACHER)
    fp32, int8 = kdnas.summary(STUDENT_FP32), kdnas.summary(STUDENT_INT8)
    base_fp32 = baseline.summary(STUDENT_FP32)
    if not (teacher and fp32 and int8 and base_fp32):
        return ["- not evaluated: a model is missing from the validation"]
    lines = []
    speed_fp32 = kdnas.speedup(1, SEQ_LEN, STUDENT_FP32) or 0.0
    speed_int8 = kdnas.speedup(1, SEQ_LEN, STUDENT_INT8) or 0.0
    kept = fp32.retention or 0.0
    lines.append(
        _target(
            kept >= 0.9 and speed_fp32 >= 7,
            f"KD-NAS student fp32 keeps {kept:.1%} of the teacher's quality (target 90%) at "
            f"{speed_fp32:.1f}x lower latency (target 7x)",
        )
    )
    lines.append(
        _target(
            speed_int8 >= 10,
            f"int8: {speed_int8:.1f}x lower latency (target 10x), retention "
            f"{(int8.retention or 0):.1%}",
        )
    )
    if teacher.memory and int8.memory:
        ratio = teacher.memory.peak_mib / int8.memory.peak_mib
        lines.append(
            _target(
                ratio >= 5,
                f"peak memory {int8.memory.peak_mib:.0f} MiB vs the teacher's "
                f"{teacher.memory.peak_mib:.0f} MiB: 1/{ratio:.1f} (target 1/5); the model "
                f"alone {int8.memory.model_mib:.0f} vs {teacher.memory.model_mib:.0f} MiB",
            )
        )
    size = teacher.size_bytes / int8.size_bytes
    lines.append(_target(size >= 10, f"file size 1/{size:.1f} of the teacher's (target 1/10)"))
    base_speed = baseline.speedup(1, SEQ_LEN, STUDENT_FP32) or 0.0
    # "Equal latency": the two measured speedups within 10% of each other.
    gap = speed_fp32 / base_speed - 1 if base_speed else 0.0
    lines.append(
        _target(
            kept > (base_fp32.retention or 0.0) and abs(gap) <= 0.1,
            f"KD-NAS {students.kdnas.describe()} vs hand-picked {students.baseline.describe()}: "
            f"retention {kept:.1%} vs {(base_fp32.retention or 0):.1%} at {speed_fp32:.1f}x vs "
            f"{base_speed:.1f}x speedup (fp32; KD-NAS {abs(gap):.0%} "
            f"{'faster' if gap >= 0 else 'slower'}; equal latency = within 10%)",
        )
    )
    return lines


def write_benchmarks(path: Path, section: list[str]) -> None:
    """Replace the text between the headline markers of BENCHMARKS.md (append if absent)."""
    text = path.read_text(encoding="utf-8")
    block = "\n".join([START_MARK, *section, END_MARK])
    if START_MARK in text and END_MARK in text:
        before, rest = text.split(START_MARK, 1)
        text = before + block + rest.split(END_MARK, 1)[1]
    else:
        text = (
            text.rstrip("\n")
            + "\n\n## Headline: KD-NAS student vs teacher vs hand-picked\n\n"
            + block
            + "\n"
        )
    atomic_write_text(path, text)


def main() -> None:
    args = parse()
    started = time.perf_counter()
    run_dir: Path = args.output
    run_dir.mkdir(parents=True, exist_ok=True)
    plan = BudgetPlan(
        args.episodes,
        args.candidates,
        args.proxy_size,
        args.proxy_steps,
        args.distill_sentences,
        args.distill_steps,
        quick_eval=args.quick_eval,
        target_speedup=float(args.speedup.rstrip("x")),
    )
    students = pick_students(run_dir, args, plan)
    record = {"kdnas": students.kdnas, "baseline": students.baseline}
    choice = {name: dataclasses.asdict(arch) for name, arch in record.items()}
    atomic_write_text(
        run_dir / "students.json",
        json.dumps({**choice, "why_baseline": students.why_baseline}, indent=2) + "\n",
    )
    kdnas_dir = distill(run_dir, "student-kdnas", students.kdnas, args)
    baseline_dir = distill(run_dir, "student-baseline", students.baseline, args)
    info(f"distillation done in {(time.perf_counter() - started) / 60:.1f} min")
    kdnas = export_and_validate(run_dir, "kdnas", kdnas_dir, args)
    baseline = export_and_validate(run_dir, "baseline", baseline_dir, args)
    minutes = _elapsed_minutes(run_dir, started)
    section = headline_markdown(args, students, kdnas, baseline, minutes)
    atomic_write_text(run_dir / "headline.md", "\n".join(section) + "\n")
    info("\n".join(section))
    if args.benchmarks_md is not None:
        write_benchmarks(args.benchmarks_md, section)
        info(f"[green]Updated[/] {args.benchmarks_md}")


def _elapsed_minutes(run_dir: Path, started: float) -> float:
    """Minutes of work across resumed invocations, accumulated in ``RUN_DIR/elapsed.json``."""
    path = run_dir / "elapsed.json"
    before = json.loads(path.read_text())["minutes"] if path.is_file() else 0.0
    total = float(before) + (time.perf_counter() - started) / 60
    atomic_write_text(path, json.dumps({"minutes": total}))
    return total


if __name__ == "__main__":
    main()
