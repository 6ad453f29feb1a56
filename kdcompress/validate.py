"""Validate stage: parity of an export with its PyTorch source and their latency side by side."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdcompress.artifacts import (
    MANIFEST,
    STUDENT_FP32,
    STUDENT_INT8,
    STUDENT_PYTORCH,
    TEACHER,
    VALIDATION_MARKDOWN,
    VALIDATION_REPORT,
    ExportManifest,
    LatencyRow,
    MemoryUse,
    ModelSummary,
    ParityReport,
    PredictedLatency,
    ValidationReport,
)
from kdcompress.backends import LoadedModel, get_backend
from kdcompress.backends.base import compare_latency
from kdcompress.console import info, progress, status, warn
from kdcompress.encoding import (
    longest_input,
    synthetic_batch,
)
from kdcompress.errors import ArtifactError, UsageError
from kdcompress.hardware import cpu_model, threads_or_default
from kdcompress.outputs import atomic_write_text
from kdcompress.parity import check_parity, model_bytes

REPORT = VALIDATION_REPORT
MARKDOWN = VALIDATION_MARKDOWN
DEFAULT_SEQ_LENS = (32, 128)
DEFAULT_BATCH_SIZES = (1, 8)  # latency, and a throughput batch
SUITES = ("none", "quick", "full")

if TYPE_CHECKING:
    from kdcompress.latency.coverage import Coverage
    from kdcompress.latency.predictor import LatencyModel
    from kdcompress.quality import EvalSettings


def _model_limits(model_dir: Path) -> tuple[int, int]:
    """The vocabulary size and the longest input of a model folder."""
    config = json.loads((model_dir / "config.json").read_text())
    return int(config["vocab_size"]), longest_input(config)


def read_manifest(export_dir: Path) -> ExportManifest:
    """An export folder's manifest, or a clear error if the folder is not an export."""
    if not (export_dir / MANIFEST).is_file():
        raise ArtifactError(f"{export_dir}: not an export directory (no {MANIFEST})")
    return ExportManifest.load(export_dir / MANIFEST)


def _source_dir(folder: Path, manifest: ExportManifest) -> Path:
    """The Hugging Face folder an export was made from, which must still exist."""
    source = Path(manifest.source_model)
    if not (source / "config.json").is_file():
        raise ArtifactError(f"{folder}: its source model {source} no longer exists")
    return source


def _teacher(folder: Path, student: ExportManifest) -> tuple[Path, ExportManifest, int]:
    """The teacher's export folder on the student's runtime, its manifest, its vocab size."""
    manifest = read_manifest(folder)
    if manifest.backend != student.backend:
        raise UsageError(
            f"teacher export runs on {manifest.backend}, the student on {student.backend}: "
            "compare on the same runtime"
        )
    return folder, manifest, _model_limits(_source_dir(folder, manifest))[0]


def _student_files(export_dir: Path, manifest: ExportManifest) -> dict[str, Path]:
    """Model name -> file: the student's fp32 file, and its int8 file when quantized."""
    files = {STUDENT_FP32: export_dir / (manifest.fp32_file or manifest.model_file)}
    if manifest.quantization != "none":
        files[STUDENT_INT8] = export_dir / manifest.model_file
    return files


def _load(backend: str, path: Path, threads: int) -> LoadedModel:
    return get_backend(backend).load(model_path=path, threads=threads)


def validate_export(
    *,
    export_dir: Path,
    teacher: Path | None = None,
    profile: Path | None = None,
    seq_lens: tuple[int, ...] | None = None,
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES,
    threads: int | None = None,
    runs: int = 30,
    rounds: int = 3,
    quality: str = "none",
    memory: bool = True,
) -> ValidationReport:
    """Parity, side-by-side latency, size, memory and quality of an export in one report.

    Measured together in one process on the same runtime and threads: the student's fp32
    file, its int8 file when the export was quantized, and the teacher (``teacher``: its export
    folder on the same runtime, see :func:`kdcompress.export.teacher_export`) -- or, without a
    teacher, the student's PyTorch source. ``quality`` (quick / full) runs the evaluation
    suite on each; ``memory`` measures each file's peak RSS in a process of its own. With
    ``profile``, the latency the hardware profile predicts for every model it can (the
    student's fp32 file and the teacher; an int8 file is not what a profile times) is reported
    next to the measurement. Writes ``validation.json`` and ``validation.md`` into ``export_dir``.
    """
    threads = threads_or_default(threads)
    suite = parse_suite(quality)
    if suite != "none":  # missing evaluation data fails now, not after minutes of timing
        from kdcompress.quality import check_data

        check_data(_suite_settings(suite))
    latency_model = _latency_model(profile)  # a bad profile fails now, not after the timing
    subject = _subject(export_dir, teacher, seq_lens)
    parity, fp32_parity, rows = _side_by_side(subject, batch_sizes, runs, rounds, threads)
    scores = _quality(suite, export_dir, subject.teacher_dir, subject.files, threads)
    report = ValidationReport(
        export_dir=str(export_dir),
        parity=parity,
        latency=tuple(rows),
        cpu=cpu_model(),
        threads=threads,
        teacher_export=str(subject.teacher_dir) if subject.teacher_dir else None,
        predicted=_predicted(latency_model, subject, batch_sizes, rows),
        models=_summaries(subject, scores, memory=memory, threads=threads),
        fp32_parity=fp32_parity,
        eval_suite=suite,
    )
    report.save(export_dir / REPORT)
    from kdcompress.summaries import validation_markdown

    atomic_write_text(export_dir / MARKDOWN, "\n".join(validation_markdown(report)) + "\n")
    return report


@dataclass(frozen=True)
class _Subject:
    """What a validation measures: the export, its source, the files side by side."""

    manifest: ExportManifest
    source_dir: Path
    files: dict[str, Path]  # model name -> file, the teacher's first
    quantization: dict[str, str]  # model name -> its export's quantization
    teacher_dir: Path | None
    teacher_source: Path | None  # the teacher's Hugging Face folder, for its predicted latency
    vocab: int  # synthetic token ids must exist in every model
    seq_lens: tuple[int, ...]


def _subject(export_dir: Path, teacher: Path | None, seq_lens: tuple[int, ...] | None) -> _Subject:
    """The export, its teacher and the sequence lengths, checked before any timing."""
    manifest = read_manifest(export_dir)
    source_dir = _source_dir(export_dir, manifest)
    vocab, limit = _model_limits(source_dir)
    if seq_lens is None:  # the defaults that fit (a small model may take fewer positions)
        seq_lens = tuple(s for s in DEFAULT_SEQ_LENS if s <= limit) or (limit,)
    if max(seq_lens) > limit:
        raise UsageError(f"sequence length {max(seq_lens)} exceeds the model's {limit} positions")
    files = _student_files(export_dir, manifest)
    quantization = {STUDENT_FP32: "none", STUDENT_INT8: manifest.quantization}
    teacher_dir = teacher_source = None
    if teacher is not None:
        teacher_dir, teacher_manifest, teacher_vocab = _teacher(Path(teacher), manifest)
        teacher_source = _source_dir(teacher_dir, teacher_manifest)
        files = {TEACHER: teacher_dir / teacher_manifest.model_file, **files}
        quantization[TEACHER] = teacher_manifest.quantization
        vocab = min(vocab, teacher_vocab)
    return _Subject(
        manifest, source_dir, files, quantization, teacher_dir, teacher_source, vocab, seq_lens
    )


def _side_by_side(
    subject: _Subject, batch_sizes: tuple[int, ...], runs: int, rounds: int, threads: int
) -> tuple[ParityReport, ParityReport | None, list[LatencyRow]]:
    """Parity of the deployed file (and of fp32 next to int8), and the latency rows of every
    model loaded together (the student's PyTorch source too when there is no teacher)."""
    manifest, source_dir = subject.manifest, subject.source_dir
    models = {name: _load(manifest.backend, path, threads) for name, path in subject.files.items()}
    deployed = models[STUDENT_INT8 if STUDENT_INT8 in models else STUDENT_FP32]
    # The deployed file is held to the gate it was exported under (looser for int8).
    gate = manifest.parity.min_cosine_required
    parity = check_parity(source_dir=source_dir, candidate=deployed, min_cosine=gate)
    fp32_parity = None
    if STUDENT_INT8 in models:
        fp32_parity = check_parity(source_dir=source_dir, candidate=models[STUDENT_FP32])
    if subject.teacher_dir is None:
        models[STUDENT_PYTORCH] = _load("torch", source_dir, threads)
    rows = _latency_rows(models, subject.vocab, subject.seq_lens, batch_sizes, runs, rounds)
    # Returning frees the runtimes before the memory and quality runs.
    return parity, fp32_parity, rows


def _summaries(
    subject: _Subject, scores: dict[str, dict[str, Any]], *, memory: bool, threads: int
) -> tuple[ModelSummary, ...]:
    """One summary per model file: size, peak memory (with ``memory``), quality scores."""
    backend = subject.manifest.backend
    return tuple(
        ModelSummary(
            name=name,
            backend=backend,
            file=str(path),
            quantization=subject.quantization[name],
            size_bytes=model_bytes(path),
            memory=_memory(backend, path, max(subject.seq_lens), threads, subject.vocab)
            if memory
            else None,
            **scores.get(name, {}),
        )
        for name, path in subject.files.items()
    )


def parse_suite(name: str) -> str:
    if name not in SUITES:
        raise UsageError(f"unknown evaluation suite '{name}' (choose one of: {', '.join(SUITES)})")
    return name


def _suite_settings(suite: str) -> EvalSettings:
    """The settings of the quick or full evaluation suite."""
    from kdcompress.quality import full_settings, quick_settings

    return quick_settings() if suite == "quick" else full_settings()


def _memory(backend: str, path: Path, seq_len: int, threads: int, vocab: int) -> MemoryUse | None:
    """Peak memory of ``path``; a probe that fails costs its column, not the validation."""
    from kdcompress.memory import measure_memory

    try:
        with status(f"Measuring the peak memory of {path.name} in a process of its own"):
            return measure_memory(
                backend=backend, model_path=path, seq_len=seq_len, threads=threads, vocab_size=vocab
            )
    except ArtifactError as exc:
        warn(f"peak memory not measured: {exc}")
        return None


def _quality(
    suite: str,
    export_dir: Path,
    teacher_dir: Path | None,
    files: dict[str, Path],
    threads: int,
) -> dict[str, dict[str, Any]]:
    """Model name -> ModelSummary fields from the evaluation suite (scores, retention).

    An evaluation already written for the same model file (and settings) is reused: quality
    does not change between validations, so re-measuring latency on a quiet machine is fast.
    """
    from kdcompress.quality import run_eval

    if suite == "none":
        return {}
    settings = _suite_settings(suite)
    # (model, folder to evaluate, where its report goes, the report its retention uses)
    jobs: list[tuple[str, Path, Path, Path | None]] = []
    reference = None
    if teacher_dir is not None:
        reference = teacher_dir / f"eval-{suite}.json"
        jobs.append((TEACHER, teacher_dir, reference, None))
    for name in (STUDENT_FP32, STUDENT_INT8):
        if name in files:
            path = export_dir / f"eval-{name.removeprefix('student-')}-{suite}.json"
            jobs.append((name, export_dir, path, reference))
    results: dict[str, dict[str, Any]] = {}
    for name, folder, path, compared_with in jobs:
        report = _earlier_eval(path, settings, files[name], compared_with)
        if report is None:
            info(f"Evaluating {name} ({suite} suite)")
            report, _ = run_eval(
                model=str(folder),
                settings=settings,
                output=path,
                overwrite=True,
                reference=compared_with,
                threads=threads,
                fp32=name == STUDENT_FP32,
            )
        results[name] = _quality_fields(report, path)
    return results


def _earlier_eval(
    path: Path, settings: Any, model_file: Path, reference: Path | None
) -> Any | None:
    """The evaluation at ``path`` (kept in the folder of the model it scored) if it was made
    with these settings after the file was last written, and after its reference, whose
    scores its retention used."""
    from kdcompress.quality import EvalReport

    try:
        report = EvalReport.load(path)
    except ArtifactError:
        return None
    written = path.stat().st_mtime
    newer = written > model_file.stat().st_mtime and (
        reference is None or written > reference.stat().st_mtime
    )
    compared_with = report.retention.reference if report.retention else None
    same_reference = compared_with == (str(reference) if reference is not None else None)
    return report if newer and same_reference and report.settings == settings else None


def _quality_fields(report: Any, path: Path) -> dict[str, Any]:
    return {
        "scores": {task.task: task.score for task in report.tasks},
        "retention": report.retention.overall if report.retention else None,
        "eval_report": str(path),
    }


def _latency_rows(
    models: dict[str, LoadedModel],
    vocab: int,
    seq_lens: tuple[int, ...],
    batch_sizes: tuple[int, ...],
    runs: int,
    rounds: int,
) -> list[LatencyRow]:
    rows: list[LatencyRow] = []
    shapes = [(b, s) for b in batch_sizes for s in seq_lens]
    with progress() as bar:
        task = bar.add_task("Measuring latency side by side", total=len(shapes))
        for batch_size, seq_len in shapes:
            batch = synthetic_batch(vocab_size=vocab, batch=batch_size, seq_len=seq_len)
            for name, stats in compare_latency(models, batch, runs=runs, rounds=rounds).items():
                rows.append(
                    LatencyRow(name, models[name].backend.value, batch_size, seq_len, stats)
                )
            bar.advance(task)
    return rows


def _latency_model(profile: Path | None) -> tuple[LatencyModel, Coverage] | None:
    if profile is None:
        return None
    from kdcompress.latency.coverage import Coverage
    from kdcompress.latency.predictor import LatencyModel
    from kdcompress.latency.schema import load_profile

    loaded = load_profile(profile)
    return LatencyModel.from_profile(loaded), Coverage.of(loaded)


def _predicted(
    model: tuple[LatencyModel, Coverage] | None,
    subject: _Subject,
    batch_sizes: tuple[int, ...],
    rows: list[LatencyRow],
) -> tuple[PredictedLatency, ...]:
    """What the hardware profile predicted for each model with a shape of its own (the
    student's fp32 file, the teacher), next to the p50 measured, where its grid covers the
    input shape. For the teacher the profile's own timing of a teacher-shaped encoder comes
    first, as in the search: that is the latency the search's budgets were set from."""
    if model is None:
        return ()
    from kdcompress.models import teacher_arch

    latency_model, coverage = model
    sources = {STUDENT_FP32: subject.source_dir}
    if subject.teacher_source is not None:
        sources = {TEACHER: subject.teacher_source, **sources}
    measured = {(r.model, r.batch, r.seq_len): r.latency.p50_ms for r in rows}
    predictions = []
    for name, source in sources.items():
        arch = teacher_arch(source)
        for batch in batch_sizes:
            for seq_len in subject.seq_lens:
                timed = measured.get((name, batch, seq_len))
                profiled = coverage.measured_ms(arch, seq_len=seq_len, batch=batch)
                if name == TEACHER and profiled is not None:
                    predictions.append(
                        PredictedLatency(batch, seq_len, profiled, name, timed, how="profiled")
                    )
                    continue
                try:
                    ms = latency_model.predict_ms(arch, seq_len=seq_len, batch=batch)
                except ArtifactError:
                    continue  # architecture or shape outside the profiled grid
                predictions.append(PredictedLatency(batch, seq_len, ms, name, timed))
    return tuple(predictions)
