"""The knowledge-distillation core, shared by the search's proxy runs and the distill stage.

- :func:`distill_student`: one distillation in memory (``loop``), with its settings and result
  (``settings``), the KD module computing the losses (``module``), checkpoints (``checkpoint``)
  and ``torchrun`` support (``distributed``);
- :class:`TeacherCache`: the teacher's targets, computed once and shared across runs;
- ``losses`` (pure loss functions), ``mapping`` (Uniform+Last layer map, projection),
  ``student`` (building and initialising students), ``importance`` (activation-based scores),
  ``parallel`` (cross-lingual targets), ``vocab`` (vocabulary trimming).
"""

from __future__ import annotations

from kdcompress.kd.loop import Diverged, distill_student, teacher_layers_for
from kdcompress.kd.settings import DistillOutcome, DistillSettings, LossKind, Targets
from kdcompress.kd.teacher_cache import TeacherCache, corpus_hash

__all__ = [
    "DistillOutcome",
    "DistillSettings",
    "Diverged",
    "LossKind",
    "Targets",
    "TeacherCache",
    "corpus_hash",
    "distill_student",
    "teacher_layers_for",
]
