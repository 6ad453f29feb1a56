"""Export and validate on tiny models: parity per format, clear errors, nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import build_tiny_of_type

from kdcompress.artifacts import ExportManifest, ValidationReport
from kdcompress.errors import ArtifactError, ModelNotFoundError, OutputExistsError, UsageError
from kdcompress.export import ExportFailedError, ExportFormat, export_model, parse_format
from kdcompress.validate import validate_export


@pytest.fixture(scope="module")
def onnx_export(tiny_xlmr: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("exports") / "xlmr-onnx"
    export_model(model=str(tiny_xlmr), fmt=ExportFormat.ONNX, output=out, threads=1)
    return out


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_export_keeps_parity(tiny_xlmr: Path, tmp_path: Path, fmt: ExportFormat) -> None:
    manifest = export_model(model=str(tiny_xlmr), fmt=fmt, output=tmp_path / "out", threads=1)
    assert manifest.parity.passed
    assert manifest.parity.max_abs_diff <= 1e-4
    assert (tmp_path / "out" / manifest.model_file).is_file()
    assert ExportManifest.load(tmp_path / "out" / "export.json") == manifest
    assert (tmp_path / "out" / "tokenizer.json").is_file()


def test_existing_output_is_refused_then_overwritten(onnx_export: Path, tiny_xlmr: Path) -> None:
    before = (onnx_export / "export.json").read_text()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        export_model(model=str(tiny_xlmr), fmt=ExportFormat.ONNX, output=onnx_export)
    assert (onnx_export / "export.json").read_text() == before


def test_lost_parity_leaves_no_output(tiny_bert: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportFailedError, match="lost parity"):
        export_model(
            model=str(tiny_bert), fmt=ExportFormat.ONNX, output=tmp_path / "o", min_cosine=2.0
        )
    assert list(tmp_path.iterdir()) == []


def test_missing_model_and_unknown_format_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no such folder"):
        export_model(model=str(tmp_path / "nope"), fmt=ExportFormat.ONNX, output=tmp_path / "o")
    with pytest.raises(ModelNotFoundError, match=r"no config\.json"):
        export_model(model=str(tmp_path), fmt=ExportFormat.ONNX, output=tmp_path / "o")
    with pytest.raises(UsageError, match="choose one of: onnx, openvino"):
        parse_format("tflite")


def test_validate_measures_both_models_side_by_side(onnx_export: Path) -> None:
    report = validate_export(
        export_dir=onnx_export,
        seq_lens=(8, 16),
        batch_sizes=(1,),
        threads=1,
        runs=3,
        rounds=1,
        memory=False,
    )
    assert report.parity.passed and report.fp32_parity is None
    shapes = {(row.model, row.seq_len) for row in report.latency}
    assert shapes == {(m, s) for m in ("student-fp32", "student-pytorch") for s in (8, 16)}
    assert report.reference == "student-pytorch" and report.speedup(1, 16) is not None
    assert [m.name for m in report.models] == ["student-fp32"]
    assert all(row.latency.p50_ms > 0 and row.latency.threads == 1 for row in report.latency)
    assert ValidationReport.load(onnx_export / "validation.json") == report


def test_validate_rejects_too_long_sequences(onnx_export: Path) -> None:
    with pytest.raises(UsageError, match="exceeds"):
        validate_export(export_dir=onnx_export, seq_lens=(4096,), threads=1)


def test_validate_rejects_corrupt_exports(onnx_export: Path, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not an export directory"):
        validate_export(export_dir=tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    manifest = json.loads((onnx_export / "export.json").read_text())
    (broken / "export.json").write_text(json.dumps(manifest))
    (broken / "onnx").mkdir()
    (broken / manifest["model_file"]).write_bytes(b"\x00garbage")
    with pytest.raises(ArtifactError, match="cannot load"):
        validate_export(export_dir=broken, seq_lens=(8,), threads=1)


def _tiny_of_type(tiny_bert: Path, folder: Path, model_type: str, **shape: int) -> Path:
    """A random-init encoder of ``model_type`` with the tiny BERT tokenizer beside it."""
    return build_tiny_of_type(tiny_bert, folder, model_type, **shape)


BERT_SHAPE = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
}
USER_ENCODERS = {
    "roberta": BERT_SHAPE,
    "mpnet": BERT_SHAPE,
    "distilbert": {"dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64},
}


@pytest.mark.parametrize("model_type", sorted(USER_ENCODERS))
def test_common_user_encoders_export_with_parity(
    tiny_bert: Path, tmp_path: Path, model_type: str
) -> None:
    model = _tiny_of_type(tiny_bert, tmp_path / model_type, model_type, **USER_ENCODERS[model_type])
    manifest = export_model(
        model=str(model), fmt=ExportFormat.ONNX, output=tmp_path / "out", threads=1
    )
    assert manifest.parity.passed and manifest.parity.max_abs_diff <= 1e-4


def test_unsupported_model_type_is_named_and_leaves_nothing(
    tiny_bert: Path, tmp_path: Path
) -> None:
    model = _tiny_of_type(tiny_bert, tmp_path / "mra", "mra", **BERT_SHAPE)
    with pytest.raises(ExportFailedError, match="cannot export model type 'mra'"):
        export_model(model=str(model), fmt=ExportFormat.ONNX, output=tmp_path / "out", threads=1)
    assert not (tmp_path / "out").exists()


def test_a_damaged_cached_teacher_export_is_exported_again(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kdcompress.export import teacher_export

    monkeypatch.setenv("KDCOMPRESS_CACHE", str(tmp_path / "cache"))
    cached = teacher_export(str(tiny_bert), "onnxruntime", 1)
    (cached / "export.json").write_text("garbage")
    assert teacher_export(str(tiny_bert), "onnxruntime", 1) == cached
    assert ExportManifest.load(cached / "export.json").parity.passed
