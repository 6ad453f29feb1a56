"""General-domain sentences and their mixing into the cross-lingual Bible pairs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from kdcompress import general
from kdcompress.artifacts import StudentArch
from kdcompress.distill import DistillJob, stage
from kdcompress.errors import UsageError
from kdcompress.general import split_sentences

ARCH = StudentArch(layers=1, hidden=32, heads=2, ffn=64)


def test_sentences_are_split_and_tokenised_punctuation_glued_back() -> None:
    speech = (
        "Frau Präsidentin ! Meine Damen und Herren , als Mitglied der Kommission weiß ich , "
        "wie viele Menschen ( auch hier ) die Arbeit verfolgt haben . Danke ."
    )
    assert split_sentences(speech) == [
        "Meine Damen und Herren, als Mitglied der Kommission weiß ich, wie viele Menschen "
        "(auch hier) die Arbeit verfolgt haben."
    ]  # "Frau Präsidentin!" and "Danke." are too short to be training sentences


def test_news_sentences_split_at_capitals_not_inside_numbers() -> None:
    text = (
        'The vote was 51 to 50 after 3.5 hours of debate in the Senate. "We won," said the '
        "senator to the reporters outside. Sales fell by 2.1% in the quarter to March."
    )
    assert len(split_sentences(text)) == 3


def test_general_share_is_of_the_whole_without_translations(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = [f"general sentence number {i} for the mix" for i in range(100)]
    monkeypatch.setattr(
        general, "general_sentences", lambda languages, *, seed, limit: pool[:limit]
    )
    texts = [f"verse {i}" for i in range(30)]
    aligned = [(f"vers {i}", f"verset {i}") for i in range(30)]

    def mix(seed: int) -> tuple[list[str], list[tuple[str, ...]]]:
        job = DistillJob(arch=ARCH, output=Path("unused"), steps=1, general=0.25, seed=seed)
        extra = stage._beyond_the_bible(job, len(texts), ("de", "fr"), Path("unused"))
        return stage._mixed(texts, aligned, extra, seed)

    mixed, rows = mix(0)
    assert len(mixed) == 40 and sorted(mixed) == sorted(texts + pool[:10])
    assert all(row == ("", "") for t, row in zip(mixed, rows, strict=True) if t in pool)
    assert dict(zip(mixed, rows, strict=True))["verse 7"] == ("vers 7", "verset 7")
    assert mix(0)[0] == mixed
    assert mix(1)[0] != mixed


def test_general_and_words_shares_are_each_of_the_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        general, "general_sentences", lambda languages, *, seed, limit: ["news"] * limit
    )
    monkeypatch.setattr(general, "vocabulary_words", lambda _dir, *, seed, limit: ["w"] * limit)
    job = DistillJob(arch=ARCH, output=Path("unused"), steps=1, general=0.2, words=0.3)
    extra = stage._beyond_the_bible(job, 50, ("de",), Path("unused"))
    assert extra.count("news") == 20 and extra.count("w") == 30  # of 100 items in all


def test_domain_text_fills_the_general_share_from_the_users_file(tmp_path: Path) -> None:
    text = tmp_path / "reviews.txt"
    reviews = [
        "A slow and boring film from start to end. "
        "The plot made no sense at all and the acting was wooden.",
        "great",  # too short to split: taken whole
        "One of the best movies of the year, with a cast that carries every single scene.",
    ]
    text.write_text("\n".join(reviews) + "\n", encoding="utf-8")
    job = DistillJob(arch=ARCH, output=Path("unused"), steps=1, general=0.5, domain_file=text)
    extra = stage._beyond_the_bible(job, 4, ("de",), Path("unused"))
    assert sorted(extra) == sorted(
        [
            "A slow and boring film from start to end.",
            "The plot made no sense at all and the acting was wooden.",
            "great",
            "One of the best movies of the year, with a cast that carries every single scene.",
        ]
    )  # 4 verses and a share of 0.5: up to 4 domain sentences
    assert stage._domain_vocabulary(job) == []  # nothing to keep: the vocabulary is whole
    trimmed = dataclasses.replace(job, trim_vocab=True)
    assert stage._domain_vocabulary(trimmed) == reviews  # every line, sampled or not
    with pytest.raises(UsageError, match="--domain-text needs a --general share"):
        DistillJob(arch=ARCH, output=Path("unused"), steps=1, domain_file=text)


def test_general_and_words_must_leave_the_bible_a_tenth() -> None:
    with pytest.raises(UsageError, match=r"keep their sum under 0\.9"):
        DistillJob(arch=ARCH, output=Path("unused"), steps=1, general=0.5, words=0.4)


@pytest.mark.parametrize(
    ("family", "expected"),
    [
        ("xlm-roberta", {"movie", "boring"}),  # SentencePiece: "\u2581movie"
        ("bert", {"movie", "boring"}),  # WordPiece: "movie", not "##ing"
    ],
)
def test_vocabulary_words_are_whole_words_of_letters(
    tmp_path: Path, family: str, expected: set[str]
) -> None:
    folder = _tokenizer_folder(tmp_path, family)
    words = general.vocabulary_words(folder, seed=0, limit=100)
    assert set(words) == expected  # no pieces, digits, punctuation, specials or short affixes
    assert general.vocabulary_words(folder, seed=0, limit=1) == words[:1]


def _tokenizer_folder(tmp_path: Path, family: str) -> Path:
    """A tiny tokenizer of the family's scheme with words, pieces, digits and specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if family == "bert":
        unk, vocab = "[UNK]", ["[PAD]", "[UNK]", "movie", "boring", "##ing", "42", ",", "ab"]
        tokenizer = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token=unk))
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        tokenizer.decoder = decoders.WordPiece()
    else:
        unk = "<unk>"
        pieces = [
            "<pad>",
            unk,
            "\u2581movie",
            "\u2581boring",
            "ing",
            "\u258142",
            "\u2581,",
            "\u2581ab",
        ]
        tokenizer = Tokenizer(models.Unigram([(p, -1.0) for p in pieces], unk_id=1))
        tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
        tokenizer.decoder = decoders.Metaspace()
    folder = tmp_path / family
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token=unk).save_pretrained(folder)
    return folder
