"""The Python API: one keyword-only function per stage, each returning its typed artifact.

The same stages, settings and files as the command line, for notebooks and scripts::

    from pathlib import Path
    import kdcompress.api as kd

    profile = kd.profile(backend="onnxruntime", quick=True, output=Path("profiles/mine.json"))
    found = kd.search(target=Path("profiles/mine.json"), output=Path("runs/s"), episodes=3)
    arch = next(r.arch for r in found.recommendations if r.budget == "7x")
    student = kd.distill(arch=arch, output=Path("runs/student"), steps=400)
    export = kd.export(model="runs/student", output=Path("runs/export"), quantize="dynamic")
    report = kd.validate(export_dir=Path("runs/export"), teacher="me5-small", quality="quick")
    print(report.speedup(1, 128), report.summary("student-int8"))

Each function writes what its command writes (atomically, refusing an existing output unless
``overwrite=True``) and raises :class:`kdcompress.errors.KDCompressError` subclasses with the
same one-line messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdcompress.catalog import DEFAULT_TEACHER

if TYPE_CHECKING:
    from kdcompress.artifacts import DistillResult, ExportManifest, StudentArch, ValidationReport
    from kdcompress.latency.schema import HardwareProfile
    from kdcompress.search.runner import SearchResult


def profile(
    *,
    backend: str = "onnxruntime",
    output: Path,
    quick: bool = False,
    threads: int | None = None,
    name: str | None = None,
    teacher: str | None = None,
    overwrite: bool = False,
) -> HardwareProfile:
    """Measure this machine into a latency model (``kdcompress profile``); with ``teacher``,
    for that teacher's search space and its own latency."""
    from kdcompress.models import teacher_shape
    from kdcompress.profile.runner import default_name, make_settings, run_profile

    shape = teacher_shape(teacher) if teacher is not None else None
    settings = make_settings(backend=backend, threads=threads, quick=quick, teacher=shape)
    name = name or default_name(settings)
    return run_profile(settings=settings, name=name, output=output, overwrite=overwrite)


def search(
    *,
    target: Path,
    output: Path,
    teacher: str = DEFAULT_TEACHER,
    episodes: int = 8,
    candidates: int = 6,
    seed: int = 0,
    controller: str = "lstm",
    resume: bool = False,
    overwrite: bool = False,
) -> SearchResult:
    """KD-NAS against a profile (``kdcompress search``); the standard budget's sizes."""
    from kdcompress.latency.coverage import search_space_for
    from kdcompress.latency.schema import read_profile
    from kdcompress.models import teacher_shape
    from kdcompress.search.proxy import ProxySettings
    from kdcompress.search.reward import RewardSettings
    from kdcompress.search.runner import SearchSettings, run_search

    space = search_space_for(
        teacher_shape(teacher), read_profile(target), seq_len=128, name=teacher
    )
    settings = SearchSettings(
        teacher=teacher,
        target=str(target),
        episodes=episodes,
        candidates=candidates,
        pool=100,
        seed=seed,
        seq_len=128,
        controller=controller,
        reward=RewardSettings(),
        proxy=ProxySettings(),
        space=space,
    )
    return run_search(settings=settings, output=output, resume=resume, overwrite=overwrite)


def distill(
    *, arch: StudentArch, output: Path, teacher: str = DEFAULT_TEACHER, **options: Any
) -> DistillResult:
    """Distil a student (``kdcompress distill``); ``options`` are the fields of
    :class:`kdcompress.distill.DistillJob` (steps, sentences, lr, loss, trim_vocab, ...), with
    ``loss``, ``targets`` and ``init`` given by name as on the command line."""
    from kdcompress.distill import DistillJob, run_distill
    from kdcompress.kd.settings import parse_loss, parse_targets
    from kdcompress.kd.student import parse_init
    from kdcompress.models import resolve_teacher

    if "steps" not in options and "epochs" not in options:
        options["steps"] = 2000
    for name, parse in (("loss", parse_loss), ("targets", parse_targets), ("init", parse_init)):
        if options.get(name) is not None:
            options[name] = parse(options[name])
    job = DistillJob(arch=arch, output=output, **options)
    result = run_distill(job, teacher=resolve_teacher(teacher))
    assert result is not None  # a single process is rank 0
    return result


def export(
    *,
    model: str | Path,
    output: Path,
    format: str = "onnx",
    quantize: str = "dynamic",
    threads: int | None = None,
    overwrite: bool = False,
) -> ExportManifest:
    """Export (and quantize) a model for a runtime (``kdcompress export``, without validation:
    call :func:`validate` on the result)."""
    from kdcompress.export import export_model, parse_format
    from kdcompress.quantize import Quantization, QuantizeOptions, parse_quantization

    mode = parse_quantization(quantize)
    options = QuantizeOptions(mode=mode) if mode is not Quantization.NONE else None
    return export_model(
        model=str(model),
        fmt=parse_format(format),
        output=output,
        overwrite=overwrite,
        threads=threads,
        quantize=options,
    )


def validate(
    *,
    export_dir: Path,
    teacher: str | None = DEFAULT_TEACHER,
    quality: str = "quick",
    threads: int | None = None,
    target: Path | None = None,
) -> ValidationReport:
    """Parity, latency side by side with the teacher, size, memory and quality of an export
    (``kdcompress validate``); the teacher is exported to the same runtime once and cached."""
    from kdcompress.export import teacher_export
    from kdcompress.hardware import threads_or_default
    from kdcompress.validate import read_manifest, validate_export

    threads = threads_or_default(threads)
    teacher_dir = None
    if teacher is not None:
        teacher_dir = teacher_export(teacher, read_manifest(export_dir).backend, threads)
    return validate_export(
        export_dir=export_dir, teacher=teacher_dir, profile=target, threads=threads, quality=quality
    )
