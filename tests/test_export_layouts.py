"""Exports load where users load embedding models: sentence-transformers' ``backend=`` and
Optimum's ORT / OpenVINO model classes pick the deployable int8 file by its conventional name,
and embed like the PyTorch model they came from (tiny offline models)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_quantize import fake_sentences, options

from kdcompress.artifacts import ExportManifest
from kdcompress.assets import EMBEDDING_INFO
from kdcompress.export import ExportFormat, export_model
from kdcompress.quantize import Quantization, cpu_preset
from kdcompress.validate import validate_export

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = ["hello world", "bonjour monde", "the small student model is fast", "привет мир"]
TARGET = cpu_preset().name.replace("-", "_")
INT8 = {
    ExportFormat.ONNX: f"onnx/model_qint8_{TARGET}.onnx",
    ExportFormat.OPENVINO: f"openvino/openvino_model_qint8_{TARGET}_quantized.xml",
}
BACKENDS = {ExportFormat.ONNX: "onnx", ExportFormat.OPENVINO: "openvino"}


@pytest.fixture(scope="module")
def source(tiny_xlmr: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sentence-transformers model folder with E5's prompts and mean pooling."""
    from kdcompress.st_format import write_sentence_transformers_files

    folder = tmp_path_factory.mktemp("layouts") / "source"
    shutil.copytree(tiny_xlmr, folder)
    info = {"pooling": "mean", "text_prefix": "query: "}
    (folder / EMBEDDING_INFO).write_text(json.dumps(info), encoding="utf-8")
    hidden = json.loads((folder / "config.json").read_text())["hidden_size"]
    write_sentence_transformers_files(folder, hidden=hidden, max_seq_length=64)
    (folder / "README.md").write_text("# Student card\n\nWhat it is.\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def exports(source: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[ExportFormat, Path]:
    quick = options(Quantization.DYNAMIC, speed_check=False)
    outputs = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("kdcompress.corpus.iter_sentences", fake_sentences)
        for fmt in ExportFormat:
            out = tmp_path_factory.mktemp("layouts") / str(fmt)
            export_model(model=str(source), fmt=fmt, output=out, threads=1, quantize=quick)
            outputs[fmt] = out
    return outputs


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return float(cos.min())


def _pytorch(source: Path) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return np.asarray(SentenceTransformer(str(source), device="cpu").encode(TEXTS))


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_export_json_names_the_conventional_files(
    exports: dict[ExportFormat, Path], fmt: ExportFormat
) -> None:
    out = exports[fmt]
    manifest = ExportManifest.load(out / "export.json")
    assert manifest.model_file == INT8[fmt] and (out / manifest.model_file).is_file()
    assert manifest.fp32_file is not None and manifest.fp32_file.startswith(f"{BACKENDS[fmt]}/")
    for name in ("modules.json", "sentence_bert_config.json", "1_Pooling/config.json"):
        assert (out / name).is_file(), name
    st_config = json.loads((out / "config_sentence_transformers.json").read_text())
    assert (
        st_config["prompts"]["query"] == "query: " and st_config["default_prompt_name"] == "query"
    )
    assert json.loads((out / "sentence_bert_config.json").read_text())["max_seq_length"] == 64


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_the_model_card_is_the_sources_with_this_exports_files(
    exports: dict[ExportFormat, Path], fmt: ExportFormat
) -> None:
    card = (exports[fmt] / "README.md").read_text(encoding="utf-8")
    assert card.startswith("# Student card\n\nWhat it is.\n\n## This export\n")
    assert f'backend="{BACKENDS[fmt]}"' in card
    assert f'model_kwargs={{"file_name": "{INT8[fmt]}"}}' in card
    assert "dynamic int8 for the" in card and "`validation.md`" in card


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_sentence_transformers_loads_the_int8_and_the_fp32_file(
    exports: dict[ExportFormat, Path], source: Path, fmt: ExportFormat
) -> None:
    from sentence_transformers import SentenceTransformer

    out, backend = exports[fmt], BACKENDS[fmt]
    reference = _pytorch(source)
    int8 = SentenceTransformer(
        str(out), backend=backend, device="cpu", model_kwargs={"file_name": INT8[fmt]}
    )
    assert _min_cosine(int8.encode(TEXTS), reference) >= 0.99
    fp32 = SentenceTransformer(str(out), backend=backend, device="cpu")  # the default file
    assert _min_cosine(fp32.encode(TEXTS), reference) >= 0.9999


def _mean_pooled(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask[..., None].astype(np.float64)
    return (hidden * weights).sum(1) / weights.sum(1)


@pytest.mark.parametrize("fmt", list(ExportFormat))
def test_optimum_loads_the_int8_file(
    exports: dict[ExportFormat, Path], source: Path, fmt: ExportFormat
) -> None:
    from transformers import AutoTokenizer

    out = exports[fmt]
    subfolder, file_name = INT8[fmt].split("/")
    if fmt is ExportFormat.ONNX:
        from optimum.onnxruntime import ORTModelForFeatureExtraction as Model
    else:
        from optimum.intel import OVModelForFeatureExtraction as Model
    model = Model.from_pretrained(str(out), subfolder=subfolder, file_name=file_name)
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    texts = [f"query: {t}" for t in TEXTS]  # what sentence-transformers prepends
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    hidden = model(**batch).last_hidden_state.detach().numpy()
    embeddings = _mean_pooled(hidden, batch["attention_mask"].numpy())
    assert _min_cosine(embeddings, _pytorch(source)) >= 0.99


def test_an_export_in_the_earlier_layout_still_validates(
    exports: dict[ExportFormat, Path], tmp_path: Path
) -> None:
    """Exports made before the subfolders: model.onnx and model_int8.onnx at the top."""
    old = tmp_path / "old"
    shutil.copytree(exports[ExportFormat.ONNX], old)
    manifest = json.loads((old / "export.json").read_text())
    (old / manifest["model_file"]).rename(old / "model_int8.onnx")
    (old / manifest["fp32_file"]).rename(old / "model.onnx")
    manifest |= {"model_file": "model_int8.onnx", "fp32_file": "model.onnx"}
    (old / "export.json").write_text(json.dumps(manifest))
    report = validate_export(
        export_dir=old, seq_lens=(8,), batch_sizes=(1,), threads=1, runs=3, rounds=1, memory=False
    )
    assert report.parity.passed and {r.model for r in report.latency} >= {"student-int8"}


def test_a_folder_and_the_earlier_path_find_the_fp32_file(
    exports: dict[ExportFormat, Path],
) -> None:
    from kdcompress.backends import get_backend

    onnx, openvino = exports[ExportFormat.ONNX], exports[ExportFormat.OPENVINO]
    expected = onnx / "onnx" / "model.onnx"
    assert get_backend("onnxruntime").load(model_path=onnx, threads=1).path == expected
    # EXPORT/model.onnx, as callers joined it when exports kept it at the top
    assert get_backend("onnxruntime").load(model_path=onnx / "model.onnx", threads=1).path == (
        expected
    )
    loaded = get_backend("openvino").load(model_path=openvino, threads=1)
    assert loaded.path == openvino / "openvino" / "openvino_model.xml"
