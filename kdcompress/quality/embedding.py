"""Sentence embeddings from a loaded backend model: tokenised once, batched by length, pooled."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from kdcompress.errors import UsageError

if TYPE_CHECKING:
    from kdcompress.backends import LoadedModel


class Embedder:
    """Sentence embeddings from a loaded backend model, batched by length.

    Texts are tokenised once, sorted by token count and cut into batches, so each batch pads
    to the length of its longest member only; the embeddings come back in the input order.
    """

    def __init__(
        self,
        model: LoadedModel,
        tokenizer: Any,
        *,
        text_prefix: str,
        pooling: str,
        max_positions: int,
        batch_size: int,
    ) -> None:
        if pooling not in ("mean", "cls"):
            raise UsageError(f"pooling '{pooling}' is not supported (mean or cls)")
        self.model = model
        self.tokenizer = tokenizer
        self.text_prefix = text_prefix
        self.pooling = pooling
        self.max_positions = max_positions
        self.batch_size = batch_size

    def max_length(self, requested: int) -> int:
        return min(requested, self.max_positions)

    def batches(self, count: int) -> int:
        return math.ceil(count / self.batch_size)

    def embed(
        self,
        texts: Sequence[str],
        *,
        max_length: int,
        on_batch: Callable[[], None] | None = None,
    ) -> np.ndarray:
        """float32 embeddings, one row per text, in the order of ``texts``."""
        if not texts:
            raise ValueError("nothing to embed")
        encoded = self.tokenizer(
            [self.text_prefix + text for text in texts],
            truncation=True,
            max_length=self.max_length(max_length),
        )
        ids: list[list[int]] = encoded["input_ids"]
        order = sorted(range(len(texts)), key=lambda i: (len(ids[i]), i))
        rows: list[np.ndarray] = [np.empty(0, np.float32)] * len(texts)
        for start in range(0, len(order), self.batch_size):
            chosen = order[start : start + self.batch_size]
            batch = self._pad(encoded, chosen)
            hidden = self.model.run(batch)
            pooled = self._pool(hidden, batch["attention_mask"])
            for row, index in enumerate(chosen):
                rows[index] = pooled[row]
            if on_batch is not None:
                on_batch()
        return np.stack(rows).astype(np.float32)

    def _pad(self, encoded: Any, chosen: Sequence[int]) -> dict[str, np.ndarray]:
        width = max(len(encoded["input_ids"][i]) for i in chosen)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        batch = {}
        for name in ("input_ids", "attention_mask", "token_type_ids"):
            if name not in encoded:
                continue
            fill = pad_id if name == "input_ids" else 0
            array = np.full((len(chosen), width), fill, dtype=np.int64)
            for row, index in enumerate(chosen):
                values = encoded[name][index]
                array[row, : len(values)] = values
            batch[name] = array
        return batch

    def _pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        from kdcompress.encoding import mean_pool

        return hidden[:, 0] if self.pooling == "cls" else mean_pool(hidden, mask)


def embed_unique(
    embedder: Embedder,
    texts: Sequence[str],
    *,
    max_length: int,
    on_batch: Callable[[], None] | None = None,
) -> dict[str, np.ndarray]:
    """``text -> embedding`` for the distinct texts of ``texts`` (each embedded once)."""
    unique = list(dict.fromkeys(texts))
    vectors = embedder.embed(unique, max_length=max_length, on_batch=on_batch)
    return dict(zip(unique, vectors, strict=True))
