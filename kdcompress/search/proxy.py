"""Proxy distillation: a short multi-layer hidden-state KD of one candidate on the proxy split.

The teacher's hidden states for the proxy sentences are computed once (every layer, so any
student depth can be mapped) and shared by every candidate of the search; the distillation
itself is the distill stage's own code, so search and final distillation optimise one loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kdcompress.artifacts import StudentArch


@dataclass(frozen=True)
class ProxySettings:
    sentences: int = 256
    steps: int = 60
    batch_size: int = 16
    lr: float = 5e-4
    max_length: int = 64
    languages: tuple[str, ...] = ("en", "de", "fr", "es", "ru", "zh", "ar", "ja")


def proxy_sentences(settings: ProxySettings, seed: int) -> list[str]:
    """The proxy split's sentences: books kept out of both training and evaluation."""
    from kdcompress.corpus import iter_sentences

    return list(
        iter_sentences("proxy", list(settings.languages), seed=seed, limit=settings.sentences)
    )


class ProxyEvaluator:
    """Distils candidates briefly against one shared teacher cache and reports ``L_HS``."""

    def __init__(
        self,
        *,
        teacher_dir: Path,
        settings: ProxySettings,
        cache_path: Path,
        seed: int,
        sentences: list[str] | None = None,
    ) -> None:
        from kdcompress.distill import TeacherCache

        self.teacher_dir = teacher_dir
        self.settings = settings
        self.seed = seed
        self.sentences = sentences if sentences is not None else proxy_sentences(settings, seed)
        self.cache = TeacherCache.build(
            teacher_dir, self.sentences, settings.max_length, cache_path, show_progress=True
        )

    def hidden_loss(self, arch: StudentArch) -> float:
        """Normalised hidden-state loss L_HS of ``arch`` after its proxy distillation, over the
        Uniform+Last pairs of its transformer layers (the embedding pair left out, so that
        students of different depths compare fairly)."""
        from kdcompress.distill import distill_student

        outcome = distill_student(
            teacher_dir=self.teacher_dir,
            arch=arch,
            sentences=self.sentences,
            steps=self.settings.steps,
            batch_size=self.settings.batch_size,
            lr=self.settings.lr,
            seed=self.seed,
            max_length=self.settings.max_length,
            cache=self.cache,
            eval_sentences=min(128, len(self.sentences)),
        )
        assert outcome.layer_loss is not None
        return float(outcome.layer_loss)
