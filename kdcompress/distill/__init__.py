"""The ``distill`` stage (``kdcompress distill``): from a corpus to a student folder with
``distill.json``, on the knowledge-distillation core in :mod:`kdcompress.kd`."""

from __future__ import annotations

from kdcompress.distill.stage import DistillJob, checkpoint_dir_for, parse_languages, run_distill

__all__ = ["DistillJob", "checkpoint_dir_for", "parse_languages", "run_distill"]
