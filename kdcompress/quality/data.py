"""The data of every task, read from the offline asset cache (held-out Bible verses, IMDB,
zh-inews)."""

from __future__ import annotations

import csv
import functools
import pickle
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdcompress import assets
from kdcompress.console import status
from kdcompress.errors import AssetError, UsageError
from kdcompress.quality.settings import SOURCE_LANGUAGE, ZH_INEWS_CLASSES, EvalSettings


@dataclass(frozen=True)
class Labelled:
    """A classification task's texts and integer labels."""

    train_texts: list[str]
    train_labels: list[int]
    test_texts: list[str]
    test_labels: list[int]


def retrieval_pairs(settings: EvalSettings) -> dict[str, list[tuple[str, str]]]:
    """``language -> [(English verse, its translation)]`` from the held-out books only."""
    from kdcompress.corpus import parallel_verses

    db = assets.asset_dir("bible") / "bible.db"
    return {
        language: parallel_verses(
            "heldout", SOURCE_LANGUAGE, language, limit=settings.verses, seed=settings.seed, db=db
        )
        for language in settings.languages
    }


def _clean_review(text: str) -> str:
    return " ".join(text.replace("<br />", " ").replace("<br/>", " ").split())


def load_imdb(settings: EvalSettings) -> Labelled:
    """A seeded train/test split of the IMDB reviews, duplicates removed first."""
    path = assets.asset_dir("imdb") / assets.IMDB_CSV
    labels = {"negative": 0, "positive": 1}
    reviews: dict[str, int] = {}
    with path.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                text, label = _clean_review(row["review"]), labels[row["sentiment"]]
            except KeyError as exc:
                raise AssetError(f"{path}: unexpected row {str(row)[:80]}") from exc
            if text:
                reviews.setdefault(text, label)
    items = list(reviews.items())
    random.Random(f"{settings.seed}:imdb").shuffle(items)
    needed = settings.imdb_train + settings.imdb_test
    if needed > len(items):
        raise UsageError(f"IMDB has {len(items)} distinct reviews, fewer than {needed} requested")
    train, test = items[: settings.imdb_train], items[settings.imdb_train : needed]
    return Labelled(
        [text for text, _ in train],
        [label for _, label in train],
        [text for text, _ in test],
        [label for _, label in test],
    )


class _PlainUnpickler(pickle.Unpickler):
    """Reads pickles of plain containers only: any class or function reference is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_inews(path: Path) -> tuple[list[str], list[int]]:
    try:
        with path.open("rb") as handle:
            titles, contents, labels = _PlainUnpickler(handle).load()
        texts = [
            f"{title}\n{content}".strip() for title, content in zip(titles, contents, strict=True)
        ]
        classes = [int(label) for label in labels]
    except (OSError, pickle.UnpicklingError, ValueError, TypeError, EOFError) as exc:
        raise AssetError(f"{path}: not a zh-inews split ({exc})") from exc
    if len(classes) != len(texts) or not set(classes) <= set(range(ZH_INEWS_CLASSES)):
        raise AssetError(f"{path}: labels are not {ZH_INEWS_CLASSES} classes, one per text")
    return texts, classes


def _subset(
    texts: list[str], labels: list[int], size: int, seed: str
) -> tuple[list[str], list[int]]:
    if size >= len(texts):
        return texts, labels
    keep = sorted(random.Random(seed).sample(range(len(texts)), size))
    return [texts[i] for i in keep], [labels[i] for i in keep]


def load_zh_inews(settings: EvalSettings) -> Labelled:
    """Seeded subsets of zh-inews' official train and test splits (title + article)."""
    folder = assets.asset_dir("zh-inews")
    train = _subset(*_read_inews(folder / "train.pkl"), settings.zh_train, f"{settings.seed}:zh")
    test = _subset(*_read_inews(folder / "test.pkl"), settings.zh_test, f"{settings.seed}:zh-t")
    return Labelled(train[0], train[1], test[0], test[1])


@dataclass
class SuiteData:
    """Data of every task, loaded before the model so that a data problem fails fast."""

    pairs: dict[str, list[tuple[str, str]]]
    imdb: Labelled
    zh: Labelled

    def retrieval_texts(self) -> list[str]:
        texts = [text for pairs in self.pairs.values() for pair in pairs for text in pair]
        return list(dict.fromkeys(texts))


def load_plan(settings: EvalSettings) -> SuiteData:
    """The data of every task for ``settings``, read from the asset cache once per process."""
    return _load_plan(settings, assets.cache_dir())


@functools.lru_cache(maxsize=4)
def _load_plan(settings: EvalSettings, cache: Path) -> SuiteData:
    # Keyed by the cache folder too: the same settings over another cache are other data.
    # A validation scores the teacher, fp32 and int8, and accuracy control every int8 plan:
    # reading the same ~2 s of data each time would be wasted.
    with status("Loading the evaluation data"):
        return SuiteData(retrieval_pairs(settings), load_imdb(settings), load_zh_inews(settings))
