"""ONNX Runtime backend (CPU execution provider)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import warnings
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdcompress.backends.base import Backend, BackendName, LoadedModel
from kdcompress.errors import ArtifactError, ModelNotFoundError, first_line

ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model_int8.onnx"

# Hugging Face model types whose exported graphs ONNX Runtime's "bert" transformer fusions
# recognise (the encoder part of the table optimum's ORTConfigManager keeps).
ORT_FUSION_MODEL_TYPES = {
    "albert": "bert",
    "bert": "bert",
    "camembert": "bert",
    "distilbert": "bert",
    "electra": "bert",
    "mpnet": "bert",
    "roberta": "bert",
    "xlm-roberta": "bert",
}

# "/encoder/layer.3/attention/...": the encoder layer a node of an exported HF graph belongs to.
_LAYER_IN_NAME = re.compile(r"\blayers?[._](\d+)\b")


def find_onnx_file(model_path: Path) -> Path:
    """The ONNX graph at ``model_path``: the file itself or ``model.onnx`` inside a folder."""
    candidate = model_path / ONNX_FILE if model_path.is_dir() else model_path
    if not candidate.is_file():
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


# ----------------------------------------------------------------------------- int8


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


def fuse_transformer(*, source: Path, target: Path, model_dir: Path) -> str:
    """ONNX Runtime's transformer graph fusions (Attention, SkipLayerNormalization, BiasGelu...)
    into ``target``; the fusions found, or why there are none (``target`` is then a copy).

    Heads and hidden size come from ``config.json``; model types ORT does not know are left
    unfused rather than risking a wrong fusion.
    """
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    graph = load_onnx_graph(source)
    config = json.loads((model_dir / "config.json").read_text())
    model_type = str(config.get("model_type", "?"))
    ort_type = ORT_FUSION_MODEL_TYPES.get(model_type)
    reason = ""
    if ort_type is None:
        reason = f"none: ONNX Runtime has no transformer fusions for model type '{model_type}'"
    else:
        options = FusionOptions(ort_type)
        try:
            with quiet_library_output():
                fused = optimize_model(
                    graph,
                    model_type=ort_type,
                    num_heads=int(config.get("num_attention_heads", 0)),
                    hidden_size=int(config.get("hidden_size", 0)),
                    optimization_options=options,
                    opt_level=0,  # fusions only: no CPU-specific rewrites baked into the file
                )
        except Exception as exc:  # the fusion scripts raise whatever a pattern match hits
            reason = f"none: ONNX Runtime's fusions failed on this graph ({exc})"
        else:
            fused.save_model_to_file(str(target))
            found = {op: n for op, n in fused.get_fused_operator_statistics().items() if n}
            listed = ", ".join(f"{op} x{n}" for op, n in sorted(found.items()))
            return f"{ort_type}: {listed or 'no pattern matched'}"
    import onnx

    onnx.save(graph, str(target))
    return reason


def preprocess_for_quantization(*, source: Path, target: Path) -> None:
    """ORT's quantization pre-processing (shape inference, basic graph clean-up).

    Symbolic shape inference is skipped: it fails on the fused contrib ops of these graphs.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with quiet_library_output():
        quant_pre_process(str(source), str(target), skip_symbolic_shape=True)


def nodes_to_keep_fp32(
    graph: Any, *, layers: Collection[int], embeddings: bool
) -> tuple[list[str], set[str]]:
    """Names of the nodes of encoder ``layers`` (and of the embedding lookups) to leave in fp32,
    and the parts actually found (``"embeddings"``, ``"layer N"``)."""
    matrices = {init.name for init in graph.graph.initializer if len(init.dims) == 2}
    names: list[str] = []
    found: set[str] = set()
    for node in graph.graph.node:
        is_embedding = node.op_type == "EmbedLayerNormalization" or (
            node.op_type == "Gather" and bool(node.input) and node.input[0] in matrices
        )
        layer = _node_layer(node.name, node.output)
        if embeddings and is_embedding:
            names.append(node.name)
            found.add("embeddings")
        elif layer is not None and layer in layers:
            names.append(node.name)
            found.add(f"layer {layer}")
    return names, found


def _node_layer(name: str, outputs: Sequence[str]) -> int | None:
    for text in (name, *outputs):
        match = _LAYER_IN_NAME.search(text)
        if match:
            return int(match.group(1))
    return None


def activation_matmuls(graph: Any, weights: Collection[str]) -> list[str]:
    """Names of the MatMuls of ``graph`` that multiply two activations (no weight input)."""
    return [
        node.name
        for node in graph.graph.node
        if node.op_type == "MatMul" and not any(name in weights for name in node.input)
    ]


def quantize_onnx(
    *,
    source: Path,
    target: Path,
    static: bool,
    per_channel: bool,
    reduce_range: bool,
    calibration: Sequence[Mapping[str, np.ndarray]] = (),
    exclude: Sequence[str] = (),
) -> None:
    """int8 ``source`` (pre-processed fp32: fused for dynamic, unfused for static) into ``target``.

    Dynamic: int8 weights, activations quantized per batch at run time (MatMul, fused
    Attention, embedding Gather). Static: QDQ format, uint8 activations with ranges from the
    ``calibration`` batches (MinMax), int8 weights (MatMul, embedding Gather). Nodes named in
    ``exclude`` stay fp32.
    """
    import onnx
    import onnxruntime
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    # Contrib ops of a fused graph (Attention, SkipLayerNormalization) have no ONNX type
    # inference: tell the quantizer their outputs are float instead of letting it fail.
    extra: dict[str, Any] = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    onnxruntime.set_default_logger_severity(3)
    if not static:
        with quiet_library_output():
            quantize_dynamic(
                source,
                target,
                op_types_to_quantize=["MatMul", "Attention", "Gather", "EmbedLayerNormalization"],
                per_channel=per_channel,
                reduce_range=reduce_range,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=list(exclude),
                extra_options=extra,
            )
        return
    if not calibration:
        raise ValueError("static quantization needs calibration batches")
    # Attention's activation x activation products (Q.K^T, softmax.V) stay fp32: on me5-small,
    # quantizing them cost parity and gained no measurable speed.
    graph = load_onnx_graph(source)
    weights = {init.name for init in graph.graph.initializer}
    exclude = [*exclude, *activation_matmuls(graph, weights)]
    del graph

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return dict(batch) if batch is not None else None

    with quiet_library_output():
        quantize_static(
            source,
            target,
            Batches(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul", "Gather"],
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(exclude),
            calibrate_method=CalibrationMethod.MinMax,
            extra_options=extra,
        )
