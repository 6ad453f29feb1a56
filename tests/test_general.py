"""General-domain sentences and their mixing into the cross-lingual Bible pairs."""

from __future__ import annotations

import pytest

from kdcompress import general
from kdcompress.distill import stage
from kdcompress.general import split_sentences


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
    mixed, rows = stage._with_general(texts, aligned, 0.25, ("de", "fr"), seed=0)
    assert len(mixed) == 40 and sorted(mixed) == sorted(texts + pool[:10])
    assert all(row == ("", "") for t, row in zip(mixed, rows, strict=True) if t in pool)
    assert dict(zip(mixed, rows, strict=True))["verse 7"] == ("vers 7", "verset 7")
    assert stage._with_general(texts, aligned, 0.25, ("de", "fr"), seed=0)[0] == mixed
    assert stage._with_general(texts, aligned, 0.25, ("de", "fr"), seed=1)[0] != mixed
