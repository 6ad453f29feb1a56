"""OpenVINO backend (CPU plugin)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from kdcompress.artifacts import EXPORT_SUBFOLDERS
from kdcompress.backends.base import Backend, BackendName, LoadedModel, locate_model_file
from kdcompress.backends.onnxruntime import ONNX_FILE, export_onnx
from kdcompress.errors import ArtifactError, ModelNotFoundError, first_line

OPENVINO_FILE = "openvino_model.xml"


def find_openvino_file(model_path: Path) -> Path:
    """The model at ``model_path``: an IR .xml (or an .onnx file, which OpenVINO reads directly)
    or ``openvino_model.xml`` inside a folder or its ``openvino/`` subfolder."""
    candidate = locate_model_file(model_path, OPENVINO_FILE, EXPORT_SUBFOLDERS["openvino"])
    if candidate is None:
        raise ModelNotFoundError(
            f"{model_path}: no OpenVINO model found (expected {OPENVINO_FILE})"
        )
    return candidate


class OpenVinoModel(LoadedModel):
    def __init__(self, *, path: Path, threads: int) -> None:
        import openvino as ov

        super().__init__(backend=BackendName.OPENVINO, path=path, threads=threads)
        config = {
            "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY",
            # Without this, CPUs with AMX/AVX-512-BF16 silently run in bf16 and parity breaks.
            "INFERENCE_PRECISION_HINT": "f32",
        }
        try:
            compiled: Any = ov.Core().compile_model(str(path), "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses with C++ messages
            raise ArtifactError(f"{path}: OpenVINO cannot load this model ({exc})") from exc
        self._request = compiled.create_infer_request()
        self._inputs = tuple(port.get_any_name() for port in compiled.inputs)
        names = [port.get_any_name() for port in compiled.outputs]
        index = names.index("last_hidden_state") if "last_hidden_state" in names else 0
        self._output = compiled.outputs[index]

    @property
    def input_names(self) -> tuple[str, ...]:
        return self._inputs

    def _run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        result = self._request.infer(inputs)
        return np.asarray(result[self._output])


class OpenVinoBackend(Backend):
    name = BackendName.OPENVINO

    def version(self) -> str:
        import openvino

        return str(openvino.__version__)

    def export(self, *, model_dir: Path, output_dir: Path) -> Path:
        """Convert through ONNX: the same graph as ONNX Runtime gets, so the two compare fairly."""
        import openvino as ov

        with tempfile.TemporaryDirectory() as onnx_dir:
            onnx_file = export_onnx(model_dir=model_dir, output_dir=Path(onnx_dir))
            model = ov.convert_model(onnx_file)
            output_dir.mkdir(parents=True, exist_ok=True)
            for side_file in Path(onnx_dir).iterdir():  # config and tokenizer files
                if side_file.is_file() and not side_file.name.startswith(ONNX_FILE):
                    shutil.copy2(side_file, output_dir / side_file.name)
        target = output_dir / OPENVINO_FILE
        ov.save_model(model, str(target), compress_to_fp16=False)
        return target

    def load(self, *, model_path: Path, threads: int) -> LoadedModel:
        return OpenVinoModel(path=find_openvino_file(model_path), threads=threads)


def read_openvino_model(path: Path) -> Any:
    """The OpenVINO model in ``path`` (IR or ONNX), or a one-line error if it cannot be read."""
    import openvino as ov

    try:
        return ov.Core().read_model(str(path))
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses with C++ messages
        reason = first_line(exc)
        raise ArtifactError(f"{path}: OpenVINO cannot read this model ({reason})") from exc
