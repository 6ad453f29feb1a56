"""Which teacher layers teach which student layers, and the projection between their widths.

Layer numbers follow ``output_hidden_states``: 0 is the embedding output, ``i`` (1-based) the
output of transformer layer ``i``. The "Uniform+Last" map (KD-NAS) lets student layer ``i`` of
``L_S`` regress two teacher layers of ``L_T``: ``floor(i * L_T / L_S)`` (spread evenly over the
teacher) and ``L_T - L_S + i`` (the teacher's last ``L_S`` layers); the embedding output
regresses the teacher's embedding output. When both rules pick the same layer it is one pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from kdcompress.errors import UsageError


@dataclass(frozen=True)
class LayerPair:
    """Student hidden state ``student`` regresses teacher hidden state ``teacher``."""

    student: int
    teacher: int
    rule: str  # "embeddings", "uniform", "last" or "uniform+last"


def _check_depths(teacher_layers: int, student_layers: int) -> None:
    if teacher_layers < 1 or student_layers < 1:
        raise UsageError(
            f"layer counts must be >= 1 (teacher {teacher_layers}, student {student_layers})"
        )
    if student_layers > teacher_layers:
        raise UsageError(
            f"a {student_layers}-layer student cannot be distilled from a {teacher_layers}-layer "
            "teacher with the Uniform+Last map: choose at most as many layers as the teacher"
        )


def uniform_last_pairs(teacher_layers: int, student_layers: int) -> tuple[LayerPair, ...]:
    """The Uniform+Last layer map, embeddings first, in student-layer order."""
    _check_depths(teacher_layers, student_layers)
    pairs = [LayerPair(0, 0, "embeddings")]
    for i in range(1, student_layers + 1):
        uniform = i * teacher_layers // student_layers
        last = teacher_layers - student_layers + i
        if uniform == last:
            pairs.append(LayerPair(i, uniform, "uniform+last"))
        else:
            pairs += [LayerPair(i, uniform, "uniform"), LayerPair(i, last, "last")]
    return tuple(pairs)


def init_source_layers(teacher_layers: int, student_layers: int) -> tuple[int, ...]:
    """Teacher layer (1-based) whose weights initialise each student layer: the uniform rule.

    For 12 -> 4 these are teacher layers 3, 6, 9, 12, so the student's stack ends with the
    teacher's last layer, whose output space the final embedding must reproduce.
    """
    _check_depths(teacher_layers, student_layers)
    return tuple(i * teacher_layers // student_layers for i in range(1, student_layers + 1))


def teacher_layers_needed(pairs: Sequence[LayerPair], *extra: int) -> tuple[int, ...]:
    """Sorted, distinct teacher hidden states that the losses read (plus ``extra`` ones)."""
    return tuple(sorted({p.teacher for p in pairs} | set(extra)))


class HiddenProjection(nn.Module):
    """Learned linear map student width -> teacher width, shared by every layer pair.

    One shared map (not one per layer) keeps all student layers in one space that relates to
    the teacher's the same way, which is what the student's own final embedding is used in.
    It starts as the embedding of the student's features into the teacher features they were
    sliced from (the identity when widths match), so a teacher-initialised student starts
    with a meaningful loss instead of one dominated by a random projection.
    """

    def __init__(self, student_width: int, teacher_width: int, dims: Sequence[int] | None) -> None:
        super().__init__()
        self.student_width, self.teacher_width = student_width, teacher_width
        self.linear = nn.Linear(student_width, teacher_width)
        if dims is not None:
            if len(dims) != student_width:
                raise ValueError(f"{len(dims)} source dims for a width of {student_width}")
            with torch.no_grad():
                self.linear.weight.zero_()
                self.linear.weight[torch.as_tensor(list(dims)), torch.arange(student_width)] = 1.0
                self.linear.bias.zero_()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden)


def describe_pairs(pairs: Sequence[LayerPair]) -> str:
    """The layer map in one line, e.g. ``layer 1 <- teacher 6 (uniform), 11 (last); ...``."""
    students = sorted({p.student for p in pairs if p.student > 0})
    parts = [
        f"layer {s} <- teacher "
        + ", ".join(f"{p.teacher} ({p.rule})" for p in pairs if p.student == s)
        for s in students
    ]
    return "; ".join(parts)
