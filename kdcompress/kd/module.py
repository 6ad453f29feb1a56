"""The student with its projection, computing the distillation losses against cached targets."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from kdcompress.kd.losses import (
    attention_relation_loss,
    contrastive_loss,
    cosine_distance,
    normalised_hidden_loss,
    pooled_mse,
    whitened_mse,
    whitening,
)
from kdcompress.kd.mapping import (
    HiddenProjection,
    LayerPair,
)
from kdcompress.kd.parallel import ParallelBatch
from kdcompress.kd.settings import DistillSettings, uses_hidden
from kdcompress.kd.teacher_cache import (
    TeacherBatch,
    TeacherCache,
    pool,
)


class KDModule(nn.Module):
    """Student + projection computing the distillation losses against cached targets."""

    def __init__(
        self,
        student: nn.Module,
        projection: HiddenProjection,
        pairs: Sequence[LayerPair],
        cache: TeacherCache,
        settings: DistillSettings,
        teacher_qkv: Sequence[nn.Linear] | None,
        relation_heads: int,
    ) -> None:
        super().__init__()
        self.student, self.projection = student, projection
        self.pairs = tuple(pairs)
        self.settings = settings
        self.hidden = uses_hidden(settings.loss)
        self.variances = (
            {p.teacher: cache.variance(p.teacher) for p in pairs} if self.hidden else {}
        )
        self.pooled_variance = cache.meta.pooled_variance
        whiten = None
        if settings.whiten_weight > 0:
            whiten = whitening(torch.from_numpy(np.asarray(cache.pooled, dtype=np.float32)))
        # A buffer: it moves with the module and is not trained (nor saved: it is recomputed).
        self.register_buffer("whiten", whiten, persistent=False)
        self.pooling = cache.meta.pooling
        # The deployed model's embedding is the student's own pooled output: it learns the
        # teacher's directly where the widths agree, through the projection where they do not.
        self.project_pooled = projection.student_width != projection.teacher_width
        self.relation_source = cache.meta.teacher_layers - 1  # input of the teacher's last layer
        self.teacher_qkv = nn.ModuleList(teacher_qkv or [])
        self.relation_heads = relation_heads
        self._captured: dict[str, Tensor] = {}
        if teacher_qkv:
            last = student.encoder.layer[-1].attention.self  # type: ignore[union-attr,index]
            for name in ("query", "key", "value"):
                getattr(last, name).register_forward_hook(self._capture(name))

    def _capture(self, name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
            self._captured[name] = output

        return hook

    def embed(self, hidden: Tensor, mask: Tensor) -> Tensor:
        """The student's sentence embedding in the teacher's space."""
        pooled = pool(hidden, mask, self.pooling)
        return self.projection(pooled) if self.project_pooled else pooled

    def _match(self, student: Tensor, teacher: Tensor, sentences: Tensor | float) -> Tensor:
        """Cosine + normalised MSE of sentence embeddings against their teacher targets."""
        mse = pooled_mse(student, teacher, sentences=sentences) / self.pooled_variance
        cosine = cosine_distance(student, teacher, sentences=sentences)
        total = self.settings.pooled_weight * mse + self.settings.cosine_weight * cosine
        if isinstance(self.whiten, Tensor):
            white = whitened_mse(student, teacher, self.whiten, sentences=sentences)
            total = total + self.settings.whiten_weight * white
        return total

    def forward(
        self,
        batch: TeacherBatch,
        tokens: Tensor | float,
        sentences: Tensor | float,
        parallel: ParallelBatch | None = None,
    ) -> dict[str, Tensor]:
        mask = batch.attention_mask
        out = self.student(
            input_ids=batch.input_ids, attention_mask=mask, output_hidden_states=self.hidden
        )
        source = self.embed(out.last_hidden_state, mask)
        pooled = self._match(source, batch.pooled, sentences)
        terms = {"cosine": cosine_distance(source, batch.pooled, sentences=sentences)}
        if parallel is not None:
            translated = self.student(
                input_ids=parallel.input_ids, attention_mask=parallel.attention_mask
            ).last_hidden_state
            translated = self.embed(translated, parallel.attention_mask)
            targets = batch.pooled[parallel.rows]
            pooled = pooled + self._match(translated, targets, sentences)
            if self.settings.contrastive_weight > 0:
                contrast = contrastive_loss(
                    translated,
                    batch.pooled,
                    parallel.rows,
                    temperature=self.settings.temperature,
                    sentences=sentences,
                )
                terms["contrastive"] = contrast
                pooled = pooled + self.settings.contrastive_weight * contrast
        terms["pooled"] = pooled
        total = pooled
        if self.hidden:
            projected = {
                p.student: self.projection(out.hidden_states[p.student]) for p in self.pairs
            }
            hidden = normalised_hidden_loss(
                [projected[p.student] for p in self.pairs],
                [batch.hidden[p.teacher] for p in self.pairs],
                mask,
                variances=[self.variances[p.teacher] for p in self.pairs],
                tokens=tokens,
            )
            terms["hidden"] = hidden
            total = total + hidden
            if not self.training:
                terms["layers"] = self._layer_loss(projected, batch, tokens)
        if len(self.teacher_qkv):
            relation = self._relation(batch, tokens)
            terms["relation"] = relation
            total = total + self.settings.relation_weight * relation
        terms["loss"] = total
        return terms

    def _layer_loss(
        self, projected: dict[int, Tensor], batch: TeacherBatch, tokens: Tensor | float
    ) -> Tensor:
        """L_HS over the transformer layers' pairs only, leaving out the embedding pair.

        The embedding pair is all but solved from the teacher-initialised start, and it weighs
        1/2 in a 1-layer student's L_HS but 1/7 in a 6-layer one's: with it, the search would
        read shallow students as better than they are. Without it the loss compares depths.
        """
        layers = [p for p in self.pairs if p.student > 0]
        return normalised_hidden_loss(
            [projected[p.student] for p in layers],
            [batch.hidden[p.teacher] for p in layers],
            batch.attention_mask,
            variances=[self.variances[p.teacher] for p in layers],
            tokens=tokens,
        )

    def _relation(self, batch: TeacherBatch, tokens: Tensor | float) -> Tensor:
        source = batch.hidden[self.relation_source]
        teacher = [linear(source) for linear in self.teacher_qkv]
        student = [self._captured[name] for name in ("query", "key", "value")]
        return attention_relation_loss(
            student, teacher, batch.attention_mask, heads=self.relation_heads, tokens=tokens
        )


def teacher_qkv(teacher: Any) -> list[nn.Linear]:
    """Frozen copies of the teacher's last-layer Q/K/V projections (targets for relations)."""
    attention = teacher.encoder.layer[-1].attention.self
    copies = [copy.deepcopy(getattr(attention, n)) for n in ("query", "key", "value")]
    for linear in copies:
        linear.requires_grad_(False)
    return copies
