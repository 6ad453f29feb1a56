"""``kdcompress distill``: distil a student from a teacher."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kdcompress.catalog import DEFAULT_TEACHER
from kdcompress.cli.app import app
from kdcompress.cli.options import OverwriteOption, TeacherOption, hold_output
from kdcompress.errors import UsageError
from kdcompress.general import DOMAIN_SHARE

if TYPE_CHECKING:
    from kdcompress.artifacts import StudentArch


@app.command()
def distill(
    ctx: typer.Context,
    output: Annotated[
        Path, typer.Option(help="Student folder to create (a Hugging Face model folder).")
    ],
    teacher: TeacherOption = DEFAULT_TEACHER,
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
        float | None, typer.Option(min=0.0, help="Peak learning rate (AdamW) [default: 1e-3].")
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
    whiten_weight: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Weight of an MSE in the teacher's whitened embedding space, where every "
            "principal direction counts alike (the plain MSE and cosine follow the loudest).",
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
    general: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=0.9,
            help="Share of training items that are general-domain sentences (news and "
            "parliament speeches in en, de, es, nl; each learns the teacher's embedding of "
            "itself), mixed into the Bible's cross-lingual pairs (default: 0, or "
            f"{DOMAIN_SHARE:g} with --domain-text).",
        ),
    ] = None,
    domain_text: Annotated[
        Path | None,
        typer.Option(
            help="Unlabelled text of your deployment's domain (reviews, tickets, ...), one "
            "sentence or document per line: the --general share comes from it instead of the "
            "news and speeches, while the Bible keeps the languages aligned.",
        ),
    ] = None,
    words: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=0.9,
            help="Share of training items that are single whole words of the teacher's "
            "vocabulary, each learning the teacher's embedding of itself: the words a verse "
            "never shows, in every script the tokenizer knows.",
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
    from kdcompress.distill import DistillJob, parse_languages, run_distill
    from kdcompress.kd.settings import DEFAULT_LR, parse_loss, parse_targets
    from kdcompress.kd.student import parse_init
    from kdcompress.models import resolve_teacher
    from kdcompress.render import show_result

    student = _student_arch(arch, arch_json)
    _check_inputs(corpus, cache, domain_text)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 writes for all
        hold_output(ctx, output)
    job = DistillJob(
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
        loss=parse_loss(loss),
        targets=parse_targets(targets) if targets is not None else None,
        contrastive_weight=contrastive_weight,
        whiten_weight=whiten_weight,
        passages=passages,
        general=general if general is not None else (DOMAIN_SHARE if domain_text else 0.0),
        domain_file=domain_text,
        words=words,
        init=parse_init(init),
        trim_vocab=trim_vocab,
        dropout=dropout,
        seed=seed,
        cache_dir=cache,
        checkpoint_every=checkpoint_every,
        resume=resume,
        overwrite=overwrite,
    )
    result = run_distill(job, teacher=resolve_teacher(teacher))
    if result is not None:
        show_result(result, output)


def _student_arch(arch: str | None, arch_json: str | None) -> StudentArch:
    """The student shape of --arch PATH[#budget] or --arch-json (exactly one of them)."""
    from kdcompress.kd.student import load_search_arch, parse_arch_json

    if arch is not None and arch_json is None:
        return load_search_arch(arch)[0]
    if arch_json is not None and arch is None:
        return parse_arch_json(arch_json)
    raise UsageError("give exactly one of --arch PATH[#budget] or --arch-json")


def _check_inputs(corpus: Path | None, cache: Path | None, domain_text: Path | None) -> None:
    """--corpus, --domain-text and --cache, before any work."""
    from kdcompress.outputs import check_writable_location
    from kdcompress.textfile import read_text_lines

    for text in (corpus, domain_text):
        if text is not None:
            read_text_lines(text)  # a binary or non-UTF-8 file fails now, naming the bad byte
    if cache is not None:
        if cache.exists() and not cache.is_dir():
            raise UsageError(f"--cache {cache}: a file, not a folder")
        check_writable_location(cache, what="--cache")
