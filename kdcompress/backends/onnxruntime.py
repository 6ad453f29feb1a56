"""ONNX Runtime backend (CPU execution provider)."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kdcompress.artifacts import EXPORT_SUBFOLDERS
from kdcompress.backends.base import Backend, BackendName, LoadedModel, locate_model_file
from kdcompress.errors import ArtifactError, ModelNotFoundError, first_line

ONNX_FILE = "model.onnx"


def find_onnx_file(model_path: Path) -> Path:
    """The ONNX graph at ``model_path``: the file itself, or ``model.onnx`` inside a folder or
    its ``onnx/`` subfolder (an export's, sentence-transformers' layout)."""
    candidate = locate_model_file(model_path, ONNX_FILE, EXPORT_SUBFOLDERS["onnx"])
    if candidate is None:
        raise ModelNotFoundError(f"{model_path}: no ONNX model found (expected {ONNX_FILE})")
    return candidate


def export_onnx(*, model_dir: Path, output_dir: Path) -> Path:
    """fp32 ONNX export of an HF encoder through optimum's exporter (dynamic batch and length)."""
    import transformers
    from optimum.exporters.onnx import main_export

    transformers.logging.set_verbosity_error()  # weight-loading chatter is not for users

    # The tracer's warnings about constants are expected for encoders and only alarm users;
    # parity is checked on real inputs right after export.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("optimum").setLevel(logging.ERROR)
        main_export(
            str(model_dir),
            output=output_dir,
            task="feature-extraction",
            # The encoder itself (last_hidden_state; pooling happens outside), even though a
            # student folder is also a sentence-transformers model, which optimum would
            # otherwise export as one, loading sentence-transformers to do it.
            library_name="transformers",
            local_files_only=True,
            do_validation=False,  # kdcompress validates parity itself, on its own inputs
        )
    return output_dir / ONNX_FILE


class OnnxRuntimeModel(LoadedModel):
    def __init__(self, *, path: Path, threads: int) -> None:
        import onnxruntime as ort

        super().__init__(backend=BackendName.ONNXRUNTIME, path=path, threads=threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session: Any = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own untyped errors for a corrupt graph
            raise ArtifactError(f"{path}: ONNX Runtime cannot load this model ({exc})") from exc
        self._inputs = tuple(i.name for i in self._session.get_inputs())
        outputs = [o.name for o in self._session.get_outputs()]
        self._output = "last_hidden_state" if "last_hidden_state" in outputs else outputs[0]

    @property
    def input_names(self) -> tuple[str, ...]:
        return self._inputs

    def _run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        result: np.ndarray = self._session.run([self._output], inputs)[0]
        return result


class OnnxRuntimeBackend(Backend):
    name = BackendName.ONNXRUNTIME

    def version(self) -> str:
        import onnxruntime

        return str(onnxruntime.__version__)

    def export(self, *, model_dir: Path, output_dir: Path) -> Path:
        return export_onnx(model_dir=model_dir, output_dir=output_dir)

    def load(self, *, model_path: Path, threads: int) -> LoadedModel:
        return OnnxRuntimeModel(path=find_onnx_file(model_path), threads=threads)


@contextlib.contextmanager
def quiet_library_output() -> Iterator[None]:
    """Swallow what quantization libraries print on their own (INFO logs, progress bars, tables).

    kdcompress reports through its one console; errors still raise as exceptions.
    """
    loggers = [logging.getLogger(name) for name in ("", "onnxruntime", "nncf")]
    levels = [logger.level for logger in loggers]
    sink = io.StringIO()
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(sink),
            contextlib.redirect_stderr(sink),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def load_onnx_graph(path: Path) -> Any:
    """The ONNX graph in ``path`` (weights included), or a one-line error if it is not one."""
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError, onnx's own errors: all mean "not ONNX"
        raise ArtifactError(f"{path}: not a readable ONNX model ({first_line(exc)})") from exc
