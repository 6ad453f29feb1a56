"""Task-agnostic distillation of a student encoder from a teacher (``kdcompress distill``).

- :func:`distill_student`: one distillation in memory (the search's proxy runs call this);
- :class:`TeacherCache`: the teacher's targets, computed once and shared across runs;
- :func:`run_distill`: the CLI stage, from corpus to a student folder with ``distill.json``.

Modules: ``losses`` (pure loss functions), ``mapping`` (Uniform+Last layer map, projection),
``student`` (building and initialising students), ``vocab`` (vocabulary trimming),
``teacher_cache`` and ``trainer`` (loop, checkpoints, resume, DDP).
"""

from __future__ import annotations

from kdcompress.distill.losses import normalised_hidden_loss
from kdcompress.distill.mapping import LayerPair, init_source_layers, uniform_last_pairs
from kdcompress.distill.student import (
    InitMode,
    InitReport,
    build_student,
    load_search_arch,
    parse_arch_json,
    validate_arch,
    write_student_folder,
)
from kdcompress.distill.teacher_cache import TeacherCache, corpus_hash
from kdcompress.distill.trainer import (
    DistillOutcome,
    LossKind,
    distill_student,
    parse_languages,
    run_distill,
    show_result,
    teacher_layers_for,
)
from kdcompress.distill.vocab import VocabTrim, trim_model_folder

__all__ = [
    "DistillOutcome",
    "InitMode",
    "InitReport",
    "LayerPair",
    "LossKind",
    "TeacherCache",
    "VocabTrim",
    "build_student",
    "corpus_hash",
    "distill_student",
    "init_source_layers",
    "load_search_arch",
    "normalised_hidden_loss",
    "parse_arch_json",
    "parse_languages",
    "run_distill",
    "show_result",
    "teacher_layers_for",
    "trim_model_folder",
    "uniform_last_pairs",
    "validate_arch",
    "write_student_folder",
]
