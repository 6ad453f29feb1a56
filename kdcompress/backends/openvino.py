"""OpenVINO backend (CPU plugin)."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdcompress.backends.base import Backend, BackendName, LoadedModel
from kdcompress.backends.onnxruntime import ONNX_FILE, export_onnx, quiet_library_output
from kdcompress.errors import ArtifactError, ModelNotFoundError, first_line

OPENVINO_FILE = "openvino_model.xml"
OPENVINO_INT8_FILE = "openvino_model_int8.xml"

# Operations keep their ONNX names through conversion: "/encoder/layer.3/attention/...".
_LAYER_IN_NAME = re.compile(r"\blayers?[._](\d+)\b")


def find_openvino_file(model_path: Path) -> Path:
    """The model at ``model_path``: an IR .xml (or an .onnx file, which OpenVINO reads directly)
    or ``openvino_model.xml`` inside a folder."""
    candidate = model_path / OPENVINO_FILE if model_path.is_dir() else model_path
    if not candidate.is_file():
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


# ----------------------------------------------------------------------------- int8


def read_openvino_model(path: Path) -> Any:
    """The OpenVINO model in ``path`` (IR or ONNX), or a one-line error if it cannot be read."""
    import openvino as ov

    try:
        return ov.Core().read_model(str(path))
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses with C++ messages
        reason = first_line(exc)
        raise ArtifactError(f"{path}: OpenVINO cannot read this model ({reason})") from exc


def ops_to_keep_fp32(
    model: Any, *, layers: Collection[int], embeddings: bool
) -> tuple[list[str], set[str]]:
    """Names of the weighted operations (MatMul, embedding Gather) of encoder ``layers`` and
    of the embeddings to leave in fp32, and the parts found (``"embeddings"``, ``"layer N"``)."""
    names: list[str] = []
    found: set[str] = set()
    for op in model.get_ordered_ops():
        kind, name = op.get_type_name(), op.get_friendly_name()
        if kind not in ("MatMul", "Gather"):
            continue
        match = _LAYER_IN_NAME.search(name)
        if embeddings and kind == "Gather" and "embeddings" in name:
            names.append(name)
            found.add("embeddings")
        elif kind == "MatMul" and match and int(match.group(1)) in layers:
            names.append(name)
            found.add(f"layer {int(match.group(1))}")
    return names, found


def quantize_openvino(
    *,
    source: Path,
    target: Path,
    static: bool,
    calibration: Sequence[Mapping[str, np.ndarray]] = (),
    exclude: Sequence[str] = (),
    overflow_fix: str = "first_layer_only",
) -> None:
    """int8 ``source`` into ``target`` with NNCF.

    Static: post-training quantization (activations and weights, transformer-aware: SmoothQuant,
    attention kept accurate) with statistics from the ``calibration`` inputs. Dynamic:
    weight-only int8 compression (asymmetric, per channel); activations stay fp32 and the
    weights are decompressed on the fly. Operations named in ``exclude`` stay fp32.
    ``overflow_fix`` is NNCF's ``OverflowFix`` (7-bit weights against non-VNNI saturation).
    """
    import nncf  # slow to import (~4 s): only when int8 OpenVINO is asked for
    import openvino as ov
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        OverflowFix,
    )

    model = read_openvino_model(source)
    ignored = nncf.IgnoredScope(names=list(exclude), validate=False) if exclude else None
    with quiet_library_output():
        if static:
            if not calibration:
                raise ValueError("static quantization needs calibration inputs")
            quantized = nncf.quantize(
                model,
                nncf.Dataset([dict(batch) for batch in calibration]),
                model_type=nncf.ModelType.TRANSFORMER,
                subset_size=len(calibration),
                ignored_scope=ignored,
                advanced_parameters=AdvancedQuantizationParameters(
                    overflow_fix=OverflowFix(overflow_fix)
                ),
            )
        else:
            quantized = nncf.compress_weights(
                model, mode=nncf.CompressWeightsMode.INT8_ASYM, ignored_scope=ignored
            )
    ov.save_model(quantized, str(target), compress_to_fp16=False)
