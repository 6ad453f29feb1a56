"""Student folders load in sentence-transformers and embed exactly as kdcompress does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kdcompress.artifacts import StudentArch
from kdcompress.assets import EMBEDDING_INFO, EmbeddingInfo
from kdcompress.st_format import prompts_for, sentence_transformers_files

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = [
    "hello world",
    "the small student model is fast",
    "bonjour monde",
    "the teacher was large and the search was fast on a small text",
    "привет мир",
]
ARCH = StudentArch(layers=1, hidden=16, heads=2, ffn=32)


def _teacher(source: Path, folder: Path, *, pooling: str, prefix: str) -> Path:
    shutil.copytree(source, folder)
    info = {"pooling": pooling, "text_prefix": prefix, "license": "MIT"}
    (folder / EMBEDDING_INFO).write_text(json.dumps(info), encoding="utf-8")
    return folder


def _student(teacher_dir: Path, folder: Path, max_seq_length: int | None) -> Path:
    from transformers import AutoModel

    from kdcompress.kd.student import InitMode, build_student, write_student_folder

    teacher = AutoModel.from_pretrained(teacher_dir).eval()
    student, _ = build_student(teacher, ARCH, init=InitMode.TEACHER, seed=0)
    write_student_folder(student, teacher_dir, folder, max_seq_length=max_seq_length)
    return folder


def _kdcompress_embed(folder: Path, texts: list[str]) -> np.ndarray:
    from kdcompress.assets import read_embedding_info
    from kdcompress.backends.torch import TorchModel
    from kdcompress.encoding import load_tokenizer, max_positions
    from kdcompress.quality import Embedder

    info = read_embedding_info(folder)
    tokenizer = load_tokenizer(folder)
    embedder = Embedder(
        TorchModel(path=folder, threads=1),
        tokenizer,
        text_prefix=info.text_prefix,
        pooling=info.pooling,
        max_positions=max_positions(folder, tokenizer),
        batch_size=2,
    )
    return embedder.embed(texts, max_length=32)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from kdcompress.encoding import row_cosine

    return row_cosine(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))


@pytest.mark.parametrize(
    ("fixture", "pooling", "prefix"),
    [("tiny_xlmr", "mean", "query: "), ("tiny_bert", "cls", "")],
)
def test_sentence_transformers_embeds_like_kdcompress(
    fixture: str, pooling: str, prefix: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from sentence_transformers import SentenceTransformer

    source: Path = request.getfixturevalue(fixture)
    teacher = _teacher(source, tmp_path / "teacher", pooling=pooling, prefix=prefix)
    folder = _student(teacher, tmp_path / "student", max_seq_length=32)
    model = SentenceTransformer(str(folder), device="cpu")
    assert model.max_seq_length == 32
    ours = _kdcompress_embed(folder, TEXTS)
    theirs = model.encode(TEXTS, batch_size=2, convert_to_numpy=True)
    assert theirs.shape == ours.shape == (len(TEXTS), ARCH.hidden)
    assert _cosines(theirs, ours).min() >= 0.9999
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-5)  # not normalised either


def test_the_teachers_prefix_is_the_default_prompt(tiny_xlmr: Path, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    teacher = _teacher(tiny_xlmr, tmp_path / "teacher", pooling="mean", prefix="query: ")
    folder = _student(teacher, tmp_path / "student", max_seq_length=32)
    model = SentenceTransformer(str(folder), device="cpu")
    assert model.default_prompt_name == "query"
    plain = model.encode(TEXTS, convert_to_numpy=True)
    prefixed = model.encode(TEXTS, prompt="query: ", convert_to_numpy=True)
    bare = model.encode(TEXTS, prompt="", convert_to_numpy=True)
    np.testing.assert_allclose(plain, prefixed, rtol=1e-5, atol=1e-6)
    assert not np.allclose(plain, bare, atol=1e-3)
    documents = model.encode_document(TEXTS, convert_to_numpy=True)
    passages = model.encode(TEXTS, prompt="passage: ", convert_to_numpy=True)
    np.testing.assert_allclose(documents, passages, rtol=1e-5, atol=1e-6)


def test_max_seq_length_defaults_to_what_the_model_takes(tiny_xlmr: Path, tmp_path: Path) -> None:
    teacher = _teacher(tiny_xlmr, tmp_path / "teacher", pooling="mean", prefix="")
    folder = _student(teacher, tmp_path / "student", max_seq_length=None)
    config = json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))
    assert config["max_seq_length"] == 64  # tokenizer limit 64 < 80 positions - 2 (RoBERTa)


def test_files_for_mean_pooling_with_e5_prompts() -> None:
    info = EmbeddingInfo(pooling="mean", text_prefix="query: ", add_pooling_layer=False)
    files = sentence_transformers_files(hidden=384, embedding=info, max_seq_length=64)
    assert [m["type"] for m in files["modules.json"]] == [
        "sentence_transformers.models.Transformer",
        "sentence_transformers.models.Pooling",
    ]
    assert files["modules.json"][1]["path"] == "1_Pooling"
    assert files["sentence_bert_config.json"] == {
        "max_seq_length": 64,
        "do_lower_case": False,
        "model_args": {"add_pooling_layer": False},
    }
    pooling = files["1_Pooling/config.json"]
    assert (pooling["word_embedding_dimension"], pooling["pooling_mode"]) == (384, "mean")
    config = files["config_sentence_transformers.json"]
    assert config["prompts"]["query"] == "query: "
    assert config["prompts"]["passage"] == "passage: "
    assert config["default_prompt_name"] == "query"


def test_no_prefix_means_no_prompt_and_unknown_pooling_is_refused() -> None:
    assert prompts_for("") == {}
    assert prompts_for("search: ") == {"query": "search: "}
    files = sentence_transformers_files(
        hidden=8, embedding=EmbeddingInfo(pooling="cls"), max_seq_length=16
    )
    assert files["config_sentence_transformers.json"]["default_prompt_name"] is None
    assert "model_args" not in files["sentence_bert_config.json"]
    with pytest.raises(ValueError, match="max"):
        sentence_transformers_files(
            hidden=8, embedding=EmbeddingInfo(pooling="max"), max_seq_length=16
        )


def test_a_torch_export_stays_a_sentence_transformers_model(
    tiny_bert: Path, tmp_path: Path
) -> None:
    from sentence_transformers import SentenceTransformer

    from kdcompress.backends.torch import TorchBackend

    teacher = _teacher(tiny_bert, tmp_path / "teacher", pooling="mean", prefix="query: ")
    folder = _student(teacher, tmp_path / "student", max_seq_length=32)
    export = TorchBackend().export(model_dir=folder, output_dir=tmp_path / "export")
    assert (export / "1_Pooling" / "config.json").is_file()
    model = SentenceTransformer(str(export), device="cpu")
    assert _cosines(model.encode(TEXTS), _kdcompress_embed(folder, TEXTS)).min() >= 0.9999
