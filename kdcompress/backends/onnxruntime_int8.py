"""ONNX Runtime's int8 specifics: transformer fusions, pre-processing, fp32 exclusions, and
``quantize_dynamic`` / ``quantize_static`` behind :class:`kdcompress.backends.int8.Int8Backend`."""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdcompress.artifacts import Int8Settings
from kdcompress.backends.int8 import Int8Backend, Int8Setup
from kdcompress.backends.onnxruntime import load_onnx_graph, quiet_library_output
from kdcompress.console import info

# Static ONNX int8 quantizes the *unfused* graph. Calibration can only record ranges of tensors
# whose type is known, and the outputs of ORT's fused contrib ops (SkipLayerNormalization,
# BiasGelu, Attention) have none: on a fused graph most MatMul inputs stay unquantized, ORT
# turns their int8 weights into weight-only MatMulNBits, and the model ran 1.5x *slower* than
# fp32 (me5-small, seq 128, 2 threads on an AVX2 EPYC: 58 vs 39 ms). Unfused, every MatMul gets
# uint8 inputs (28 ms, 1.4x faster) and ORT still fuses LayerNorm/Gelu around them at load.
STATIC_FUSION = "none: static QDQ calibrates the unfused graph (fused ops' outputs are untyped)"

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


class OnnxRuntimeInt8(Int8Backend):
    suffix = ".onnx"

    def __init__(self, setup: Int8Setup) -> None:
        super().__init__(setup)
        self._prepared: dict[bool, tuple[Path, str]] = {}

    def prepared(self, static: bool) -> tuple[Path, str]:
        """The pre-processed fp32 graph for a static or dynamic plan and the fusions in it
        (cached): fused for dynamic int8, unfused for static (see ``STATIC_FUSION``)."""
        if static not in self._prepared:
            source, fusion = self.setup.fp32_file, STATIC_FUSION
            if not static:
                source = self.work / "fused.onnx"
                fusion = fuse_transformer(
                    source=self.setup.fp32_file, target=source, model_dir=self.setup.model_dir
                )
                if fusion.startswith("none: "):
                    info(f"[yellow]No graph fusion[/] before int8: {fusion[len('none: ') :]}")
            ready = self.work / f"prepared-{'static' if static else 'dynamic'}.onnx"
            preprocess_for_quantization(source=source, target=ready)
            if source != self.setup.fp32_file:
                source.unlink()
            self._prepared[static] = (ready, fusion)
        return self._prepared[static]

    def exclusions(self, static: bool, layers: set[int]) -> tuple[list[str], set[str]]:
        graph = load_onnx_graph(self.prepared(static)[0])
        return nodes_to_keep_fp32(graph, layers=layers, embeddings=True)

    def settings(self, static: bool, calibrated: int) -> Int8Settings:
        return Int8Settings(
            mode="static" if static else "dynamic",
            method="onnxruntime.quantize_static" if static else "onnxruntime.quantize_dynamic",
            preset=self.setup.preset,
            quant_format="QDQ" if static else "QOperator",
            weight_type="int8",
            activation_type="uint8, calibrated" if static else "uint8, per batch at run time",
            per_channel=self.setup.per_channel,
            weight_range="7-bit (reduce_range)" if self.setup.reduce_range else "8-bit",
            graph_fusion=self.prepared(static)[1],
            calibration_sentences=calibrated if static else 0,
            calibration_method="MinMax" if static else "",
        )

    def quantize(
        self,
        static: bool,
        target: Path,
        calibration: Sequence[Mapping[str, np.ndarray]],
        exclude: Sequence[str],
    ) -> None:
        quantize_onnx(
            source=self.prepared(static)[0],
            target=target,
            static=static,
            per_channel=self.setup.per_channel,
            reduce_range=self.setup.reduce_range,
            calibration=calibration,
            exclude=exclude,
        )


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
    import onnxruntime

    onnxruntime.set_default_logger_severity(3)
    if not static:
        _quantize_dynamic(source, target, per_channel, reduce_range, exclude)
        return
    if not calibration:
        raise ValueError("static quantization needs calibration batches")
    _quantize_static(source, target, per_channel, reduce_range, calibration, exclude)


def _untyped_outputs_are_float() -> dict[str, Any]:
    # Contrib ops of a fused graph (Attention, SkipLayerNormalization) have no ONNX type
    # inference: tell the quantizer their outputs are float instead of letting it fail.
    import onnx

    return {"DefaultTensorType": onnx.TensorProto.FLOAT}


def _quantize_dynamic(
    source: Path, target: Path, per_channel: bool, reduce_range: bool, exclude: Sequence[str]
) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_library_output():
        quantize_dynamic(
            source,
            target,
            op_types_to_quantize=["MatMul", "Attention", "Gather", "EmbedLayerNormalization"],
            per_channel=per_channel,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(exclude),
            extra_options=_untyped_outputs_are_float(),
        )


def _quantize_static(
    source: Path,
    target: Path,
    per_channel: bool,
    reduce_range: bool,
    calibration: Sequence[Mapping[str, np.ndarray]],
    exclude: Sequence[str],
) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

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
            extra_options=_untyped_outputs_are_float(),
        )
