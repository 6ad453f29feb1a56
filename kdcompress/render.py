"""Rich tables for results shown on the terminal."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from kdcompress.artifacts import (
    DistillResult,
    ParityReport,
    QuantizationReport,
    ValidationReport,
)

if TYPE_CHECKING:
    from kdcompress.cache import EntryCheck
    from kdcompress.kd.mapping import LayerPair
    from kdcompress.latency.schema import HardwareProfile
    from kdcompress.search.runner import SearchResult
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
    from kdcompress.summaries import disturbance, prediction_lines, validation_summary

    parity_table(report.parity)
    header, rows = validation_summary(report)
    first = min(row.batch for row in report.latency)
    title = f"Validation, {report.threads} threads, {report.cpu} (latency at batch {first})"
    table = Table(title=title)
    for column in header:
        table.add_column(column, justify="right")
    for cells in rows:
        table.add_row(*cells)
    console.print(table)
    for row in report.latency:
        if row.latency.disturbed:
            why = disturbance(row.latency) or "other processes used CPU"
            warn(
                f"{row.model} at batch {row.batch}, seq {row.seq_len} disturbed while timing "
                f"({why}); re-run on a quiet machine"
            )
    for line in prediction_lines(report):
        console.print(line)


def teachers_table() -> None:
    from kdcompress.assets import is_cached
    from kdcompress.catalog import DEFAULT_TEACHER, TEACHERS

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


def profile_summary(profile: HardwareProfile) -> None:
    settings = profile.settings
    table = Table(title=f"Hardware profile '{profile.name}'")
    table.add_column("")
    table.add_column("")
    fp = profile.fingerprint
    table.add_row("device", f"{fp.cpu}, {fp.physical_cores} cores, {', '.join(fp.isa) or '-'}")
    table.add_row(
        "backend", f"{settings.backend} {profile.backend_version}, {settings.threads} threads"
    )
    table.add_row("measured", f"{len(profile.blocks)} blocks, {len(profile.models)} encoders")
    table.add_row("median noise", f"{profile.noise:.1%} (p90 - p50) / p50")
    if profile.error is not None:
        err = profile.error
        table.add_row(
            "held-out error",
            f"MAPE {err.mape:.1f}%, worst {err.worst_ape:.1f}% "
            f"over {err.heldout_architectures} architectures (fit MAPE {err.fit_mape:.1f}%)",
        )
    console.print(table)


def search_summary(result: SearchResult) -> None:
    table = Table(title=f"KD-NAS recommendations (teacher {result.teacher_latency_ms:.2f} ms)")
    for column in ("budget", "architecture", "latency ms", "speedup", "proxy retrieval"):
        table.add_column(column)
    for rec in result.recommendations:
        if rec.arch is None:
            table.add_row(rec.budget, f"[red]nothing under {rec.budget_ms:.2f} ms[/]", "", "", "")
            continue
        table.add_row(
            rec.budget,
            rec.arch.describe(),
            f"{rec.latency_ms:.2f}",
            f"{rec.speedup:.1f}x",
            f"{1 - (rec.proxy_loss or 0.0):.3f}",
        )
    console.print(table)
    console.print(
        f"{len(result.ranked)} candidates, {len(result.pareto)} on the Pareto front, "
        f"{result.wall_s / 60:.1f} min"
    )


if TYPE_CHECKING:
    from kdcompress.quality import EvalReport


def _ratio_text(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.1%}"


def eval_table(report: EvalReport) -> None:
    """Scores per task (retrieval per language too) and the mean; retention if a reference."""
    kept = report.retention
    title = f"Evaluation of {report.model} ({report.backend} {report.backend_version})"
    table = Table(title=title)
    table.add_column("task")
    for column in ("metric", "size", "max tokens", "score"):
        table.add_column(column, justify="right")
    if kept is not None:
        table.add_column(f"reference ({kept.reference_model})", justify="right")
        table.add_column("retention", justify="right")
    for task in report.tasks:
        for key, score in task.details.items():
            row = [f"  {task.task} {key}", task.metric, str(task.sizes.get(key, ""))]
            row += ["", f"{score:.3f}"]
            if kept is not None:
                theirs = kept.reference_details.get(task.task, {}).get(key)
                row += [
                    "" if theirs is None else f"{theirs:.3f}",
                    _ratio_text(kept.details.get(task.task, {}).get(key)),
                ]
            table.add_row(*row)
        size = "/".join(str(n) for n in task.sizes.values()) if not task.details else "mean"
        row = [f"[bold]{task.task}[/]", task.metric, size, str(task.max_length)]
        row += [f"[bold]{task.score:.3f}[/]"]
        if kept is not None:
            row += [
                f"{kept.reference_scores[task.task]:.3f}",
                f"[bold]{_ratio_text(kept.per_task.get(task.task))}[/]",
            ]
        table.add_row(*row, end_section=True)
    row = ["[bold]mean[/]", "", "", "", f"[bold]{report.mean:.3f}[/]"]
    if kept is not None:
        reference_mean = sum(kept.reference_scores.values()) / len(kept.reference_scores)
        row += [f"{reference_mean:.3f}", f"[bold]{_ratio_text(kept.overall)}[/]"]
    table.add_row(*row)
    console.print(table)
    threads = f"{report.threads} thread{'s' if report.threads != 1 else ''}"
    wall = f"{report.wall_s:.1f} s" if report.wall_s < 120 else f"{report.wall_s / 60:.1f} min"
    console.print(f"{wall} on {threads}, batch {report.batch_size}")
    if kept is not None:
        console.print("retention = score / reference score; overall = mean of the task ratios")


def show_result(result: DistillResult, output: Path) -> None:
    """The run's summary as a table on the kdcompress console."""
    table = Table(title=f"Distilled {result.arch.describe()} -> {output}")
    table.add_column("")
    table.add_column("value", justify="right")
    rows = [
        ("init", result.init),
        ("steps x batch", f"{result.steps} x {result.batch_size}"),
        ("training sentences", f"{result.sentences:,}"),
        ("objective", f"{result.loss}, {result.targets} targets"),
        ("final sentence-embedding loss", f"{result.final_pooled_loss:.4f}"),
        ("training time", f"{result.wall_s:.0f} s ({result.sentences_per_s:.1f} sentences/s)"),
        ("teacher cache", f"{result.teacher_cache_s:.0f} s"),
        ("parameters", f"{result.parameters:,}"),
    ]
    if result.final_cosine is not None:
        rows.insert(5, ("final cosine to the teacher", f"{result.final_cosine:.4f}"))
    if result.final_hidden_loss is not None:
        rows.insert(4, ("final hidden loss L_HS (normalised)", f"{result.final_hidden_loss:.4f}"))
    if result.final_relation_loss is not None:
        rows.insert(5, ("final attention-relation loss", f"{result.final_relation_loss:.4f}"))
    if result.vocab is not None:
        v = result.vocab
        rows += [
            ("vocabulary", f"{v.vocab_before:,} -> {v.vocab_after:,}"),
            ("parameters before trimming", f"{v.params_before:,}"),
            ("weights (fp32)", _mb(v.weights_bytes_before, v.weights_bytes_after)),
            ("tokenizer files", _mb(v.tokenizer_bytes_before, v.tokenizer_bytes_after)),
        ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


def _mb(before: int, after: int) -> str:
    return f"{before / 1e6:.1f} MB -> {after / 1e6:.1f} MB"


def mapping_table(
    pairs: Sequence[LayerPair], init_layers: Sequence[int] | None, teacher_layers: int
) -> Table:
    """A table: each student layer, the teacher layers it regresses and its initialisation."""
    table = Table(title=f"Layer mapping (Uniform+Last, teacher has {teacher_layers} layers)")
    for column in ("student", "regresses teacher", "initialised from"):
        table.add_column(column)
    students = sorted({p.student for p in pairs})
    for s in students:
        targets = ", ".join(_label(p.teacher) + f" ({p.rule})" for p in pairs if p.student == s)
        if init_layers is None:
            source = "teacher word embeddings, rest random" if s == 0 else "random"
        else:
            source = _label(0 if s == 0 else init_layers[s - 1])
        table.add_row(_label(s), targets, source)
    return table


def _label(layer: int) -> str:
    return "embeddings" if layer == 0 else f"layer {layer}"


def show_int8(report: QuantizationReport, fp32_parity: ParityReport | None) -> None:
    """The attempts with their parity, then size and speed, through the one console."""
    from rich.table import Table

    table = Table(title=f"int8 ({report.requested}) vs PyTorch, pooled-embedding cosine")
    for column in ("model", "min cosine", "mean cosine", "max |diff|", "verdict"):
        table.add_column(column, justify="right")
    if fp32_parity is not None:
        table.add_row("fp32", *_parity_cells(fp32_parity, "pass" if fp32_parity.passed else ""))
    for attempt in report.attempts:
        name = attempt.settings.mode + (" (fp32 edges)" if attempt.settings.keep_fp32 else "")
        if attempt.parity is None:
            table.add_row(f"int8 {name}", "", "", "", escape(attempt.note))
        else:
            verdict = "[green]deployed[/]" if attempt.accepted else "[yellow]rejected[/]"
            table.add_row(f"int8 {name}", *_parity_cells(attempt.parity, verdict))
    console.print(table)
    settings = report.settings
    console.print(
        f"int8: {settings.method}, {settings.quant_format}, weights {settings.weight_type} "
        f"{settings.weight_range}, activations {settings.activation_type}, preset "
        f"{settings.preset}; {_size(report.fp32_bytes)} fp32 -> {_size(report.int8_bytes)} int8"
    )


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB" if nbytes >= 2**20 else f"{nbytes / 2**10:.0f} KiB"


def _parity_cells(parity: ParityReport, verdict: str) -> tuple[str, str, str, str]:
    return (
        f"{parity.min_cosine:.5f}",
        f"{parity.mean_cosine:.5f}",
        f"{parity.max_abs_diff:.2e}",
        verdict,
    )


def cache_table(checks: Sequence[EntryCheck]) -> None:
    """Each cache entry's state after ``kdcompress cache verify``."""
    table = Table(title="Offline asset cache")
    for column in ("entry", "state", "folder", "problems"):
        table.add_column(column)
    colours = {"ok": "green", "damaged": "bold red", "sizes only": "yellow"}
    for check in checks:
        colour = colours.get(check.state, "dim")
        problems = "; ".join(check.problems)
        table.add_row(check.name, f"[{colour}]{check.state}[/]", str(check.path), escape(problems))
    console.print(table)
