"""Proxy distillation: a short run of the distillation recipe on the proxy split, then a score
of what the final student is for.

Each candidate is distilled with the distill stage's own objective (sentence embedding,
cross-lingual targets) on English proxy verses and their translations; the teacher's targets
are computed once and shared by every candidate of the search. The candidate's quality is then
its cross-lingual retrieval top-1 (English -> each proxy language) on proxy verses it never saw,
embedded with its own encoder: the property that separates students after a full distillation.
(The paper's normalised hidden-state loss after a short run mostly measured how close a
student's initialisation was to the teacher, and ranked shallow students first.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdcompress.artifacts import StudentArch

SOURCE_LANGUAGE = "en"


@dataclass(frozen=True)
class ProxySettings:
    sentences: int = 256  # English proxy verses distilled on (each with its translations)
    steps: int = 60
    batch_size: int = 16
    lr: float = 5e-4
    max_length: int = 64
    languages: tuple[str, ...] = ("en", "de", "fr", "es", "ru", "zh", "ar", "ja")
    score_verses: int = 128  # held-out proxy verses per language for the retrieval score


@dataclass(frozen=True)
class ProxyData:
    """Training verses (English + translations) and disjoint scoring verses."""

    sources: list[str]
    translations: list[tuple[str, ...]]
    languages: tuple[str, ...]
    score_sources: list[str]
    score_translations: list[tuple[str, ...]]


def proxy_data(settings: ProxySettings, seed: int) -> ProxyData:
    """The proxy split's verses: books kept out of both training and evaluation."""
    from kdcompress.corpus import parallel_set

    found = parallel_set(
        "proxy",
        SOURCE_LANGUAGE,
        settings.languages,
        seed=seed,
        limit=settings.score_verses + settings.sentences,
    )
    cut = settings.score_verses
    return ProxyData(
        sources=list(found.sources[cut:]),
        translations=list(found.translations[cut:]),
        languages=found.languages,
        score_sources=list(found.sources[:cut]),
        score_translations=list(found.translations[:cut]),
    )


class ProxyEvaluator:
    """Distils candidates briefly against one shared teacher cache and reports a proxy loss."""

    def __init__(
        self,
        *,
        teacher_dir: Path,
        settings: ProxySettings,
        cache_path: Path,
        seed: int,
        data: ProxyData | None = None,
    ) -> None:
        from kdcompress.assets import read_embedding_info
        from kdcompress.kd import TeacherCache
        from kdcompress.kd.parallel import Translations

        self.teacher_dir, self.settings, self.seed = teacher_dir, settings, seed
        self.data = data if data is not None else proxy_data(settings, seed)
        self.info = read_embedding_info(teacher_dir)
        self.cache = TeacherCache.build(
            teacher_dir,
            self.data.sources,
            settings.max_length,
            cache_path,
            layers=(),
            show_progress=True,
        )
        self.translations = Translations(
            self.data.translations,
            self.data.languages,
            teacher_dir=teacher_dir,
            max_length=settings.max_length,
            prefix=self.info.text_prefix,
        )

    def proxy_loss(self, arch: StudentArch) -> float:
        """``1 -`` the candidate's retrieval top-1 after its proxy distillation; 1 (retrieves
        nothing) for a candidate whose distillation diverged, which must not stop the search."""
        from kdcompress.kd import Diverged, LossKind, distill_student

        try:
            outcome = distill_student(
                teacher_dir=self.teacher_dir,
                arch=arch,
                sentences=self.data.sources,
                steps=self.settings.steps,
                batch_size=self.settings.batch_size,
                lr=self.settings.lr,
                seed=self.seed,
                max_length=self.settings.max_length,
                cache=self.cache,
                loss=LossKind.POOLED,
                translations=self.translations,
                eval_sentences=min(64, len(self.data.sources)),
            )
        except Diverged:
            return 1.0
        return 1.0 - self.retrieval(outcome.student)

    def retrieval(self, model: Any) -> float:
        """Mean English -> language retrieval top-1 over the scoring verses."""
        import torch

        sources = self._embed(model, self.data.score_sources)
        scores = []
        for k, _language in enumerate(self.data.languages):
            pairs = [(i, row[k]) for i, row in enumerate(self.data.score_translations) if row[k]]
            if len(pairs) < 2:
                continue
            targets = self._embed(model, [text for _, text in pairs])
            queries = sources[[i for i, _ in pairs]]
            hits = (queries @ targets.T).argmax(dim=1).eq(torch.arange(len(pairs)))
            scores.append(float(hits.float().mean()))
        return sum(scores) / len(scores) if scores else 0.0

    def _embed(self, model: Any, texts: Sequence[str]) -> Any:
        import torch

        from kdcompress.kd.teacher_cache import pool

        tokenizer = self.translations.tokenizer
        vectors = []
        model.eval()
        with torch.inference_mode():
            for start in range(0, len(texts), 64):
                chunk = [self.info.text_prefix + t for t in texts[start : start + 64]]
                encoded = tokenizer(
                    chunk,
                    padding=True,
                    truncation=True,
                    max_length=self.settings.max_length,
                    return_tensors="pt",
                )
                hidden = model(**encoded).last_hidden_state
                vectors.append(pool(hidden, encoded["attention_mask"], self.info.pooling))
        return torch.nn.functional.normalize(torch.cat(vectors), dim=-1)
