"""``kdcompress export`` and ``kdcompress validate``: deploy a model to a runtime and check it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kdcompress.cli.app import app
from kdcompress.cli.options import (
    BatchOption,
    CompareTeacherOption,
    OverwriteOption,
    SeqLenOption,
    TargetOption,
    ThreadsOption,
    check_compared,
    check_shapes,
    hold_output,
)
from kdcompress.console import info
from kdcompress.errors import Interrupted, KDCompressError, OutputExistsError, UsageError

if TYPE_CHECKING:
    from kdcompress.quantize import Quantization, QuantizeOptions


@app.command()
def export(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="HF model folder, built-in teacher or hub id.")],
    output: Annotated[
        Path | None,
        typer.Option(help="Export directory to create (default: exports/MODEL-FORMAT[-int8])."),
    ] = None,
    format: Annotated[str, typer.Option("--format", help="onnx or openvino.")] = "onnx",
    quantize: Annotated[
        str,
        typer.Option(
            "--quantize",
            help="none (fp32), dynamic (ONNX Runtime: int8 weights, activations per batch; "
            "OpenVINO: int8 weights only) or static (int8 activations calibrated on corpus "
            "sentences).",
        ),
    ] = "none",
    calibration_size: Annotated[
        int | None,
        typer.Option(min=1, help="Calibration sentences for --quantize static (default 128)."),
    ] = None,
    calibration_languages: Annotated[
        str, typer.Option(help="Corpus languages of the calibration text, comma-separated.")
    ] = "all",
    per_channel: Annotated[
        bool,
        typer.Option("--per-channel/--per-tensor", help="int8 weight scales per output channel."),
    ] = True,
    min_int8_cosine: Annotated[
        float,
        typer.Option(
            min=-1.0,
            max=1.0,
            help="Parity gate for int8 (cosine of sentence embeddings vs PyTorch); below it, "
            "less aggressive settings are tried.",
        ),
    ] = 0.98,
    speed_check: Annotated[
        bool,
        typer.Option(help="Time fp32 vs int8 side by side after quantizing (seconds)."),
    ] = True,
    max_quality_drop: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="Accuracy control for int8, in percent: a plan whose mean evaluation score "
            "drops more than this below the fp32 export's is rejected and the next, less "
            "aggressive plan tried (suite: --eval, quick if none).",
        ),
    ] = None,
    teacher: CompareTeacherOption = None,
    eval_suite: Annotated[
        str,
        typer.Option(
            "--eval",
            help="Evaluation suite run on every exported model and the teacher during the "
            "validation: none, quick (minutes) or full.",
        ),
    ] = "none",
    target: TargetOption = None,
    validate: Annotated[
        bool,
        typer.Option(
            help="Validate the export when done: parity, latency side by side (with the "
            "teacher when given), size, peak memory, quality; writes validation.json/.md."
        ),
    ] = True,
    seq_len: SeqLenOption = None,
    batch: BatchOption = None,
    threads: ThreadsOption = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Export a model to ONNX or OpenVINO, optionally int8, and check it against PyTorch.

    The fp32 export must match PyTorch (cosine of sentence embeddings >= 0.999). With
    [bold]--quantize[/], the int8 model is written next to the fp32 one and becomes the
    deployable file named in export.json; its parity is reported and gated at
    --min-int8-cosine, falling back to less aggressive settings (fp32 embeddings and edge
    layers, dynamic instead of static) when needed, and fp32 vs int8 latency is measured.
    Everything is written to a temporary folder and moved into place only on success.
    Then the export is validated (see `kdcompress validate`), unless --no-validate.

    Example: [bold]kdcompress export --model students/s1 --format onnx --quantize static
    --teacher me5-small --eval quick --max-quality-drop 2[/]
    """
    from kdcompress.export import export_model, parse_format
    from kdcompress.quantize import Quantization, parse_quantization
    from kdcompress.render import parity_table, show_int8
    from kdcompress.validate import parse_suite

    check_shapes(seq_len, batch, model=Path(model))
    _check_validation_options(validate, teacher, target)
    fmt = parse_format(format)
    mode = parse_quantization(quantize)
    suite = parse_suite(eval_suite)
    options = _quantize_options(
        mode,
        calibration_size=calibration_size,
        calibration_languages=calibration_languages,
        per_channel=per_channel,
        min_int8_cosine=min_int8_cosine,
        speed_check=speed_check,
        max_quality_drop=max_quality_drop,
        suite=suite,
    )
    if output is None:
        suffix = "" if mode is Quantization.NONE else f"-int8-{mode}"
        output = Path("exports") / f"{Path(model).name}-{fmt}{suffix}"
    hold_output(ctx, output)
    if not overwrite:
        _refuse_unvalidated(output)
    manifest = export_model(
        model=model,
        fmt=fmt,
        output=output,
        overwrite=overwrite,
        threads=threads,
        quantize=options,
    )
    parity_table(manifest.fp32_parity or manifest.parity)
    if manifest.int8 is not None:
        show_int8(manifest.int8, manifest.fp32_parity)
    if validate:
        try:
            _validate(output, teacher, target, seq_len, batch, threads, suite=suite)
        except (KeyboardInterrupt, KDCompressError) as exc:
            raise _unvalidated(exc, output) from exc


def _refuse_unvalidated(output: Path) -> None:
    """An export whose validation was stopped (killed) is not exported again by accident: the
    error says how to validate it."""
    from kdcompress.artifacts import MANIFEST
    from kdcompress.validate import REPORT

    if (output / MANIFEST).is_file() and not (output / REPORT).is_file():
        raise OutputExistsError(
            f"{output} holds an export without a validation (made with --no-validate, or "
            f"stopped while validating): run `kdcompress validate {output}`, or pass --overwrite"
        )


def _unvalidated(exc: BaseException, output: Path) -> KDCompressError:
    """The error of a validation that stopped, saying the export itself is complete."""
    hint = f"the export in {output} is complete: `kdcompress validate {output}` validates it"
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted(f"interrupted; {hint}")
    assert isinstance(exc, KDCompressError)
    return type(exc)(f"{exc}; {hint}")


def _check_validation_options(validate: bool, teacher: str | None, target: Path | None) -> None:
    """--teacher and --target serve the validation: checked before the export, refused without
    it (they would be ignored)."""
    if validate:
        check_compared(teacher, target)
        return
    ignored = [name for name, value in (("--teacher", teacher), ("--target", target)) if value]
    if ignored:
        raise UsageError(
            f"{', '.join(ignored)}: only used by the validation, which --no-validate skips"
        )


def _quantize_options(
    mode: Quantization,
    *,
    calibration_size: int | None,
    calibration_languages: str,
    per_channel: bool,
    min_int8_cosine: float,
    speed_check: bool,
    max_quality_drop: float | None,
    suite: str,
) -> QuantizeOptions:
    """The int8 options of ``export``, refusing those that the quantization mode ignores."""
    from kdcompress.distill import parse_languages
    from kdcompress.quantize import DEFAULT_CALIBRATION_SIZE, Quantization, QuantizeOptions

    if calibration_size is not None and mode is not Quantization.STATIC:
        raise UsageError("--calibration-size is only used with --quantize static")
    if max_quality_drop is not None and mode is Quantization.NONE:
        raise UsageError("--max-quality-drop gates int8 models: use it with --quantize")
    return QuantizeOptions(
        mode=mode,
        calibration_size=calibration_size or DEFAULT_CALIBRATION_SIZE,
        calibration_languages=parse_languages(calibration_languages),
        per_channel=per_channel,
        min_int8_cosine=min_int8_cosine,
        speed_check=speed_check,
        max_quality_drop=max_quality_drop,
        quality_suite="full" if suite == "full" else "quick",
    )


def _validate(
    export_dir: Path,
    teacher: str | None,
    target: Path | None,
    seq_len: list[int] | None,
    batch: list[int] | None,
    threads: int | None,
    *,
    suite: str,
    runs: int = 30,
    memory: bool = True,
) -> None:
    from kdcompress.export import teacher_export
    from kdcompress.hardware import threads_or_default
    from kdcompress.render import validation_tables
    from kdcompress.validate import (
        DEFAULT_BATCH_SIZES,
        MARKDOWN,
        REPORT,
        read_manifest,
        validate_export,
    )

    threads = threads_or_default(threads)
    teacher_dir = None
    if teacher is not None:  # compared on the student's runtime: exported there once, cached
        teacher_dir = teacher_export(teacher, read_manifest(export_dir).backend, threads)
    report = validate_export(
        export_dir=export_dir,
        teacher=teacher_dir,
        profile=target,
        seq_lens=tuple(seq_len) if seq_len else None,
        batch_sizes=tuple(batch or DEFAULT_BATCH_SIZES),
        threads=threads,
        runs=runs,
        quality=suite,
        memory=memory,
    )
    validation_tables(report)
    info(f"[green]Validation written[/] to {export_dir / REPORT} and {export_dir / MARKDOWN}")


@app.command()
def validate(
    ctx: typer.Context,
    export_dir: Annotated[Path, typer.Argument(help="Directory written by `export`.")],
    teacher: CompareTeacherOption = None,
    eval_suite: Annotated[
        str,
        typer.Option(
            "--eval", help="Evaluation suite on every model: none, quick (minutes) or full."
        ),
    ] = "quick",
    target: TargetOption = None,
    seq_len: SeqLenOption = None,
    batch: BatchOption = None,
    threads: ThreadsOption = None,
    runs: Annotated[int, typer.Option(min=3, help="Timed runs per round.")] = 30,
    memory: Annotated[
        bool, typer.Option(help="Measure each model's peak RSS in a process of its own.")
    ] = True,
) -> None:
    """Validate an export: output parity with PyTorch; the student's fp32 and int8 files and
    the teacher (or, without --teacher, the PyTorch source) timed side by side on the same
    runtime and threads; file size; peak memory; evaluation-suite quality and retention.

    Writes [bold]validation.json[/] and the Markdown table [bold]validation.md[/] into the
    export directory.

    Example: [bold]kdcompress validate exports/s1-onnx --teacher me5-small --eval quick[/]
    """
    from kdcompress.validate import parse_suite

    check_shapes(seq_len, batch, model=export_dir)
    check_compared(teacher, target)
    suite = parse_suite(eval_suite)
    if export_dir.is_dir():  # else validate_export says what is missing
        hold_output(ctx, export_dir)
    _validate(
        export_dir, teacher, target, seq_len, batch, threads, suite=suite, runs=runs, memory=memory
    )
