"""Validate stage: parity of an export with its PyTorch source and their latency side by side."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kdcompress.artifacts import ExportManifest, LatencyRow, ParityReport, ValidationReport
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


def validate_export(
    *,
    export_dir: Path,
    seq_lens: tuple[int, ...] = DEFAULT_SEQ_LENS,
    batch_sizes: tuple[int, ...] = (1,),
    threads: int | None = None,
    runs: int = 30,
    rounds: int = 3,
) -> ValidationReport:
    """Parity and side-by-side latency (PyTorch source vs export) of an export directory."""
    from kdcompress.export import MANIFEST

    if not (export_dir / MANIFEST).is_file():
        raise ArtifactError(f"{export_dir}: not an export directory (no {MANIFEST})")
    manifest = ExportManifest.load(export_dir / MANIFEST)
    source_dir = Path(manifest.source_model)
    if not (source_dir / "config.json").is_file():
        raise ArtifactError(
            f"{export_dir / MANIFEST}: its source model {source_dir} no longer exists"
        )
    threads = threads or physical_cores()
    vocab, max_positions = _model_limits(source_dir)
    # Position ids start after the padding index in RoBERTa-style models, so leave a margin.
    if max(seq_lens) > max_positions - 2:
        raise UsageError(
            f"sequence length {max(seq_lens)} exceeds the model's {max_positions - 2} positions"
        )
    models = {
        "pytorch": get_backend("torch").load(model_path=source_dir, threads=threads),
        manifest.backend: get_backend(manifest.backend).load(
            model_path=export_dir / manifest.model_file, threads=threads
        ),
    }
    parity = check_parity(source_dir=source_dir, candidate=models[manifest.backend])
    rows: list[LatencyRow] = []
    shapes = [(b, s) for b in batch_sizes for s in seq_lens]
    with progress() as bar:
        task = bar.add_task("Measuring latency", total=len(shapes))
        for batch_size, seq_len in shapes:
            batch = synthetic_batch(vocab_size=vocab, batch=batch_size, seq_len=seq_len)
            for name, stats in compare_latency(models, batch, runs=runs, rounds=rounds).items():
                rows.append(
                    LatencyRow(name, models[name].backend.value, batch_size, seq_len, stats)
                )
            bar.advance(task)
    report = ValidationReport(str(export_dir), parity, tuple(rows), cpu_model(), threads)
    report.save(export_dir / REPORT)
    return report
