"""Export stage: HF encoder folder -> deployable ONNX / OpenVINO artifact, checked for parity."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import replace
from enum import StrEnum
from pathlib import Path

from kdcompress.artifacts import EXPORT_SUBFOLDERS, MANIFEST, ExportManifest
from kdcompress.assets import EMBEDDING_INFO
from kdcompress.backends import Backend, BackendName, get_backend, parse_backend_name
from kdcompress.console import info, status
from kdcompress.errors import KDCompressError, UsageError, first_line, parse_choice
from kdcompress.hardware import threads_or_default
from kdcompress.model_card import write_export_card
from kdcompress.models import ResolvedModel, resolved
from kdcompress.outputs import atomic_output_dir
from kdcompress.parity import check_parity
from kdcompress.quantize import (
    Calibration,
    Quantization,
    QuantizeOptions,
    load_calibration,
    quantize_export,
)


class ExportFormat(StrEnum):
    ONNX = "onnx"
    OPENVINO = "openvino"


FORMAT_BACKEND = {
    ExportFormat.ONNX: BackendName.ONNXRUNTIME,
    ExportFormat.OPENVINO: BackendName.OPENVINO,
}


class ExportFailedError(KDCompressError):
    """The export ran but its result is unusable (unsupported model, parity lost)."""

    exit_code = 4


def format_for_backend(name: str) -> ExportFormat:
    """The export format a deployment backend runs (PyTorch needs no export)."""
    backend = parse_backend_name(name)
    for fmt, runs_it in FORMAT_BACKEND.items():
        if runs_it is backend:
            return fmt
    raise UsageError(f"backend '{backend}' needs no export; choose onnxruntime or openvino")


def parse_format(name: str) -> ExportFormat:
    return parse_choice(ExportFormat, name, what="export format")


def export_model(
    *,
    model: str | ResolvedModel,
    fmt: ExportFormat,
    output: Path,
    overwrite: bool = False,
    threads: int | None = None,
    min_cosine: float = 0.999,
    quantize: QuantizeOptions | None = None,
) -> ExportManifest:
    """Export ``model`` to ``fmt`` in ``output`` and verify it reproduces the PyTorch outputs.

    The fp32 export must reach ``min_cosine``. With ``quantize``, an int8 model is written next
    to it and becomes the deployable ``model_file``; its parity is reported and gated at the
    (looser) ``quantize.min_int8_cosine``, with fallbacks to less aggressive settings, and its
    latency is compared with fp32's. Nothing is left in ``output`` unless everything succeeded.
    ``model``: a name to resolve, or a model its caller resolved already.
    """
    source = resolved(model)
    model_dir = source.folder
    backend = get_backend(FORMAT_BACKEND[fmt])
    threads = threads_or_default(threads)
    if quantize is not None and quantize.mode is Quantization.NONE:
        quantize = None
    calibration = None
    if quantize is not None and quantize.mode is Quantization.STATIC:
        with status(f"Reading {quantize.calibration_size} calibration sentences"):
            calibration = load_calibration(model_dir, quantize)  # fails fast, before exporting
    with atomic_output_dir(output, overwrite=overwrite) as staging:
        manifest = _export_fp32(
            backend,
            fmt,
            model=source.name,
            model_dir=model_dir,
            staging=staging,
            threads=threads,
            min_cosine=min_cosine,
        )
        if quantize is not None:
            manifest = _add_int8(
                manifest,
                backend,
                model_dir=model_dir,
                staging=staging,
                options=quantize,
                calibration=calibration,
                threads=threads,
            )
        manifest.save(staging / MANIFEST)
        write_export_card(staging, manifest, source=model_dir, path=output)
    info(f"[green]Exported[/] {source.name} -> {output / manifest.model_file}")
    return manifest


def _export_fp32(
    backend: Backend,
    fmt: ExportFormat,
    *,
    model: str,
    model_dir: Path,
    staging: Path,
    threads: int,
    min_cosine: float,
) -> ExportManifest:
    """The fp32 export in ``staging``, checked against PyTorch, and its manifest."""
    with status(f"Exporting {model} to {fmt} ({backend.name} {backend.version()})"):
        artifact = _export(backend, model_dir=model_dir, output_dir=staging)
    if (model_dir / EMBEDDING_INFO).is_file():
        shutil.copy2(model_dir / EMBEDDING_INFO, staging / EMBEDDING_INFO)
    artifact = _sentence_transformers_layout(artifact, staging / EXPORT_SUBFOLDERS[fmt.value])
    _write_module_files(model_dir, staging)
    with status("Checking output parity against PyTorch"):
        loaded = backend.load(model_path=artifact, threads=threads)
        parity = check_parity(source_dir=model_dir, candidate=loaded, min_cosine=min_cosine)
    if not parity.passed:
        raise ExportFailedError(
            f"export lost parity: min cosine {parity.min_cosine:.5f} < {min_cosine} "
            f"(max abs diff {parity.max_abs_diff:.2e}); nothing was written"
        )
    fp32_file = str(artifact.relative_to(staging))
    return ExportManifest(
        format=fmt.value,
        backend=backend.name.value,
        backend_version=backend.version(),
        source_model=str(model_dir.resolve()),
        model_file=fp32_file,
        quantization="none",
        parity=parity,
        fp32_file=fp32_file,
        fp32_parity=parity,
    )


def _sentence_transformers_layout(artifact: Path, subfolder: Path) -> Path:
    """Move the exported graph with its weight files (``.bin``, ``_data``) into ``subfolder``."""
    subfolder.mkdir()
    companions = (artifact.with_suffix(".bin"), artifact.with_name(artifact.name + "_data"))
    for path in (artifact, *companions):
        if path.is_file():
            path.replace(subfolder / path.name)
    return subfolder / artifact.name


def _write_module_files(model_dir: Path, staging: Path) -> None:
    """The sentence-transformers module files of the export (pooling, prompts): the source's
    input length and the recipe of its ``kdcompress_model.json``."""
    from kdcompress.models import model_config
    from kdcompress.st_format import TRANSFORMER_CONFIG, write_sentence_transformers_files

    source = model_dir / TRANSFORMER_CONFIG
    length = json.loads(source.read_text())["max_seq_length"] if source.is_file() else None
    config = model_config(model_dir)
    hidden = int(config.get("hidden_size") or config["dim"])  # DistilBERT calls it dim
    write_sentence_transformers_files(staging, hidden=hidden, max_seq_length=length, exported=True)


def _add_int8(
    manifest: ExportManifest,
    backend: Backend,
    *,
    model_dir: Path,
    staging: Path,
    options: QuantizeOptions,
    calibration: Calibration | None,
    threads: int,
) -> ExportManifest:
    """``manifest`` with the int8 model quantized next to its fp32 file as the deployed one."""
    assert manifest.fp32_file is not None
    int8 = quantize_export(
        backend=backend,
        model_dir=model_dir,
        fp32_file=staging / manifest.fp32_file,
        output_dir=staging,
        options=options,
        calibration=calibration,
        threads=threads,
    )
    return replace(
        manifest,
        model_file=str(int8.model_file.relative_to(staging)),
        quantization=int8.report.settings.mode,
        parity=int8.parity,
        int8=int8.report,
    )


def _export(backend: Backend, *, model_dir: Path, output_dir: Path) -> Path:
    """Run a backend's export, turning the exporters' 'unsupported model' errors into one line.

    There is deliberately no fallback to a plain ``torch.onnx.export`` trace for model types
    optimum refuses: on the encoders it refuses that transformers can build (LUKE, YOSO, MRA,
    FNet), tracing either failed or baked the traced sequence length into the graph (outputs off
    by 2.2-2.4 at another length), so it would turn a clear refusal into a parity failure.
    """
    try:
        result = backend.export(model_dir=model_dir, output_dir=output_dir)
    except (ValueError, KeyError, NotImplementedError) as exc:
        model_type = json.loads((model_dir / "config.json").read_text()).get("model_type", "?")
        raise ExportFailedError(
            f"cannot export model type '{model_type}' from {model_dir}: {first_line(exc)}"
        ) from exc
    return result


def teacher_export(teacher: str, backend: str, threads: int) -> Path:
    """An export folder of ``teacher`` for ``backend``: given, or made once and cached.

    Comparing against the teacher needs it on the same runtime; exporting a 100M-parameter
    teacher takes minutes, so the fp32 export is kept in the cache and reused.
    """
    from kdcompress.assets import cache_dir

    given = Path(teacher).expanduser()
    if (given / MANIFEST).is_file():
        return given
    slug = teacher.strip("/").replace("/", "--").replace(" ", "_")
    if given.is_dir():
        # A local folder: the same name in two places must not collide, and a model rewritten
        # in place must not reuse the export of its old weights.
        stamps = [
            f"{f.name}:{f.stat().st_mtime_ns}" for f in sorted(given.iterdir()) if f.is_file()
        ]
        key = "|".join([str(given.resolve()), *stamps])
        slug = f"{given.resolve().name}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    # Version strings may hold slashes (OpenVINO's build tag): keep the folder name flat.
    version = re.sub(r"[^A-Za-z0-9._-]+", "_", get_backend(backend).version())
    target = cache_dir() / "teacher-exports" / f"{slug}-{backend}-{version}"
    if not _cached_export_whole(target):
        export_model(
            model=teacher,
            fmt=format_for_backend(backend),
            output=target,
            overwrite=True,
            threads=threads,
        )
    return target


def _cached_export_whole(folder: Path) -> bool:
    """A cached teacher export whose manifest reads and whose model files exist; else it is
    exported again (a damaged entry otherwise fails every validation that compares with it)."""
    try:
        manifest = ExportManifest.load(folder / MANIFEST)
    except KDCompressError:
        return False
    files = {manifest.model_file, manifest.fp32_file or manifest.model_file}
    return all((folder / name).is_file() and (folder / name).stat().st_size > 0 for name in files)
