"""``eval-<name>.json``: one model's scores, and its retention against a reference report."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from kdcompress.artifacts import Artifact
from kdcompress.errors import ArtifactError, IncompatibleReferenceError
from kdcompress.quality.settings import EvalSettings, Task, settings_differences


@dataclass(frozen=True)
class TaskScore:
    """One task's result, with the sizes it was measured on."""

    task: str
    metric: str
    score: float
    details: dict[str, float]  # retrieval: top-1 per language
    sizes: dict[str, int]  # retrieval: queries per language; classification: train, test
    max_length: int  # tokens actually used (the setting, capped by the model's positions)
    texts: int  # distinct texts embedded
    wall_s: float


@dataclass(frozen=True)
class Retention:
    """Student / teacher score ratios against a reference report made with equal settings."""

    reference: str  # the reference file
    reference_model: str
    reference_scores: dict[str, float]
    reference_details: dict[str, dict[str, float]]
    per_task: dict[str, float | None]  # None where the reference scored 0
    details: dict[str, dict[str, float | None]]
    overall: float | None  # mean of the per-task ratios


@dataclass(frozen=True)
class EvalReport(Artifact):
    """``eval-<name>.json``: one model's scores on the fixed evaluation suite."""

    kind = "eval"

    model: str
    model_path: str
    backend: str
    backend_version: str
    threads: int
    batch_size: int
    settings: EvalSettings
    tasks: tuple[TaskScore, ...]
    mean: float
    wall_s: float
    retention: Retention | None = None

    def score(self, task: str) -> TaskScore:
        for result in self.tasks:
            if result.task == task:
                return result
        raise KeyError(task)


def _ratio(student: float, teacher: float) -> float | None:
    return student / teacher if teacher > 0 else None


def retention(report: EvalReport, reference: EvalReport, *, source: str) -> Retention:
    """Retention ratios of ``report`` against ``reference`` (refused if settings differ)."""
    check_reference(reference, report.settings, source=source)
    theirs = {result.task: result for result in reference.tasks}
    per_task: dict[str, float | None] = {}
    details: dict[str, dict[str, float | None]] = {}
    for result in report.tasks:
        other = theirs[result.task]
        per_task[result.task] = _ratio(result.score, other.score)
        details[result.task] = {
            key: _ratio(value, other.details[key])
            for key, value in result.details.items()
            if key in other.details
        }
    ratios = [r for r in per_task.values() if r is not None]
    return Retention(
        reference=source,
        reference_model=reference.model,
        reference_scores={task: result.score for task, result in theirs.items()},
        reference_details={task: dict(result.details) for task, result in theirs.items()},
        per_task=per_task,
        details=details,
        overall=sum(ratios) / len(ratios) if len(ratios) == len(per_task) else None,
    )


def check_reference(reference: EvalReport, settings: EvalSettings, *, source: str) -> None:
    """Refuse a reference made with other task settings or without every task."""
    differences = settings_differences(settings, reference.settings)
    if differences:
        raise IncompatibleReferenceError(
            f"{source} was made with different task settings ({'; '.join(differences)}); "
            "evaluate both models with the same options"
        )
    missing = [task.value for task in Task if task.value not in {t.task for t in reference.tasks}]
    if missing:
        raise IncompatibleReferenceError(f"{source} has no score for {', '.join(missing)}")


def load_reference(path: Path, settings: EvalSettings) -> EvalReport:
    """The reference report at ``path``, checked against ``settings`` before any work starts."""
    reference = EvalReport.load(path)
    numbers = [t.score for t in reference.tasks] + [
        value for t in reference.tasks for value in t.details.values()
    ]
    if not all(isinstance(value, float) and math.isfinite(value) for value in numbers):
        raise ArtifactError(f"{path}: malformed 'eval' file: a score is not a number")
    check_reference(reference, settings, source=str(path))
    return reference
