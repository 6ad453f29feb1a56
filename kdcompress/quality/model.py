"""What to evaluate: a model folder, an export or a hub id, resolved to a file, its backend and
its tokenizer, and loaded."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kdcompress import assets
from kdcompress.artifacts import MANIFEST, ExportManifest
from kdcompress.console import status
from kdcompress.errors import ModelNotFoundError, UsageError

if TYPE_CHECKING:
    from kdcompress.backends import LoadedModel


@dataclass(frozen=True)
class ModelSource:
    """What to load: the artifact a backend reads, and where its tokenizer and recipe live."""

    label: str  # as the user named it
    folder: Path  # the HF folder or the export folder
    backend: str
    artifact: Path | None  # None: a HF folder that the backend must export first
    tokenizer_dir: Path
    config_dir: Path
    is_export: bool


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file()


def locate_model(model: str, backend: str | None, *, fp32: bool = False) -> ModelSource:
    """Resolve ``model`` (HF folder, export folder, built-in teacher, hub id) and its backend.

    An export folder runs its deployed file (int8 when quantized), or with ``fp32`` the fp32
    file kept next to it.
    """
    from kdcompress.backends import parse_backend_name

    chosen = parse_backend_name(backend).value if backend is not None else None
    path = Path(model).expanduser()
    if path.is_dir() and (path / MANIFEST).is_file():
        manifest = ExportManifest.load(path / MANIFEST)
        if chosen is not None and chosen != manifest.backend:
            raise UsageError(
                f"{path} is a {manifest.backend} export; it cannot run on --backend {chosen}"
            )
        source = Path(manifest.source_model)
        tokenizer_dir = path if _has_tokenizer(path) else source
        if not _has_tokenizer(tokenizer_dir):
            raise ModelNotFoundError(f"{path}: no tokenizer files here nor in {source}")
        return ModelSource(
            label=model,
            folder=path,
            backend=manifest.backend,
            artifact=path / ((fp32 and manifest.fp32_file) or manifest.model_file),
            tokenizer_dir=tokenizer_dir,
            config_dir=path if (path / "config.json").is_file() else source,
            is_export=True,
        )
    from kdcompress.models import resolve_model

    folder = resolve_model(model)
    return ModelSource(
        label=model,
        folder=folder,
        backend=chosen or "torch",
        artifact=folder if (chosen or "torch") == "torch" else None,
        tokenizer_dir=folder,
        config_dir=folder,
        is_export=False,
    )


def embedding_info(source: ModelSource) -> assets.EmbeddingInfo:
    """The text prefix and pooling recorded with the model, or the defaults."""
    for folder in (source.folder, source.tokenizer_dir, source.config_dir):
        if (folder / assets.EMBEDDING_INFO).is_file():
            return assets.read_embedding_info(folder)
    return assets.EmbeddingInfo()


@contextmanager
def open_model(source: ModelSource, *, threads: int) -> Iterator[tuple[LoadedModel, str]]:
    """The model loaded on its backend (a HF folder is exported to a temporary folder first)."""
    from kdcompress.backends import get_backend

    backend = get_backend(source.backend)
    scratch: Path | None = None
    try:
        artifact = source.artifact
        if artifact is None:
            scratch = Path(tempfile.mkdtemp(prefix="kdcompress-eval-"))
            with status(f"Exporting {source.label} to {backend.name} for this evaluation"):
                artifact = backend.export(model_dir=source.folder, output_dir=scratch)
        with status(f"Loading {source.label} on {backend.name} {backend.version()}"):
            loaded = backend.load(model_path=artifact, threads=threads)
        yield loaded, backend.version()
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
