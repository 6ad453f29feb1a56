"""OpenVINO's int8 specifics: fp32 exclusions and NNCF (``nncf.quantize``,
``nncf.compress_weights``) behind :class:`kdcompress.backends.int8.Int8Backend`."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdcompress.artifacts import Int8Settings
from kdcompress.backends.int8 import Int8Backend
from kdcompress.backends.onnxruntime import quiet_library_output
from kdcompress.backends.openvino import read_openvino_model

# Operations keep their ONNX names through conversion: "/encoder/layer.3/attention/...".
_LAYER_IN_NAME = re.compile(r"\blayers?[._](\d+)\b")


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


class OpenVinoInt8(Int8Backend):
    suffix = ".xml"

    def exclusions(self, static: bool, layers: set[int]) -> tuple[list[str], set[str]]:
        model = read_openvino_model(self.setup.fp32_file)
        return ops_to_keep_fp32(model, layers=layers, embeddings=True)

    @property
    def overflow_fix(self) -> str:
        # NNCF's recommendation for non-VNNI CPUs: 7-bit weights in the first layer only.
        return "first_layer_only" if self.setup.reduce_range else "disable"

    def settings(self, static: bool, calibrated: int) -> Int8Settings:
        weight_range = "8-bit"  # weight-only int8 computes in fp32: nothing can saturate
        if static and self.setup.reduce_range:
            weight_range = "7-bit in the first layer (NNCF overflow fix), 8-bit elsewhere"
        return Int8Settings(
            mode="static" if static else "dynamic",
            method="nncf.quantize (transformer, mixed preset)"
            if static
            else "nncf.compress_weights",
            preset=self.setup.preset,
            quant_format="OpenVINO IR",
            weight_type="int8 symmetric" if static else "int8 asymmetric (INT8_ASYM)",
            activation_type="uint8, calibrated" if static else "fp32 (weight-only)",
            per_channel=True,
            weight_range=weight_range,
            graph_fusion="by the OpenVINO CPU plugin when the model is compiled",
            calibration_sentences=calibrated if static else 0,
            calibration_method="NNCF statistics (SmoothQuant, fast bias correction)"
            if static
            else "",
        )

    def quantize(
        self,
        static: bool,
        target: Path,
        calibration: Sequence[Mapping[str, np.ndarray]],
        exclude: Sequence[str],
    ) -> None:
        quantize_openvino(
            source=self.setup.fp32_file,
            target=target,
            static=static,
            calibration=calibration,
            exclude=exclude,
            overflow_fix=self.overflow_fix,
        )

    def move(self, source: Path, target: Path) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        source.with_suffix(".bin").replace(target.with_suffix(".bin"))
        source.replace(target)
        return target
