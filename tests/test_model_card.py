"""The model card of a student folder: a pure function of distill.json and the pooling recipe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kdcompress.artifacts import DistillResult, LossPoint, StudentArch, VocabTrimStats
from kdcompress.assets import EMBEDDING_INFO, EmbeddingInfo
from kdcompress.model_card import model_card, write_model_card

E5 = EmbeddingInfo(pooling="mean", text_prefix="query: ", add_pooling_layer=False)


def _result(**overrides: Any) -> DistillResult:
    arch = StudentArch(layers=1, hidden=384, heads=12, ffn=768)
    fields: dict[str, Any] = {
        "arch": arch,
        "arch_id": arch.arch_id,
        "teacher": "me5-small",
        "init": "teacher",
        "init_details": ("from teacher layers 1 and its embeddings", "all 384 hidden features"),
        "loss": "hidden",
        "layer_map": ((0, 0), (1, 12)),
        "steps": 1000,
        "batch_size": 32,
        "lr": 1e-4,
        "seed": 0,
        "max_length": 64,
        "languages": ("en", "de", "zh"),
        "sentences": 15000,
        "corpus_hash": "0123456789abcdef" * 4,
        "curve": (LossPoint(step=1000, loss=0.5, hidden=0.3, pooled=0.2),),
        "final_hidden_loss": 0.3,
        "final_pooled_loss": 0.2,
        "final_relation_loss": None,
        "wall_s": 600.0,
        "teacher_cache_s": 0.0,
        "sentences_per_s": 53.0,
        "world_size": 1,
        "parameters": 17_300_000,
        "vocab": VocabTrimStats(250_037, 42_457, 113_000_000, 17_300_000, 0, 0, 0, 0),
    }
    return DistillResult(**{**fields, **overrides})


def test_card_says_what_it_is_where_it_comes_from_and_how_to_use_it() -> None:
    card = model_card(_result(), embedding=E5, max_seq_length=64, model_path="runs/x/student")
    assert card.startswith("---\nlibrary_name: sentence-transformers\n")
    assert "license: mit\n" in card  # the built-in teacher's, from its asset spec
    for fact in (
        "`me5-small`",
        "multilingual-e5-small",
        "| layers | 1 |",
        "| FFN size | 768 |",
        "| parameters | 17,300,000 |",
        "42,457 tokens",
        "from teacher layers 1 and its embeddings",
        "| steps | 1,000 |",
        "| batch size | 32 |",
        "15,000 Bible verses in en, de, zh",
        "`hidden`: multi-layer hidden states",
        "0 <- 0, 1 <- 12",
        "| max sequence length | 64 tokens |",
        "validation.md",
        'SentenceTransformer("runs/x/student", device="cpu")',
        'prompt_name="passage"',
        "kdcompress eval --model runs/x/student --quick --reference teacher-eval.json",
        "kdcompress export --model runs/x/student --output runs/x/student-onnx",
    ):
        assert fact in card, fact


def test_unknown_teacher_license_user_corpus_and_several_processes() -> None:
    result = _result(
        teacher="./my-encoder",
        languages=(),
        world_size=2,
        final_relation_loss=0.05,
        loss="hidden+attn-relation",
        vocab=None,
    )
    card = model_card(result, embedding=EmbeddingInfo(pooling="cls"), max_seq_length=128)
    assert "license:" not in card.split("---")[1]
    assert "not recorded: check the teacher's own license" in card
    assert "sentences of the user's corpus" in card
    assert "32 per process x 2 processes" in card
    assert "attention relation 0.0500" in card
    assert "| pooling | cls |" in card
    assert "| vocabulary | the teacher's |" in card
    assert "prompt_name" not in card  # no prefix: plain encode
    assert "Inputs are cut at 128 tokens (the model's positions)" in card


def test_write_model_card_reads_the_folder(tmp_path: Path) -> None:
    info = {"pooling": "mean", "text_prefix": "query: ", "license": "Apache-2.0"}
    (tmp_path / EMBEDDING_INFO).write_text(json.dumps(info), encoding="utf-8")
    (tmp_path / "sentence_bert_config.json").write_text('{"max_seq_length": 64}')
    path = write_model_card(tmp_path, _result(teacher="./t"), model_path=Path("out/student"))
    card = path.read_text(encoding="utf-8")
    assert path.name == "README.md"
    assert "license: apache-2.0" in card
    assert "(the length it was distilled at)" in card
    assert 'SentenceTransformer("out/student"' in card
