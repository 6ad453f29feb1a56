"""``kdcompress run`` (the whole pipeline), ``report``, and the lists of teachers and backends."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kdcompress.catalog import DEFAULT_TEACHER
from kdcompress.cli.app import app
from kdcompress.cli.options import TeacherOption, ThreadsOption, check_device, hold_output


@app.command()
def run(
    ctx: typer.Context,
    output: Annotated[Path, typer.Option(help="Run directory (re-running resumes it).")],
    teacher: TeacherOption = DEFAULT_TEACHER,
    device: Annotated[str, typer.Option(help="Target device (only cpu today).")] = "cpu",
    backend: Annotated[
        str, typer.Option(help="Deployment runtime: onnxruntime or openvino.")
    ] = "onnxruntime",
    budget: Annotated[
        str, typer.Option(help="quick (15-20 min on 2 cores), standard or full (hours).")
    ] = "quick",
    quantize: Annotated[
        str,
        typer.Option(
            help="int8 for the student: none, dynamic or static (see `kdcompress export`)."
        ),
    ] = "dynamic",
    seed: Annotated[int, typer.Option(help="Seed for search and distillation.")] = 0,
    threads: ThreadsOption = None,
    space: Annotated[
        Path | None,
        typer.Option(
            help="Search space JSON to narrow the search and a quick profile to (layers, "
            "hidden, heads, ffn_ratio; default: the teacher's own space, see `kdcompress "
            "profile --help`)."
        ),
    ] = None,
    domain_text: Annotated[
        Path | None,
        typer.Option(
            help="Unlabelled text of your deployment's domain (reviews, tickets, ...), one "
            "sentence or document per line: a fifth of the distillation's items come from it "
            "(see `kdcompress distill --help`).",
        ),
    ] = None,
) -> None:
    """Run the whole pipeline into one run directory, resuming finished stages.

    profile (reuses profiles/*.json measured on this machine, else measures a quick one) ->
    KD-NAS search -> distillation of the 7x recommendation (vocabulary trimmed) -> export of
    the student (fp32 + int8) and the teacher to the same runtime -> validation side by side
    (latency, size, peak memory, evaluation suite) -> report.html / report.md.

    Example: [bold]kdcompress run --teacher me5-small --output runs/demo[/]
    """
    from kdcompress.pipeline import RunSettings, run_pipeline

    check_device(device)
    hold_output(ctx, output)
    asked = RunSettings(teacher, backend, budget, seed, str(space or ""), str(domain_text or ""))
    run_pipeline(asked, output, quantize=quantize, threads=threads)


@app.command()
def report(
    ctx: typer.Context,
    run_dir: Annotated[Path, typer.Argument(help="Run directory (from `kdcompress run`).")],
) -> None:
    """Write a self-contained HTML page (and the same as Markdown) for a run directory:
    search candidates and Pareto plot, chosen architecture, distillation curve, validation.

    Example: [bold]kdcompress report runs/demo[/]
    """
    from kdcompress.report import write_report

    if run_dir.is_dir():  # else write_report says what is missing
        hold_output(ctx, run_dir)
    write_report(run_dir)


@app.command()
def teachers() -> None:
    """List the built-in offline teachers and whether they are cached.

    Example: [bold]kdcompress teachers[/]
    """
    from kdcompress.render import teachers_table

    teachers_table()


@app.command()
def backends() -> None:
    """List inference backends and whether their runtime is installed.

    Example: [bold]kdcompress backends[/]
    """
    from kdcompress.render import backends_table

    backends_table()
