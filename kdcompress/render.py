"""Rich tables for results shown on the terminal."""

from __future__ import annotations

from rich.table import Table

from kdcompress.artifacts import ParityReport, ValidationReport
from kdcompress.console import console, warn


def parity_table(parity: ParityReport) -> None:
    table = Table(title="Output parity vs PyTorch")
    for column in ("sentences", "min cosine", "mean cosine", "max |diff|", "verdict"):
        table.add_column(column, justify="right")
    verdict = "[green]pass[/]" if parity.passed else "[red]fail[/]"
    table.add_row(
        str(parity.sentences),
        f"{parity.min_cosine:.6f}",
        f"{parity.mean_cosine:.6f}",
        f"{parity.max_abs_diff:.2e}",
        verdict,
    )
    console.print(table)


def validation_tables(report: ValidationReport) -> None:
    parity_table(report.parity)
    table = Table(title=f"Latency, {report.threads} threads, {report.cpu}")
    for column in ("model", "backend", "batch", "seq", "p50 ms", "p90 ms", "speedup"):
        table.add_column(column, justify="right")
    baseline = {
        (r.batch, r.seq_len): r.latency.p50_ms for r in report.latency if r.model == "pytorch"
    }
    for row in report.latency:
        speedup = baseline[(row.batch, row.seq_len)] / row.latency.p50_ms
        table.add_row(
            row.model,
            row.backend,
            str(row.batch),
            str(row.seq_len),
            f"{row.latency.p50_ms:.2f}",
            f"{row.latency.p90_ms:.2f}",
            f"{speedup:.2f}x",
        )
        if row.latency.disturbed:
            warn(f"{row.model} at seq {row.seq_len}: other processes used CPU while timing")
    console.print(table)


def teachers_table() -> None:
    from kdcompress.assets import DEFAULT_TEACHER, TEACHERS, is_cached

    table = Table(title="Built-in offline teachers")
    for column in ("name", "languages", "layers", "hidden", "params", "license", "cached"):
        table.add_column(column)
    for name, spec in TEACHERS.items():
        label = f"{name} (default)" if name == DEFAULT_TEACHER else name
        table.add_row(
            label,
            spec.languages,
            str(spec.layers),
            str(spec.hidden),
            f"{spec.params_millions:.0f}M",
            spec.license,
            "yes" if is_cached(name) else "no",
        )
    console.print(table)


def backends_table() -> None:
    from kdcompress.backends import backend_statuses

    table = Table(title="Inference backends")
    for column in ("backend", "available", "version / reason"):
        table.add_column(column)
    for status in backend_statuses():
        mark = "[green]yes[/]" if status.available else "[red]no[/]"
        table.add_row(status.name.value, mark, status.detail)
    console.print(table)
