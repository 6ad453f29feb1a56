"""Cross-lingual targets: translations that learn the teacher's embedding of their source.

The recipe of Reimers & Gurevych (2020, "Making Monolingual Sentence Embeddings Multilingual
using Knowledge Distillation"): for a source sentence ``s`` and a translation ``t`` of it, the
student's embeddings of both ``s`` and ``t`` regress the teacher's embedding of ``s``. The
teacher runs once per source sentence (its pooled output is cached); the translations are
tokenised when a batch needs them, so a corpus of every verse in every language costs no more
teacher time than its source side.

Which translation a source sentence is paired with at step ``k`` is a function of
``(seed, k, sentence)``, so a resumed or distributed run sees exactly the pairs of an
uninterrupted single-process one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from kdcompress.kd.teacher_cache import corpus_hash


@dataclass
class ParallelBatch:
    """Padded translations of some of a batch's source sentences."""

    input_ids: Tensor
    attention_mask: Tensor
    rows: Tensor  # position in the source batch of each translation (its teacher target)

    def to(self, device: torch.device) -> ParallelBatch:
        return ParallelBatch(
            self.input_ids.to(device), self.attention_mask.to(device), self.rows.to(device)
        )


class Translations:
    """The translations of every source sentence of a teacher cache, in the cache's order."""

    def __init__(
        self,
        texts: Sequence[Sequence[str]],
        languages: Sequence[str],
        *,
        teacher_dir: Path,
        max_length: int,
        prefix: str,
    ) -> None:
        from kdcompress.encoding import load_tokenizer

        if any(len(row) != len(languages) for row in texts):
            raise ValueError("every source sentence needs one (possibly empty) text per language")
        self.texts, self.languages = texts, tuple(languages)
        self.max_length, self.prefix = max_length, prefix
        self.tokenizer: Any = load_tokenizer(teacher_dir)
        self.available = [np.flatnonzero([bool(t) for t in row]) for row in texts]
        self.hash = corpus_hash([",".join(self.languages), *(t for row in texts for t in row)])

    def __len__(self) -> int:
        return len(self.texts)

    def choose(
        self, sources: npt.NDArray[np.int64], *, seed: int, step: int
    ) -> list[tuple[int, int]]:
        """``(position in sources, language index)`` of the translation each source sentence
        is paired with at ``step``; sources with no translation are left out."""
        rng = np.random.default_rng([seed, step, 0x7A11])
        draws = rng.random(len(sources))
        chosen = []
        for position, (source, draw) in enumerate(zip(sources, draws, strict=True)):
            options = self.available[int(source)]
            if len(options):
                chosen.append((position, int(options[int(draw * len(options))])))
        return chosen

    def share(
        self, whole: npt.NDArray[np.int64], *, seed: int, step: int, rank: int, world: int
    ) -> tuple[npt.NDArray[np.int64], list[tuple[int, int]]]:
        """Process ``rank``'s part ``whole[rank::world]`` of a global batch and its pairs, chosen
        for the whole batch so that a ``torchrun`` job pairs every sentence as one process
        would."""
        chosen = self.choose(whole, seed=seed, step=step)
        mine = [(p // world, k) for p, k in chosen if p % world == rank]
        return whole[rank::world], mine

    def batch(
        self,
        sources: npt.NDArray[np.int64],
        chosen: Sequence[tuple[int, int]],
        pad_token_id: int,
    ) -> ParallelBatch | None:
        """The chosen translations of ``sources``, tokenised like the teacher's inputs."""
        if not chosen:
            return None
        texts = [self.prefix + self.texts[int(sources[p])][k] for p, k in chosen]
        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]
        width = max(len(ids) for ids in encoded)
        ids = torch.full((len(encoded), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, tokens in enumerate(encoded):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
        rows = torch.tensor([p for p, _ in chosen], dtype=torch.long)
        return ParallelBatch(ids, mask, rows)

    def token_ids(self) -> npt.NDArray[np.int64]:
        """Every token id of every translation (for vocabulary trimming): tokenises them all."""
        flat = [self.prefix + t for row in self.texts for t in row if t]
        if not flat:
            return np.zeros(0, dtype=np.int64)
        encoded = self.tokenizer(flat, truncation=True, max_length=self.max_length)["input_ids"]
        return np.fromiter((t for ids in encoded for t in ids), dtype=np.int64)
