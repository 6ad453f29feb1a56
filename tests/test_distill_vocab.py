"""Vocabulary trimming keeps the used tokens' embeddings and the model's outputs on them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kdcompress.errors import UsageError
from kdcompress.kd.vocab import (
    plan_trim,
    read_tokenizer_json,
    trim_model_folder,
    trim_tokenizer_json,
)

CORPUS = ["hello world", "the small student model is fast", "bonjour monde", "привет мир"]
# Held-out text made only of words that occur in CORPUS (in a different order).
IN_VOCAB = ["the fast model is small", "world hello", "мир привет monde bonjour"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _embed(folder: Path, texts: list[str]) -> tuple[torch.Tensor, list[list[int]]]:
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    return hidden * batch["attention_mask"][..., None], batch["input_ids"].tolist()


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_xlmr"])
def test_trimmed_model_embeds_in_vocab_text_identically(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    source: Path = request.getfixturevalue(fixture)
    trim, stats = trim_model_folder(source, tmp_path / "trimmed", CORPUS, max_length=32)
    before, old_ids = _embed(source, IN_VOCAB)
    after, new_ids = _embed(tmp_path / "trimmed", IN_VOCAB)
    assert torch.allclose(before, after, atol=1e-6)
    table = trim.old_to_new()
    assert [[int(table[i]) for i in row] for row in old_ids] == new_ids
    assert stats.vocab_after == trim.new_size < stats.vocab_before
    assert stats.params_after < stats.params_before
    assert stats.weights_bytes_after < stats.weights_bytes_before


def test_kept_rows_are_the_original_embeddings(tiny_xlmr: Path, tmp_path: Path) -> None:
    from transformers import AutoModel

    trim, _ = trim_model_folder(tiny_xlmr, tmp_path / "t", CORPUS, max_length=32)
    old = AutoModel.from_pretrained(tiny_xlmr).get_input_embeddings().weight
    new = AutoModel.from_pretrained(tmp_path / "t").get_input_embeddings().weight
    assert torch.equal(new, old[torch.tensor(trim.keep_ids)])


def test_out_of_vocab_words_become_unknown(tiny_bert: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    trim_model_folder(tiny_bert, tmp_path / "t", CORPUS, max_length=32)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "t")
    ids = tokenizer("latency search")["input_ids"]  # in the original vocabulary, not in CORPUS
    assert ids[1:-1] == [tokenizer.unk_token_id] * 2


def test_plan_keeps_specials_unknown_and_the_lowest_unigram_score(tiny_xlmr: Path) -> None:
    data = read_tokenizer_json(tiny_xlmr)
    size = len(data["model"]["vocab"])
    trim = plan_trim(data, [10], vocab_size=size)
    scores = [score for _piece, score in data["model"]["vocab"]]
    lowest = scores.index(min(scores))
    specials = {t["id"] for t in data["added_tokens"]}
    assert set(trim.keep_ids) == {10, data["model"]["unk_id"], lowest} | specials
    trimmed = trim_tokenizer_json(data, trim)
    assert len(trimmed["model"]["vocab"]) == trim.new_size
    assert trimmed["model"]["unk_id"] == trim.keep_ids.index(data["model"]["unk_id"])


def test_trimmed_wordpiece_ids_are_consistent(tiny_bert: Path, tmp_path: Path) -> None:
    trim_model_folder(tiny_bert, tmp_path / "t", CORPUS, max_length=32)
    data = json.loads((tmp_path / "t" / "tokenizer.json").read_text())
    ids = sorted(data["model"]["vocab"].values())
    assert ids == list(range(len(ids)))
    lines = (tmp_path / "t" / "vocab.txt").read_text().splitlines()
    assert [data["model"]["vocab"][tok] for tok in lines] == ids
    cls_ids = data["post_processor"]["special_tokens"]["[CLS]"]["ids"]
    assert cls_ids == [data["model"]["vocab"]["[CLS]"]]


def test_bpe_tokenizers_are_refused(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE"}}))
    with pytest.raises(UsageError, match="WordPiece or Unigram"):
        read_tokenizer_json(tmp_path)
    with pytest.raises(UsageError, match="fast tokenizer"):
        read_tokenizer_json(tmp_path / "missing")
