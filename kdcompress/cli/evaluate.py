"""``kdcompress eval``: the fixed evaluation suite on one model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kdcompress.cli.app import app
from kdcompress.cli.options import ThreadsOption
from kdcompress.console import info


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
