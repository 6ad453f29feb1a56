"""The ``kdcompress`` command line: options -> stage function -> rendered result.

Heavy libraries (torch, transformers, optimum, runtimes) are imported inside the commands, so
``kdcompress --help`` stays instant.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from kdcompress import __version__
from kdcompress.console import error, info
from kdcompress.errors import Interrupted, KDCompressError, UsageError


class _Commands(TyperGroup):
    """Turns Ctrl-C inside a command into Interrupted: one line and exit code 130 (``main``).

    Typer would exit 130 without a word; a Ctrl-C still unwinds the command first, so locks
    are released and staging folders removed.
    """

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Interrupted("interrupted") from None


app = typer.Typer(
    cls=_Commands,
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
CompareTeacherOption = Annotated[
    str | None,
    typer.Option(
        "--teacher",
        help="The teacher to compare with: its export folder, or a model (built-in name, HF "
        "folder, hub id) exported to the same runtime once and kept in the cache.",
    ),
]
TargetOption = Annotated[
    Path | None, typer.Option(help="Hardware profile: show predicted vs measured latency.")
]
SeqLenOption = Annotated[
    list[int] | None,
    typer.Option("--seq-len", help="Sequence lengths to time (repeatable; default 32 and 128)."),
]
BatchOption = Annotated[
    list[int] | None,
    typer.Option("--batch", help="Batch sizes to time (repeatable; default 1 and 8)."),
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


def _hold_output(ctx: typer.Context, path: Path) -> None:
    """Lock the output ``path`` until the command ends: a second process writing it gets one
    error line naming this one's PID (see ``kdcompress.outputs.output_lock``)."""
    from kdcompress.outputs import output_lock

    ctx.with_resource(output_lock(path))


# Longer than any encoder's position table: a --seq-len beyond it is a typo, not a request.
MAX_SEQ_LEN = 8192


def _check_positive(option: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise UsageError(f"{option} {value:g}: must be a number above 0")


def _check_shapes(
    seq_lens: list[int] | None, batches: list[int] | None, *, model: Path | None = None
) -> None:
    """--seq-len and --batch, before any work: at least 1, and lengths the model takes."""
    for batch in batches or ():
        if batch < 1:
            raise UsageError(f"--batch {batch}: must be at least 1")
    positions = _model_positions(model) if model is not None else None
    limit = min(MAX_SEQ_LEN, positions or MAX_SEQ_LEN)
    for seq_len in seq_lens or ():
        if not 1 <= seq_len <= limit:
            why = f" (the model takes {positions} positions)" if limit == positions else ""
            raise UsageError(f"--seq-len {seq_len}: must be between 1 and {limit}{why}")


def _model_positions(model: Path) -> int | None:
    """The longest input a local model folder takes, counted as validation counts it."""
    try:
        config = json.loads((model.expanduser() / "config.json").read_text(encoding="utf-8"))
        # Position ids start after the padding index in RoBERTa-style models: a margin of 2.
        return int(config["max_position_embeddings"]) - 2
    except (OSError, ValueError, KeyError, TypeError):
        return None  # not a local folder, or no position table: the model is checked later


def _check_device(device: str) -> None:
    if device.lower() != "cpu":
        raise UsageError(f"unknown device '{device}': only 'cpu' is supported")


# A profile name becomes a file name in profiles/: no separators, no "..", no hidden files.
_PROFILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


def _check_profile_name(name: str) -> None:
    if not _PROFILE_NAME.fullmatch(name):
        raise UsageError(
            f"--name {name!r}: a profile name is letters, digits, '-', '_' and '.' "
            "(not starting with a dot)"
        )


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
    space: Annotated[
        Path | None, typer.Option(help="Search space JSON (default: the built-in space).")
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
    """
    from kdcompress.profile.runner import default_name, make_settings, run_profile
    from kdcompress.render import profile_summary
    from kdcompress.space import load_space

    _check_device(device)
    if name is not None:
        _check_profile_name(name)
    _check_shapes(seq_len, batch)
    settings = make_settings(
        backend=backend,
        threads=threads,
        seq_lens=tuple(seq_len or ()),
        batch_sizes=tuple(batch or (1,)),
        quick=quick,
        seed=seed,
        space=load_space(space),
        fit_architectures=fit_archs,
        heldout_architectures=heldout_archs,
    )
    name = name or default_name(settings)
    output = output or Path("profiles") / f"{name}.json"
    _hold_output(ctx, output)
    profile_summary(run_profile(settings=settings, name=name, output=output, overwrite=overwrite))
    info(f"[green]Profile written[/] to {output}")


@app.command()
def search(
    ctx: typer.Context,
    target: Annotated[
        Path | None, typer.Option(help="Hardware profile JSON (from `kdcompress profile`).")
    ] = None,
    output: Annotated[Path | None, typer.Option(help="Run directory for the search.")] = None,
    teacher: TeacherOption = "me5-small",
    space: Annotated[
        Path | None, typer.Option(help="Search space JSON (default: the built-in space).")
    ] = None,
    episodes: Annotated[int, typer.Option(min=1, help="Search episodes.")] = 15,
    candidates: Annotated[
        int, typer.Option(min=1, help="Candidates proxy-distilled per episode.")
    ] = 8,
    pool: Annotated[
        int, typer.Option(min=1, help="Random architectures the controller ranks per episode.")
    ] = 100,
    proxy_size: Annotated[int, typer.Option(min=8, help="Proxy-split sentences.")] = 256,
    proxy_steps: Annotated[int, typer.Option(min=1, help="Distillation steps per candidate.")] = 60,
    alpha: Annotated[float, typer.Option(help="Latency exponent of the reward (< 0).")] = -0.06,
    beta: Annotated[
        float, typer.Option(help="Latency target as a fraction of the teacher's latency.")
    ] = 0.6,
    latency_budget_ms: Annotated[
        list[float] | None,
        typer.Option(
            "--latency-budget-ms",
            help="Latency budgets to recommend for (repeatable; default teacher/4, /7, /10).",
        ),
    ] = None,
    seq_len: Annotated[
        int, typer.Option(help="Sequence length the latency is predicted at.")
    ] = 128,
    controller: Annotated[str, typer.Option(help="lstm, random or evolution.")] = "lstm",
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same search.")] = 0,
    executor: Annotated[
        str,
        typer.Option(
            help="local, or ray: each episode's candidates as Ray tasks (pip install "
            "'kdcompress[ray]'); same results for the same seed."
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster to join (e.g. ray://HEAD:10001 or auto); default: start a local "
            "Ray. The run directory must be on storage every node mounts."
        ),
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue the search in this run directory.")
    ] = None,
    strict: Annotated[
        bool, typer.Option(help="Refuse a profile measured on another machine.")
    ] = False,
    overwrite: OverwriteOption = False,
) -> None:
    """Run KD-NAS: propose students, distil the best briefly, learn, recommend per budget.

    Each episode ranks a pool of random valid architectures with the controller, distils the
    chosen candidates briefly on the proxy split and rewards them with
    (1 - L_HS) * (latency / (beta * teacher latency)) ** alpha, latency from the profile.
    A killed search continues with [bold]--resume RUN_DIR[/] (at most one candidate is lost).

    Example: [bold]kdcompress search --target profiles/xeon.json --output runs/s1[/]
    """
    from kdcompress.render import search_summary
    from kdcompress.search.executor import parse_executor
    from kdcompress.search.proxy import ProxySettings
    from kdcompress.search.reward import RewardSettings
    from kdcompress.search.runner import SETTINGS_FILE, SearchSettings, run_search
    from kdcompress.space import load_space

    if not (math.isfinite(alpha) and alpha < 0):
        raise UsageError(f"--alpha {alpha:g}: must be below 0 (faster students earn more)")
    _check_positive("--beta", beta)
    for budget_ms in latency_budget_ms or ():
        _check_positive("--latency-budget-ms", budget_ms)
    executor_name = parse_executor(executor).value
    if ray_address is not None and executor_name != "ray":
        raise UsageError("--ray-address needs --executor ray")
    if resume is not None:
        settings = SearchSettings.load(resume / SETTINGS_FILE)
        output = resume
    else:
        if target is None or output is None:
            raise UsageError("--target and --output are required (or --resume RUN_DIR)")
        if not target.is_file():
            raise UsageError(
                f"--target {target}: no such profile (make one with `kdcompress profile`)"
            )
        settings = SearchSettings(
            teacher=teacher,
            target=str(target),
            episodes=episodes,
            candidates=candidates,
            pool=pool,
            seed=seed,
            seq_len=seq_len,
            controller=controller,
            reward=RewardSettings(alpha=alpha, beta=beta),
            proxy=ProxySettings(sentences=proxy_size, steps=proxy_steps),
            space=load_space(space),
            budgets_ms=tuple(latency_budget_ms or ()),
        )
    _hold_output(ctx, output)
    result = run_search(
        settings=settings,
        output=output,
        resume=resume is not None,
        overwrite=overwrite and resume is None,
        strict=strict,
        executor_name=executor_name,
        ray_address=ray_address,
    )
    search_summary(result)


@app.command()
def distill(
    ctx: typer.Context,
    output: Annotated[
        Path, typer.Option(help="Student folder to create (a Hugging Face model folder).")
    ],
    teacher: TeacherOption = "me5-small",
    arch: Annotated[
        str | None,
        typer.Option(
            help="PATH\\[#budget]: a search result, a JSON object with "
            '"recommendations": [{"budget": "...", "arch": {"layers": 4, "hidden": 384, '
            '"heads": 12, "ffn": 1536}}]; without #budget the first one.'
        ),
    ] = None,
    arch_json: Annotated[
        str | None,
        typer.Option(
            "--arch-json",
            help='The student shape, e.g. \'{"layers":4,"hidden":384,"heads":12,"ffn":1536}\'.',
        ),
    ] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Optimizer steps.")] = None,
    epochs: Annotated[
        float | None, typer.Option(min=0.01, help="Passes over the sentences (instead of steps).")
    ] = None,
    sentences: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Training sentences (default: steps x batch, each seen once; 20,000 with "
            "--epochs).",
        ),
    ] = None,
    batch: Annotated[int, typer.Option(min=1, help="Sentences per optimizer step.")] = 32,
    lr: Annotated[
        float | None, typer.Option(min=0.0, help="Peak learning rate (AdamW) [default: 3e-4].")
    ] = None,
    max_length: Annotated[int, typer.Option(min=4, help="Tokens per sentence, at most.")] = 64,
    languages: Annotated[
        str, typer.Option(help="Bible languages, comma-separated, or 'all'.")
    ] = "all",
    corpus: Annotated[
        Path | None,
        typer.Option(help="Own corpus: a text file, one sentence per line (instead of the Bible)."),
    ] = None,
    loss: Annotated[
        str,
        typer.Option(
            help="pooled (the sentence embedding: cosine + normalised MSE), hidden (+ the "
            "paper's multi-layer hidden-state loss) or hidden+attn-relation (+ MiniLMv2)."
        ),
    ] = "pooled",
    targets: Annotated[
        str | None,
        typer.Option(
            help="cross-lingual (each translation learns the teacher's embedding of its English "
            "verse; default on the Bible) or own (each sentence its own; default with --corpus)."
        ),
    ] = None,
    contrastive_weight: Annotated[
        float,
        typer.Option(
            min=0.0, help="Weight of an in-batch contrastive term (cross-lingual targets)."
        ),
    ] = 0.0,
    passages: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            help="Share of training items that are passages of 3-8 consecutive verses (long "
            "inputs, cross-lingual targets); raise --max-length with it, e.g. to 256.",
        ),
    ] = 0.0,
    init: Annotated[
        str,
        typer.Option(
            help="teacher (uniform teacher layers, parts kept by weight norms), activations "
            "(layers, heads, FFN neurons and features kept by their activations on 256 "
            "training sentences, Minitron-style) or random."
        ),
    ] = "teacher",
    trim_vocab: Annotated[
        bool, typer.Option("--trim-vocab", help="Keep only tokens that occur in the corpus.")
    ] = False,
    dropout: Annotated[float, typer.Option(min=0.0, max=0.9, help="Dropout while training.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed: sentence order, batches, random init.")] = 0,
    cache: Annotated[
        Path | None,
        typer.Option(help="Teacher-target cache folder to reuse (default: with the checkpoints)."),
    ] = None,
    checkpoint_every: Annotated[int, typer.Option(min=1, help="Steps between checkpoints.")] = 200,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted run from its checkpoint.")
    ] = False,
    overwrite: OverwriteOption = False,
) -> None:
    """Distil a student task-agnostically from a sentence-embedding teacher.

    By default the student learns the teacher's sentence embedding (cosine + normalised MSE)
    with cross-lingual targets: an English verse and one of its translations both regress the
    teacher's embedding of the English verse (Reimers & Gurevych 2020). --loss hidden adds the
    paper's multi-layer hidden-state loss: student layer i regresses teacher layers
    floor(i*L_T/L_S) and L_T-L_S+i (Uniform+Last) through a learned projection. The teacher's
    targets are computed once and cached; checkpoints live in OUTPUT.partial-ckpt/ until the
    student folder is written. Runs unchanged under [bold]torchrun --nproc-per-node N[/].
    Shape without a search: --arch-json '{"layers":4,"hidden":384,"heads":12,"ffn":1536}'.

    Example: [bold]kdcompress distill --arch runs/s1/search.json --steps 2000 --output st/s1[/]
    """
    from kdcompress.distill import parse_languages, run_distill
    from kdcompress.kd.settings import DEFAULT_LR
    from kdcompress.kd.student import load_search_arch, parse_arch_json
    from kdcompress.render import show_result
    from kdcompress.textfile import read_text_lines

    if arch is not None and arch_json is None:
        student = load_search_arch(arch)[0]
    elif arch_json is not None and arch is None:
        student = parse_arch_json(arch_json)
    else:
        raise UsageError("give exactly one of --arch PATH[#budget] or --arch-json")
    if corpus is not None:
        read_text_lines(corpus)  # a binary or non-UTF-8 file fails now, naming the bad byte
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 writes for all
        _hold_output(ctx, output)
    result = run_distill(
        teacher=teacher,
        arch=student,
        output=output,
        steps=steps,
        epochs=epochs,
        sentences=sentences,
        corpus_file=corpus,
        languages=parse_languages(languages),
        batch_size=batch,
        lr=lr if lr is not None else DEFAULT_LR,
        max_length=max_length,
        loss=loss,
        targets=targets,
        contrastive_weight=contrastive_weight,
        passages=passages,
        init=init,
        trim_vocab=trim_vocab,
        dropout=dropout,
        seed=seed,
        cache_dir=cache,
        checkpoint_every=checkpoint_every,
        resume=resume,
        overwrite=overwrite,
    )
    if result is not None:
        show_result(result, output)


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
    from kdcompress.distill import parse_languages
    from kdcompress.export import export_model, parse_format
    from kdcompress.quantize import (
        DEFAULT_CALIBRATION_SIZE,
        Quantization,
        QuantizeOptions,
        parse_quantization,
        show_int8,
    )
    from kdcompress.render import parity_table
    from kdcompress.validate import parse_suite

    _check_shapes(seq_len, batch, model=Path(model))
    fmt = parse_format(format)
    mode = parse_quantization(quantize)
    suite = parse_suite(eval_suite)
    if calibration_size is not None and mode is not Quantization.STATIC:
        raise UsageError("--calibration-size is only used with --quantize static")
    if max_quality_drop is not None and mode is Quantization.NONE:
        raise UsageError("--max-quality-drop gates int8 models: use it with --quantize")
    options = QuantizeOptions(
        mode=mode,
        calibration_size=calibration_size or DEFAULT_CALIBRATION_SIZE,
        calibration_languages=parse_languages(calibration_languages),
        per_channel=per_channel,
        min_int8_cosine=min_int8_cosine,
        speed_check=speed_check,
        max_quality_drop=max_quality_drop,
        quality_suite="full" if suite == "full" else "quick",
    )
    if output is None:
        suffix = "" if mode is Quantization.NONE else f"-int8-{mode}"
        output = Path("exports") / f"{Path(model).name}-{fmt}{suffix}"
    _hold_output(ctx, output)
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
        _validate(output, teacher, target, seq_len, batch, threads, suite=suite)


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
    from kdcompress.hardware import physical_cores
    from kdcompress.render import validation_tables
    from kdcompress.validate import (
        DEFAULT_BATCH_SIZES,
        MARKDOWN,
        REPORT,
        read_manifest,
        validate_export,
    )

    threads = threads or physical_cores()
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

    _check_shapes(seq_len, batch, model=export_dir)
    suite = parse_suite(eval_suite)
    if export_dir.is_dir():  # else validate_export says what is missing
        _hold_output(ctx, export_dir)
    _validate(
        export_dir, teacher, target, seq_len, batch, threads, suite=suite, runs=runs, memory=memory
    )


@app.command("eval")
def evaluate(
    model: Annotated[
        str, typer.Option(help="HF model folder, export folder, built-in teacher or hub id.")
    ],
    quick: Annotated[
        bool, typer.Option(help="A small subset of every task (minutes): a smoke test.")
    ] = False,
    backend: Annotated[
        str | None,
        typer.Option(
            help="torch, onnxruntime or openvino (default: torch; an export folder's own)."
        ),
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option(help="The teacher's eval JSON: adds the retention ratio per task."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            help="Report JSON (default: MODEL_FOLDER/eval-NAME.json or ./eval-NAME.json)."
        ),
    ] = None,
    languages: Annotated[
        str | None,
        typer.Option(help="Retrieval targets, comma-separated (default: de,fr,es,ru,zh,ar,sw)."),
    ] = None,
    verses: Annotated[
        int | None, typer.Option(min=2, help="Held-out verses per retrieval language.")
    ] = None,
    imdb_train: Annotated[int | None, typer.Option(min=2, help="IMDB training reviews.")] = None,
    imdb_test: Annotated[int | None, typer.Option(min=2, help="IMDB test reviews.")] = None,
    zh_train: Annotated[int | None, typer.Option(min=2, help="zh-inews training articles.")] = None,
    zh_test: Annotated[int | None, typer.Option(min=2, help="zh-inews test articles.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the sampled subsets.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per forward pass.")] = 32,
    threads: ThreadsOption = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing report file.")
    ] = False,
) -> None:
    """Run the fixed evaluation suite (retrieval, IMDB, zh-inews) on a model.

    Identical for teacher and student: English -> other-language verse retrieval on held-out
    Bible books (top-1), and IMDB / zh-inews accuracy of a logistic-regression head on the
    frozen, standardised sentence embeddings. Sizes default to the full suite; a reference
    is only accepted if it was made with the same task settings.

    Example: [bold]kdcompress eval --model me5-small --quick[/]
    """
    from kdcompress.quality import make_settings, parse_languages, run_eval
    from kdcompress.render import eval_table

    settings = make_settings(
        quick=quick,
        languages=parse_languages(languages) if languages is not None else None,
        verses=verses,
        imdb_train=imdb_train,
        imdb_test=imdb_test,
        zh_train=zh_train,
        zh_test=zh_test,
        seed=seed,
    )
    report, path = run_eval(
        model=model,
        settings=settings,
        backend=backend,
        output=output,
        overwrite=overwrite,
        reference=reference,
        threads=threads,
        batch_size=batch_size,
        quick=quick,
    )
    eval_table(report)
    info(f"[green]Evaluation written[/] to {path}")


@app.command()
def run(
    ctx: typer.Context,
    output: Annotated[Path, typer.Option(help="Run directory (re-running resumes it).")],
    teacher: TeacherOption = "me5-small",
    device: Annotated[str, typer.Option(help="Target device (only cpu today).")] = "cpu",
    backend: Annotated[
        str, typer.Option(help="Deployment runtime: onnxruntime or openvino.")
    ] = "onnxruntime",
    budget: Annotated[
        str, typer.Option(help="quick (~30 min on 2 cores), standard or full (hours).")
    ] = "quick",
    quantize: Annotated[
        str,
        typer.Option(
            help="int8 for the student: none, dynamic or static (see `kdcompress export`)."
        ),
    ] = "dynamic",
    seed: Annotated[int, typer.Option(help="Seed for search and distillation.")] = 0,
    threads: ThreadsOption = None,
) -> None:
    """Run the whole pipeline into one run directory, resuming finished stages.

    profile (reuses profiles/*.json measured on this machine, else measures a quick one) ->
    KD-NAS search -> distillation of the 7x recommendation (vocabulary trimmed) -> export of
    the student (fp32 + int8) and the teacher to the same runtime -> validation side by side
    (latency, size, peak memory, evaluation suite) -> report.html / report.md.

    Example: [bold]kdcompress run --teacher me5-small --output runs/demo[/]
    """
    from kdcompress.pipeline import run_pipeline

    _check_device(device)
    _hold_output(ctx, output)
    run_pipeline(
        teacher=teacher,
        backend=backend,
        output=output,
        budget=budget,
        quantize=quantize,
        seed=seed,
        threads=threads,
    )


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
        _hold_output(ctx, run_dir)
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


def main() -> None:
    """Console entry point: user errors become one red line and a non-zero exit code."""
    try:
        app()
    except KDCompressError as exc:
        if _state["debug"]:
            raise
        error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:  # outside a command (see _Commands)
        error("interrupted")
        sys.exit(Interrupted.exit_code)
