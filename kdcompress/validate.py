"""Validate stage: parity of an export with its PyTorch source and their latency side by side."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kdcompress.artifacts import (
    ExportManifest,
    LatencyRow,
    ParityReport,
    PredictedLatency,
    ValidationReport,
)
from kdcompress.backends import LoadedModel, get_backend
from kdcompress.backends.base import compare_latency
from kdcompress.console import progress
from kdcompress.encoding import (
    SAMPLE_SENTENCES,
    load_tokenizer,
    mean_pool,
    row_cosine,
    synthetic_batch,
    tokenize,
)
from kdcompress.errors import ArtifactError, UsageError
from kdcompress.hardware import cpu_model, physical_cores

REPORT = "validation.json"
DEFAULT_SEQ_LENS = (32, 128)


def _text_prefix(model_dir: Path) -> str:
    info = model_dir / "kdcompress_model.json"
    return str(json.loads(info.read_text()).get("text_prefix", "")) if info.is_file() else ""


def check_parity(
    *, source_dir: Path, candidate: LoadedModel, min_cosine: float = 0.999
) -> ParityReport:
    """Compare ``candidate`` with the PyTorch model in ``source_dir`` on multilingual sentences."""
    reference = get_backend("torch").load(model_path=source_dir, threads=candidate.threads)
    prefix = _text_prefix(source_dir)
    batch = tokenize(load_tokenizer(source_dir), [prefix + s for s in SAMPLE_SENTENCES])
    expected, actual = reference.run(batch), candidate.run(batch)
    mask = batch["attention_mask"]
    cosines = row_cosine(mean_pool(expected, mask), mean_pool(actual, mask))
    return ParityReport(
        sentences=len(SAMPLE_SENTENCES),
        max_abs_diff=float(np.abs(expected - actual)[mask.astype(bool)].max()),
        min_cosine=float(cosines.min()),
        mean_cosine=float(cosines.mean()),
        min_cosine_required=min_cosine,
    )


def _model_limits(model_dir: Path) -> tuple[int, int]:
    config = json.loads((model_dir / "config.json").read_text())
    return int(config["vocab_size"]), int(config.get("max_position_embeddings", 512))


def _load_export(export_dir: Path, threads: int) -> tuple[ExportManifest, LoadedModel]:
    from kdcompress.export import MANIFEST

    if not (export_dir / MANIFEST).is_file():
        raise ArtifactError(f"{export_dir}: not an export directory (no {MANIFEST})")
    manifest = ExportManifest.load(export_dir / MANIFEST)
    model = get_backend(manifest.backend).load(
        model_path=export_dir / manifest.model_file, threads=threads
    )
    return manifest, model


def validate_export(
    *,
    export_dir: Path,
    teacher_export: Path | None = None,
    profile: Path | None = None,
    seq_lens: tuple[int, ...] = DEFAULT_SEQ_LENS,
    batch_sizes: tuple[int, ...] = (1,),
    threads: int | None = None,
    runs: int = 30,
    rounds: int = 3,
) -> ValidationReport:
    """Parity with the PyTorch source and latency side by side, in one process.

    Measured together: the export, its PyTorch source and, with ``teacher_export``, the
    teacher exported to the same backend (the speedup that matters). With ``profile``, the
    latency the hardware profile predicted for the student is reported next to the measurement.
    """
    threads = threads or physical_cores()
    manifest, exported = _load_export(export_dir, threads)
    source_dir = Path(manifest.source_model)
    if not (source_dir / "config.json").is_file():
        raise ArtifactError(f"{export_dir}: its source model {source_dir} no longer exists")
    vocab, max_positions = _model_limits(source_dir)
    # Position ids start after the padding index in RoBERTa-style models, so leave a margin.
    if max(seq_lens) > max_positions - 2:
        raise UsageError(
            f"sequence length {max(seq_lens)} exceeds the model's {max_positions - 2} positions"
        )
    models = {"student": exported}
    teacher_vocab = vocab
    if teacher_export is not None:
        teacher_manifest, models["teacher"] = _load_export(teacher_export, threads)
        if teacher_manifest.backend != manifest.backend:
            raise UsageError(
                f"teacher export runs on {teacher_manifest.backend}, the student on "
                f"{manifest.backend}: compare on the same runtime"
            )
        teacher_vocab = _model_limits(Path(teacher_manifest.source_model))[0]
    models["student-pytorch"] = get_backend("torch").load(model_path=source_dir, threads=threads)
    parity = check_parity(source_dir=source_dir, candidate=exported)
    rows = _latency_rows(models, min(vocab, teacher_vocab), seq_lens, batch_sizes, runs, rounds)
    report = ValidationReport(
        export_dir=str(export_dir),
        parity=parity,
        latency=tuple(rows),
        cpu=cpu_model(),
        threads=threads,
        teacher_export=str(teacher_export) if teacher_export else None,
        predicted=_predicted(profile, source_dir, seq_lens, batch_sizes),
    )
    report.save(export_dir / REPORT)
    return report


def _latency_rows(
    models: dict[str, LoadedModel],
    vocab: int,
    seq_lens: tuple[int, ...],
    batch_sizes: tuple[int, ...],
    runs: int,
    rounds: int,
) -> list[LatencyRow]:
    rows: list[LatencyRow] = []
    shapes = [(b, s) for b in batch_sizes for s in seq_lens]
    with progress() as bar:
        task = bar.add_task("Measuring latency side by side", total=len(shapes))
        for batch_size, seq_len in shapes:
            batch = synthetic_batch(vocab_size=vocab, batch=batch_size, seq_len=seq_len)
            for name, stats in compare_latency(models, batch, runs=runs, rounds=rounds).items():
                rows.append(
                    LatencyRow(name, models[name].backend.value, batch_size, seq_len, stats)
                )
            bar.advance(task)
    return rows


def _predicted(
    profile: Path | None, source_dir: Path, seq_lens: tuple[int, ...], batch_sizes: tuple[int, ...]
) -> tuple[PredictedLatency, ...]:
    """What the hardware profile predicted for the student, where its grid covers the shape."""
    if profile is None:
        return ()
    from kdcompress.profile.predictor import LatencyModel
    from kdcompress.profile.runner import load_profile
    from kdcompress.search.runner import teacher_arch

    model = LatencyModel.from_profile(load_profile(profile))
    arch = teacher_arch(source_dir)
    predictions = []
    for batch in batch_sizes:
        for seq_len in seq_lens:
            try:
                ms = model.predict_ms(arch, seq_len=seq_len, batch=batch)
            except ArtifactError:
                continue  # shape outside the profiled grid
            predictions.append(PredictedLatency(batch, seq_len, ms))
    return tuple(predictions)
