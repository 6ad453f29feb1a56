"""``kdcompress profile``: measure this machine into a latency model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kdcompress.cli.app import app
from kdcompress.cli.options import (
    OverwriteOption,
    ThreadsOption,
    check_device,
    check_profile_name,
    check_shapes,
    hold_output,
)
from kdcompress.console import info


@app.command()
def profile(
    ctx: typer.Context,
    device: Annotated[str, typer.Option(help="Target device (only cpu today).")] = "cpu",
    backend: Annotated[
        str, typer.Option(help="Runtime to measure: torch, onnxruntime or openvino.")
    ] = "onnxruntime",
    threads: ThreadsOption = None,
    batch: Annotated[
        list[int] | None, typer.Option("--batch", help="Batch sizes (repeatable; default 1).")
    ] = None,
    seq_len: Annotated[
        list[int] | None,
        typer.Option("--seq-len", help="Sequence lengths (repeatable; default 32 and 128)."),
    ] = None,
    teacher: Annotated[
        str | None,
        typer.Option(
            help="Measure for this teacher: its search space (widths and depths up to its own) "
            "and its own latency. Default: the built-in space (me5-small-sized)."
        ),
    ] = None,
    space: Annotated[
        Path | None,
        typer.Option(help="Search space JSON (default: the teacher's, else the built-in one)."),
    ] = None,
    quick: Annotated[
        bool, typer.Option(help="Seq 128 only, fewer runs and architectures (minutes).")
    ] = False,
    name: Annotated[str | None, typer.Option(help="Profile name (default: CPU + backend).")] = None,
    output: Annotated[
        Path | None, typer.Option(help="Profile JSON to write (default: profiles/NAME.json).")
    ] = None,
    fit_archs: Annotated[
        int | None, typer.Option(min=5, help="Encoders measured to fit the correction.")
    ] = None,
    heldout_archs: Annotated[
        int | None, typer.Option(min=1, help="Held-out encoders measured to report the error.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for the architectures measured.")] = 0,
    overwrite: OverwriteOption = False,
) -> None:
    """Measure this machine into a latency model (lookup table + predictor).

    Times the building blocks of an encoder (embedding, attention per hidden x heads, FFN per
    hidden x FFN size) exactly as the backend runs them after export, fits a correction on
    whole random-init encoders, and reports the predictor's error on held-out architectures.
    An interrupted profile resumes from NAME.json.partial when run again with the same options.

    Example: [bold]kdcompress profile --device cpu --backend onnxruntime --quick[/]
    For a teacher: [bold]kdcompress profile --teacher mpnet-base --quick[/]
    """
    from kdcompress.models import teacher_shape
    from kdcompress.profile.runner import default_name, make_settings, run_profile
    from kdcompress.render import profile_summary
    from kdcompress.space import load_space

    check_device(device)
    if name is not None:
        check_profile_name(name)
    check_shapes(seq_len, batch)
    shape = teacher_shape(teacher) if teacher is not None else None
    settings = make_settings(
        backend=backend,
        threads=threads,
        seq_lens=tuple(seq_len or ()),
        batch_sizes=tuple(batch or (1,)),
        quick=quick,
        seed=seed,
        space=load_space(space) if space is not None or shape is None else None,
        fit_architectures=fit_archs,
        heldout_architectures=heldout_archs,
        teacher=shape,
    )
    name = name or default_name(settings)
    output = output or Path("profiles") / f"{name}.json"
    hold_output(ctx, output)
    profile_summary(run_profile(settings=settings, name=name, output=output, overwrite=overwrite))
    info(f"[green]Profile written[/] to {output}")
