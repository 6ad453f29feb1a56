"""``kdcompress eval``: evaluate one model on the suite and save its report."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kdcompress.encoding import max_positions
from kdcompress.errors import OutputExistsError, UsageError
from kdcompress.quality.data import SuiteData, load_plan
from kdcompress.quality.embedding import Embedder
from kdcompress.quality.model import ModelSource, embedding_info, locate_model, open_model
from kdcompress.quality.report import EvalReport, TaskScore, load_reference, retention
from kdcompress.quality.scoring import evaluate_suite
from kdcompress.quality.settings import EvalSettings, check_settings

if TYPE_CHECKING:
    from kdcompress.backends import LoadedModel


def default_output(source: ModelSource, *, quick: bool) -> Path:
    """``<model folder>/eval-<name>.json`` for a local folder, ``./eval-<name>.json`` otherwise."""
    local = Path(source.label).expanduser().is_dir()
    name = source.folder.resolve().name if local else source.label.replace("/", "--")
    suffix = f"-{source.backend}" if not source.is_export and source.backend != "torch" else ""
    filename = f"eval-{name}{suffix}{'-quick' if quick else ''}.json"
    return (source.folder if local else Path(".")) / filename


def _score(
    loaded: LoadedModel,
    source: ModelSource,
    plan: SuiteData,
    settings: EvalSettings,
    batch_size: int,
) -> list[TaskScore]:
    from kdcompress.encoding import load_tokenizer

    info_ = embedding_info(source)
    tokenizer = load_tokenizer(source.tokenizer_dir)
    embedder = Embedder(
        loaded,
        tokenizer,
        text_prefix=info_.text_prefix,
        pooling=info_.pooling,
        max_positions=max_positions(source.config_dir, tokenizer),
        batch_size=batch_size,
    )
    return evaluate_suite(embedder, plan, settings)


def check_data(settings: EvalSettings) -> None:
    """Check ``settings`` and load their data, so that a missing asset fails early."""
    check_settings(settings)
    load_plan(settings)


def score_model_file(
    *,
    model_dir: Path,
    backend: str,
    artifact: Path,
    settings: EvalSettings,
    threads: int,
    batch_size: int = 32,
) -> dict[str, float]:
    """Task -> score of a model file not (yet) in an export folder, e.g. an int8 candidate;
    ``model_dir`` is the Hugging Face folder it was exported from (tokenizer, pooling)."""
    from kdcompress.backends import get_backend

    check_settings(settings)
    plan = load_plan(settings)
    source = ModelSource(
        label=artifact.name,
        folder=model_dir,
        backend=backend,
        artifact=artifact,
        tokenizer_dir=model_dir,
        config_dir=model_dir,
        is_export=True,
    )
    loaded = get_backend(backend).load(model_path=artifact, threads=threads)
    return {task.task: task.score for task in _score(loaded, source, plan, settings, batch_size)}


def _check_output(path: Path, *, overwrite: bool) -> None:
    """The report's path: a file that can be written where it is, new unless ``overwrite``."""
    from kdcompress.outputs import check_writable_location

    check_writable_location(path)
    if path.is_dir():
        raise UsageError(f"output {path} is a folder: give the report's file name")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass --overwrite to replace it")


def run_eval(
    *,
    model: str,
    settings: EvalSettings,
    backend: str | None = None,
    output: Path | None = None,
    overwrite: bool = False,
    reference: Path | None = None,
    threads: int | None = None,
    batch_size: int = 32,
    quick: bool = False,
    fp32: bool = False,
) -> tuple[EvalReport, Path]:
    """Evaluate ``model`` on the suite, save the report and return it with its path.

    Everything that can be refused (settings, reference, output path, data) is checked before
    the model runs.
    """
    from kdcompress.hardware import threads_or_default

    started = time.perf_counter()
    check_settings(settings)
    if batch_size < 1:
        raise UsageError(f"batch size must be at least 1, not {batch_size}")
    theirs = load_reference(reference, settings) if reference is not None else None
    source = locate_model(model, backend, fp32=fp32)
    path = output or default_output(source, quick=quick)
    _check_output(path, overwrite=overwrite)
    plan = load_plan(settings)
    threads = threads_or_default(threads)
    with open_model(source, threads=threads) as (loaded, version):
        tasks = _score(loaded, source, plan, settings, batch_size)
    report = EvalReport(
        model=source.label,
        model_path=str(source.folder.resolve()),
        backend=source.backend,
        backend_version=version,
        threads=threads,
        batch_size=batch_size,
        settings=settings,
        tasks=tuple(tasks),
        mean=float(np.mean([task.score for task in tasks])),
        wall_s=time.perf_counter() - started,
    )
    if theirs is not None:
        assert reference is not None
        ratios = retention(report, theirs, source=str(reference))
        report = dataclasses.replace(report, retention=ratios)
    report.save(path, overwrite=overwrite)
    return report, path
