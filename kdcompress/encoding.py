"""Turning text into model inputs and hidden states into sentence embeddings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from kdcompress.errors import ModelNotFoundError, first_line

# Parity and smoke-check sentences: several scripts, so a tokenizer or an export that breaks
# non-Latin text is caught, and lengths that differ, so padding is exercised.
SAMPLE_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "In the beginning God created the heaven and the earth.",
    "Au commencement, Dieu créa les cieux et la terre.",
    "Im Anfang schuf Gott Himmel und Erde.",
    "En el principio creó Dios los cielos y la tierra.",
    "В начале сотворил Бог небо и землю.",
    "起初，神创造天地。",
    "في البدء خلق الله السموات والأرض",
    "Hello world",
    "Small models deploy well on CPUs when they are distilled, exported and quantized carefully.",
)


_ROBERTA_LIKE = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert"})


def load_tokenizer(model_dir: Path) -> Any:
    """The folder's tokenizer; damaged or missing tokenizer files are one line naming it."""
    from transformers import AutoTokenizer

    try:
        # fix_mistral_regex=False silences a false "incorrect regex pattern" warning that
        # transformers 4.57 prints for any folder saved by it; tokenization is unaffected.
        return AutoTokenizer.from_pretrained(model_dir, fix_mistral_regex=False)
    except Exception as exc:  # a damaged tokenizer.json, a missing vocabulary: many errors
        files = ", ".join(TOKENIZER_FILES)
        reason = first_line(exc) if any(_tokenizer_files(model_dir)) else f"none of {files}"
        raise ModelNotFoundError(
            f"{model_dir}: the tokenizer does not load ({reason}): save or copy the model "
            "folder again"
        ) from None


# What a tokenizer is saved as: a fast tokenizer's file, or a slow one's vocabulary.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "*.model")


def _tokenizer_files(folder: Path) -> list[Path]:
    return [path for pattern in TOKENIZER_FILES for path in Path(folder).glob(pattern)]


def tokenize(tokenizer: Any, texts: list[str], *, max_length: int = 128) -> dict[str, np.ndarray]:
    """Padded, truncated int64 numpy inputs for a list of texts."""
    encoded = tokenizer(
        texts, padding=True, truncation=True, max_length=max_length, return_tensors="np"
    )
    return {name: np.asarray(value, dtype=np.int64) for name, value in encoded.items()}


def synthetic_batch(
    *, vocab_size: int, batch: int, seq_len: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """A full-length batch of random token ids: latency does not depend on the token values."""
    rng = np.random.default_rng(seed)
    low = min(5, vocab_size - 1)  # skip the special tokens at the start of most vocabularies
    return {
        "input_ids": rng.integers(low, vocab_size, size=(batch, seq_len), dtype=np.int64),
        "attention_mask": np.ones((batch, seq_len), dtype=np.int64),
        "token_type_ids": np.zeros((batch, seq_len), dtype=np.int64),
    }


def mean_pool(hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Average of the hidden states over non-padding tokens, one vector per sentence."""
    mask = attention_mask[..., None].astype(hidden.dtype)
    return (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of corresponding rows."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.clip(norms, 1e-12, None)


def longest_input(config: dict[str, Any]) -> int:
    """The most tokens a model's position table takes (from its ``config.json``): RoBERTa-style
    models number positions from after the padding id, so they take ``pad_token_id + 1`` fewer.
    The one rule for every stage and command."""
    positions = int(config.get("max_position_embeddings", 512))
    if config.get("model_type") in _ROBERTA_LIKE:
        positions -= int(config.get("pad_token_id", 1)) + 1
    return positions


def read_longest_input(model_dir: Path) -> int:
    """:func:`longest_input` of a model folder."""
    return longest_input(json.loads((model_dir / "config.json").read_text(encoding="utf-8")))


def max_positions(config_dir: Path, tokenizer: Any) -> int:
    """Longest input the model takes: its position table, and its tokenizer's limit."""
    limit = int(min(getattr(tokenizer, "model_max_length", 512) or 512, 1_000_000))
    if (config_dir / "config.json").is_file():
        limit = min(limit, read_longest_input(config_dir))
    return limit
