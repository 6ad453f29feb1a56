"""``kdcompress run``: the stages in order, each writing its artifact into one run directory.

A stage whose artifact already exists and loads is skipped, so re-running a run directory
resumes at the first unfinished stage.
"""

from __future__ import annotations

from pathlib import Path

from kdcompress.artifacts import ExportManifest, ValidationReport
from kdcompress.console import info
from kdcompress.errors import ArtifactError
from kdcompress.export import MANIFEST, export_model, format_for_backend
from kdcompress.render import validation_tables
from kdcompress.validate import DEFAULT_SEQ_LENS, REPORT, validate_export

PENDING_STAGES = ("profile", "search", "distill")


def _finished(cls: type[ExportManifest] | type[ValidationReport], path: Path) -> bool:
    try:
        cls.load(path)
    except ArtifactError:
        return False
    return True


def run_pipeline(
    *,
    teacher: str,
    backend: str,
    output: Path,
    threads: int | None = None,
    seq_lens: tuple[int, ...] = DEFAULT_SEQ_LENS,
) -> ValidationReport:
    """Run (or resume) the pipeline for ``teacher`` in ``output`` and return the validation."""
    fmt = format_for_backend(backend)
    info(f"[bold]kdcompress run[/] -> {output}")
    info(f"[dim]not in this version yet, skipped: {', '.join(PENDING_STAGES)}[/]")
    export_dir = output / f"export-{fmt.value}"
    if _finished(ExportManifest, export_dir / MANIFEST):
        info(f"[dim]export: done earlier ({export_dir})[/]")
    else:
        export_model(model=teacher, fmt=fmt, output=export_dir, threads=threads)
    if _finished(ValidationReport, export_dir / REPORT):
        info(f"[dim]validate: done earlier ({export_dir / REPORT})[/]")
        report = ValidationReport.load(export_dir / REPORT)
    else:
        report = validate_export(export_dir=export_dir, threads=threads, seq_lens=seq_lens)
    validation_tables(report)
    return report
