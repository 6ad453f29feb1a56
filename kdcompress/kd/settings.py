"""What a distillation optimises and with which settings; what it returns."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from kdcompress.artifacts import (
    LossPoint,
    StudentArch,
)
from kdcompress.errors import UsageError, parse_choice
from kdcompress.kd.mapping import (
    HiddenProjection,
    LayerPair,
)
from kdcompress.kd.student import (
    InitMode,
    InitReport,
)
from kdcompress.kd.vocab import (
    VocabTrim,
)

# Measured (BENCHMARKS.md, "Distillation recipe"): with frozen word embeddings, after 400 steps
# 1e-3 keeps 89.7% of the teacher (2L x 384) where 3e-4 keeps 85.4% and 1e-4 81.0%; on
# 3L x 384 x 1152, 1e-3 keeps 90.8% where 3e-4 keeps 88.2%.
DEFAULT_LR = 1e-3


class LossKind(StrEnum):
    """What the student learns. The pooled sentence embedding (cosine + normalised MSE) is
    always part of it: it is what users of an embedding model consume."""

    POOLED = "pooled"
    HIDDEN = "hidden"  # + the paper's multi-layer hidden-state loss L_HS (Uniform+Last)
    HIDDEN_RELATION = "hidden+attn-relation"  # + MiniLMv2 attention relations


class Targets(StrEnum):
    """Whose teacher embedding a sentence learns."""

    CROSS_LINGUAL = "cross-lingual"  # a translation learns its (English) source's
    OWN = "own"  # every sentence its own


def parse_loss(name: str) -> LossKind:
    return parse_choice(LossKind, name, what="--loss")


def parse_targets(name: str) -> Targets:
    return parse_choice(Targets, name, what="--targets")


def uses_hidden(loss: LossKind) -> bool:
    return loss is not LossKind.POOLED


@dataclass(frozen=True)
class DistillSettings:
    """Everything that determines a distillation run's numbers (and must match on resume)."""

    steps: int
    batch_size: int
    lr: float
    seed: int
    max_length: int
    init: InitMode = InitMode.TEACHER
    loss: LossKind = LossKind.POOLED
    targets: Targets = Targets.OWN
    pooled_weight: float = 1.0  # normalised MSE of the sentence embedding
    cosine_weight: float = 1.0  # 1 - cosine of the sentence embedding
    contrastive_weight: float = 0.0  # in-batch InfoNCE of translations vs sources' targets
    whiten_weight: float = 0.0  # normalised MSE in the teacher's whitened embedding space
    temperature: float = 0.05
    relation_weight: float = 1.0
    relation_heads: int = 12
    freeze_embeddings: bool = True  # MISSION: frozen word embeddings help at these budgets
    trim_vocab: bool = False
    # One pass over plenty of text leaves no overfitting to fight, and dropout noise would
    # dominate a regression loss; None keeps the teacher's dropout.
    dropout: float | None = 0.0
    warmup: float = 0.06  # share of steps with a linear LR warm-up, then linear decay to 0
    weight_decay: float = 0.01
    log_every: int = 10

    def check(self, world: int) -> None:
        for name in ("steps", "batch_size", "max_length", "log_every"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name.replace('_', ' ')} must be >= 1")
        if self.lr <= 0:
            raise UsageError(f"learning rate must be > 0, got {self.lr}")
        if self.batch_size < world:
            raise UsageError(f"batch size {self.batch_size} is smaller than {world} processes")
        for name in ("pooled_weight", "cosine_weight", "contrastive_weight", "whiten_weight"):
            if getattr(self, name) < 0:
                raise UsageError(f"{name.replace('_', ' ')} must be >= 0")
        if self.temperature <= 0:
            raise UsageError(f"temperature must be > 0, got {self.temperature}")


@dataclass
class DistillOutcome:
    """A distilled student in memory, with its final losses and loss curve."""

    student: Any  # a transformers PreTrainedModel
    projection: HiddenProjection
    arch: StudentArch
    init: InitReport
    pairs: tuple[LayerPair, ...]
    hidden_loss: float | None  # final normalised L_HS on the evaluation sentences (eval mode)
    pooled_loss: float
    relation_loss: float | None
    curve: tuple[LossPoint, ...]
    steps: int
    sentences_seen: int
    train_s: float  # training-loop time, summed over resumed sessions
    sentences_per_s: float
    world_size: int
    corpus_hash: str
    vocab_trim: VocabTrim | None = None
    # L_HS without the embedding pair (eval mode), comparable across depths
    layer_loss: float | None = None
    cosine: float | None = None  # mean cosine of student and teacher embeddings (eval mode)
    translations: tuple[str, ...] | None = None  # languages of cross-lingual targets
