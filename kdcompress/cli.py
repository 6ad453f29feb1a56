"""The ``kdcompress`` command line: options -> stage function -> rendered result.

Heavy libraries (torch, transformers, optimum, runtimes) are imported inside the commands, so
``kdcompress --help`` stays instant.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from kdcompress import __version__
from kdcompress.console import error, info
from kdcompress.errors import KDCompressError, NotImplementedYetError, UsageError

app = typer.Typer(
    name="kdcompress",
    help=(
        "Hardware-aware compression of transformer encoders for CPUs: profile the target, "
        "search a student with KD-NAS, distil it, export, quantize and validate it."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": False}

ThreadsOption = Annotated[
    int | None,
    typer.Option("--threads", min=1, help="Inference threads (default: all physical cores)."),
]
OverwriteOption = Annotated[
    bool, typer.Option("--overwrite", help="Replace an existing output directory.")
]
TeacherOption = Annotated[
    str,
    typer.Option(
        "--teacher",
        help="Built-in offline teacher (see `kdcompress teachers`), local HF folder or hub id.",
    ),
]


def _version(value: bool) -> None:
    if value:
        info(f"kdcompress {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show full tracebacks for errors.")
    ] = False,
) -> None:
    _state["debug"] = debug


def _check_device(device: str) -> None:
    if device.lower() != "cpu":
        raise UsageError(f"unknown device '{device}': only 'cpu' is supported")


def _not_yet(command: str) -> NotImplementedYetError:
    return NotImplementedYetError(
        f"`kdcompress {command}` is not available in this version yet; see the README roadmap"
    )


@app.command()
def profile(
    device: Annotated[str, typer.Option(help="Target device.")] = "cpu",
    backend: Annotated[str, typer.Option(help="torch, onnxruntime or openvino.")] = "onnxruntime",
    threads: ThreadsOption = None,
    quick: Annotated[bool, typer.Option(help="A smaller grid (minutes, not an hour).")] = False,
    output: Annotated[Path | None, typer.Option(help="Profile JSON to write.")] = None,
) -> None:
    """Measure this machine into a latency model (lookup table + predictor).

    Example: [bold]kdcompress profile --device cpu --backend onnxruntime --quick[/]
    """
    from kdcompress.backends import parse_backend_name

    _check_device(device)
    parse_backend_name(backend)
    raise _not_yet("profile")


@app.command()
def search(
    target: Annotated[Path, typer.Option(help="Hardware profile JSON (from `profile`).")],
    output: Annotated[Path, typer.Option(help="Run directory for the search artifacts.")],
    teacher: TeacherOption = "me5-small",
) -> None:
    """Run KD-NAS: propose students, distil the best briefly, learn, recommend per budget.

    Example: [bold]kdcompress search --target profiles/xeon.json --output runs/s1[/]
    """
    raise _not_yet("search")


@app.command()
def distill(
    output: Annotated[Path, typer.Option(help="Folder for the distilled student.")],
    teacher: TeacherOption = "me5-small",
    arch: Annotated[str | None, typer.Option(help="search.json[#budget] to distil.")] = None,
) -> None:
    """Distil a student task-agnostically with multi-layer hidden-state distillation.

    Example: [bold]kdcompress distill --arch runs/s1/search.json --output students/s1[/]
    """
    raise _not_yet("distill")


@app.command()
def export(
    model: Annotated[str, typer.Option(help="HF model folder, built-in teacher or hub id.")],
    output: Annotated[Path, typer.Option(help="Export directory to create.")],
    format: Annotated[str, typer.Option("--format", help="onnx or openvino.")] = "onnx",
    threads: ThreadsOption = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Export a model to ONNX or OpenVINO (fp32) and check it matches PyTorch.

    The export is written to a temporary folder and moved into place only if the parity
    check passes (cosine of sentence embeddings >= 0.999), so a failed export leaves nothing.

    Example: [bold]kdcompress export --model students/s1 --format onnx --output exports/s1-onnx[/]
    """
    from kdcompress.export import export_model, parse_format
    from kdcompress.render import parity_table

    manifest = export_model(
        model=model, fmt=parse_format(format), output=output, overwrite=overwrite, threads=threads
    )
    parity_table(manifest.parity)


@app.command()
def validate(
    export_dir: Annotated[Path, typer.Argument(help="Directory written by `export`.")],
    seq_len: Annotated[
        list[int] | None, typer.Option("--seq-len", help="Sequence lengths (repeatable).")
    ] = None,
    batch: Annotated[
        list[int] | None, typer.Option("--batch", help="Batch sizes (repeatable).")
    ] = None,
    threads: ThreadsOption = None,
    runs: Annotated[int, typer.Option(min=3, help="Timed runs per round.")] = 30,
) -> None:
    """Check an export: output parity and latency side by side with its PyTorch source.

    Writes [bold]validation.json[/] into the export directory.

    Example: [bold]kdcompress validate exports/s1-onnx --seq-len 32 --seq-len 128[/]
    """
    from kdcompress.render import validation_tables
    from kdcompress.validate import validate_export

    report = validate_export(
        export_dir=export_dir,
        seq_lens=tuple(seq_len or (32, 128)),
        batch_sizes=tuple(batch or (1,)),
        threads=threads,
        runs=runs,
    )
    validation_tables(report)


@app.command("eval")
def evaluate(
    model: Annotated[str, typer.Option(help="HF model folder, built-in teacher or hub id.")],
    quick: Annotated[bool, typer.Option(help="A small subset of every task.")] = False,
) -> None:
    """Run the fixed evaluation suite (retrieval, IMDB, zh-inews) on a model.

    Example: [bold]kdcompress eval --model me5-small --quick[/]
    """
    raise _not_yet("eval")


@app.command()
def run(
    output: Annotated[Path, typer.Option(help="Run directory (re-running resumes it).")],
    teacher: TeacherOption = "me5-small",
    device: Annotated[str, typer.Option(help="Target device (only cpu today).")] = "cpu",
    backend: Annotated[
        str, typer.Option(help="Deployment runtime: onnxruntime or openvino.")
    ] = "onnxruntime",
    threads: ThreadsOption = None,
) -> None:
    """Run the whole pipeline into one run directory, resuming finished stages.

    This version runs the stages that exist: it exports the teacher and validates the
    export (parity and latency against PyTorch); profile, search and distill come next.

    Example: [bold]kdcompress run --teacher me5-small --output runs/demo[/]
    """
    from kdcompress.pipeline import run_pipeline

    _check_device(device)
    run_pipeline(teacher=teacher, backend=backend, output=output, threads=threads)


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


def main() -> None:
    """Console entry point: user errors become one red line and a non-zero exit code."""
    try:
        app()
    except KDCompressError as exc:
        if _state["debug"]:
            raise
        error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        error("interrupted")
        sys.exit(130)
