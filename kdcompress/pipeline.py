"""``kdcompress run``: profile -> search -> distill -> export -> validate in one run directory.

Each stage writes its artifact into the run directory and is skipped when that artifact
already exists, so re-running a run directory resumes at the first unfinished stage (and the
search and distillation resume inside the stage from their own checkpoints).

    RUN_DIR/run.json                what the run was asked (a re-run must ask the same)
    RUN_DIR/profile.json            the hardware profile used (reused or measured)
    RUN_DIR/search/search.json      KD-NAS candidates and recommendations
    RUN_DIR/student/                the distilled student (HF folder + distill.json)
    RUN_DIR/export-FORMAT/          the student exported, fp32 and int8 (export.json), and
                                    its validation against the teacher (validation.json/.md,
                                    eval-fp32-*.json, eval-int8-*.json with retention)
    RUN_DIR/teacher-export-FORMAT/  the teacher exported to the same runtime (eval-*.json)
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from kdcompress.artifacts import (
    MANIFEST,
    Artifact,
    ExportManifest,
    StudentArch,
    ValidationReport,
)
from kdcompress.console import info, warn
from kdcompress.errors import ArtifactError, KDCompressError, UsageError, parse_choice
from kdcompress.export import ExportFormat, export_model, format_for_backend
from kdcompress.models import ResolvedModel, resolve_teacher, teacher_arch
from kdcompress.quantize import Quantization, QuantizeOptions, parse_quantization
from kdcompress.render import validation_tables
from kdcompress.report import write_report
from kdcompress.space import SearchSpace, load_space, teacher_space
from kdcompress.textfile import read_text_lines
from kdcompress.validate import REPORT, validate_export


class Budget(StrEnum):
    QUICK = "quick"
    STANDARD = "standard"
    FULL = "full"


@dataclass(frozen=True)
class BudgetPlan:
    """How much work each stage does for a budget."""

    episodes: int
    candidates: int
    proxy_sentences: int
    proxy_steps: int
    distill_sentences: int
    distill_steps: int
    quick_eval: bool
    target_speedup: float = 7.0  # the search's recommendation that gets distilled


PLANS = {
    # About 15-20 minutes on 2 cores: a real but small run of every stage. With cross-lingual
    # targets a step reads 32 verses and 32 translations; 3,000 verses give each 3 pairings.
    Budget.QUICK: BudgetPlan(3, 3, 128, 30, 3_000, 300, quick_eval=True),
    Budget.STANDARD: BudgetPlan(8, 6, 256, 60, 15_000, 2_000, quick_eval=False),
    Budget.FULL: BudgetPlan(15, 10, 512, 100, 100_000, 20_000, quick_eval=False),
}


def parse_budget(name: str) -> Budget:
    return parse_choice(Budget, name, what="budget")


RUN_SETTINGS = "run.json"


@dataclass(frozen=True)
class RunSettings(Artifact):
    """What a run directory was made with: every stage's artifact in it depends on these."""

    kind = "run-settings"

    teacher: str
    backend: str
    budget: str = Budget.QUICK.value
    seed: int = 0
    space: str = ""  # the --space file, "" for the teacher's own space
    domain_text: str = ""  # the --domain-text file, "" for none


def claim_run_dir(output: Path, settings: RunSettings) -> None:
    """Record ``settings`` in a new run directory; refuse to resume one made with others.

    Resuming reuses every finished stage, so a run asked with another teacher, budget, seed or
    runtime would silently mix its stages with the earlier run's.
    """
    path = output / RUN_SETTINGS
    if not path.is_file():
        output.mkdir(parents=True, exist_ok=True)
        settings.save(path, overwrite=True)
        return
    earlier = RunSettings.load(path)
    differs = [
        f"--{name.replace('_', '-')} {_shown(getattr(earlier, name))} "
        f"(now {_shown(getattr(settings, name))})"
        for name in ("teacher", "backend", "budget", "seed", "space", "domain_text")
        if getattr(earlier, name) != getattr(settings, name)
    ]
    if differs:
        raise UsageError(
            f"{output} was made with {', '.join(differs)}: its stages would be reused for "
            "other settings; choose another --output, or remove it to start over"
        )


def _shown(value: object) -> object:
    return "none" if value == "" else value


def _done(path: Path, cls: type[ExportManifest] | type[ValidationReport]) -> bool:
    try:
        cls.load(path)
    except ArtifactError:
        return False
    return True


def profile_stage(
    run_dir: Path, backend: str, threads: int | None, teacher: StudentArch, space: SearchSpace
) -> Path:
    """Reuse a profile of this very machine and runtime that covers ``space`` and the teacher,
    else measure a quick one, reusing what earlier profiles of this machine measured."""
    from kdcompress.profile.reuse import profile_candidates, seed_partial
    from kdcompress.profile.runner import make_settings, partial_path, run_profile

    target = run_dir / "profile.json"
    if target.is_file():  # made for this run's teacher (run.json holds it)
        info(f"[dim]profile: done earlier ({target})[/]")
        return target
    settings = make_settings(
        backend=backend, threads=threads, quick=True, teacher=teacher, space=space
    )
    committed = sorted(PROFILES.glob("*.json"))
    candidates = [(path, why) for path, _, why in profile_candidates(committed, settings)]
    match = next((path for path, why in candidates if not why), None)
    if match is not None:
        info(f"profile: reusing {match}, measured on this machine with {backend}")
        shutil.copy2(match, target)
        return target
    info(f"profile: {no_profile_reason(candidates)}; measuring a quick one for its space")
    info(f"[dim]profile: {settings.space.describe()}[/]")
    seed_partial(committed, settings, partial_path(target))
    run_profile(settings=settings, name=f"run-{backend}", output=target)
    return target


PROFILES = Path("profiles")  # the committed profiles, relative to where kdcompress runs


def no_profile_reason(candidates: list[tuple[Path, list[str]]]) -> str:
    """Why no committed profile is reused: the one that differs least, and in what."""
    if not candidates:
        return f"no profile in {PROFILES}/ yet"
    path, why = min(candidates, key=lambda candidate: len(candidate[1]))
    return f"no profile in {PROFILES}/ fits this machine and teacher; the closest, {path}, " + (
        "differs in " + "; ".join(why)
    )


def search_stage(
    run_dir: Path,
    teacher: ResolvedModel,
    profile: Path,
    plan: BudgetPlan,
    seed: int,
    space: SearchSpace,
) -> Path:
    from kdcompress.search.proxy import ProxySettings
    from kdcompress.search.reward import RewardSettings
    from kdcompress.search.runner import (
        DEFAULT_SPEEDUPS,
        RESULT_FILE,
        SETTINGS_FILE,
        SearchSettings,
        run_search,
    )

    out = run_dir / "search"
    if (out / RESULT_FILE).is_file():
        info(f"[dim]search: done earlier ({out / RESULT_FILE})[/]")
        return out / RESULT_FILE
    settings = SearchSettings(
        teacher=teacher.name,
        target=str(profile),
        episodes=plan.episodes,
        candidates=plan.candidates,
        pool=100,
        seed=seed,
        seq_len=128,
        controller="lstm",
        reward=RewardSettings(),
        proxy=ProxySettings(sentences=plan.proxy_sentences, steps=plan.proxy_steps),
        space=space,
        # Only the target and tighter budgets: no candidate is spent on a slower student.
        speedups=(plan.target_speedup, *(s for s in DEFAULT_SPEEDUPS if s > plan.target_speedup)),
    )
    resume = (out / SETTINGS_FILE).is_file()
    run_search(settings=settings, output=out, resume=resume, resolved_teacher=teacher)
    return out / RESULT_FILE


def chosen_arch(search_json: Path, target: str) -> tuple[StudentArch, str]:
    """The recommendation for ``target`` (e.g. "7x"), else the fastest one that exists."""
    from kdcompress.search.runner import SearchResult

    result = SearchResult.load(search_json)
    found = [r for r in result.recommendations if r.arch is not None]
    if not found:
        raise KDCompressError(f"{search_json}: the search found no architecture for any budget")
    preferred = [r for r in found if r.budget == target] or sorted(
        found, key=lambda r: -(r.speedup or 0)
    )
    pick = preferred[0]
    assert pick.arch is not None
    if pick.budget != target:
        warn(f"no candidate met the {target} budget; distilling the {pick.budget} one instead")
    return pick.arch, pick.budget


def distill_stage(
    run_dir: Path, teacher: ResolvedModel, arch: StudentArch, plan: BudgetPlan, asked: RunSettings
) -> Path:
    """The chosen student, distilled (vocabulary trimmed); with ``asked.domain_text``, a fifth
    of the items are that file's sentences (see ``kdcompress distill --domain-text``)."""
    from kdcompress.distill import DistillJob, checkpoint_dir_for, run_distill
    from kdcompress.general import DOMAIN_SHARE

    out = run_dir / "student"
    if (out / "distill.json").is_file():
        info(f"[dim]distill: done earlier ({out})[/]")
        return out
    job = DistillJob(
        arch=arch,
        output=out,
        steps=plan.distill_steps,
        sentences=plan.distill_sentences,
        general=DOMAIN_SHARE if asked.domain_text else 0.0,
        domain_file=Path(asked.domain_text) if asked.domain_text else None,
        trim_vocab=True,
        seed=asked.seed,
        checkpoint_every=50,  # a kill costs at most 50 steps, even of a short quick run
        resume=checkpoint_dir_for(out).exists(),
    )
    run_distill(job, teacher=teacher)
    return out


def export_stage(
    model: str | ResolvedModel,
    out: Path,
    fmt: ExportFormat,
    threads: int | None,
    quantize: QuantizeOptions | None = None,
) -> Path:
    asked = quantize.mode.value if quantize is not None else "none"
    if _done(out / MANIFEST, ExportManifest):
        manifest = ExportManifest.load(out / MANIFEST)
        made = manifest.int8.requested if manifest.int8 is not None else "none"
        if made == asked:
            info(f"[dim]export: done earlier ({out})[/]")
            return out
        warn(f"{out} was exported with quantization '{made}', not '{asked}': exporting again")
    export_model(
        model=model, fmt=fmt, output=out, threads=threads, quantize=quantize, overwrite=True
    )
    return out


def run_pipeline(
    asked: RunSettings,
    output: Path,
    *,
    quantize: str = "dynamic",
    threads: int | None = None,
    seq_lens: tuple[int, ...] | None = None,
) -> ValidationReport:
    """Run (or resume) every stage ``asked`` into ``output``; return the validation.
    ``asked.space`` narrows the search (and a quick profile) to a space JSON, else the
    teacher's own space; ``asked.domain_text`` is unlabelled text of the deployment's domain
    for the distillation (one sentence or document a line)."""
    fmt = format_for_backend(asked.backend)
    budget = parse_budget(asked.budget)
    plan = PLANS[budget]
    mode = parse_quantization(quantize)
    # A missing, damaged or unsupported teacher, space or text fails before profiling.
    resolved = resolve_teacher(asked.teacher)
    shape = teacher_arch(resolved.folder)
    searched = load_space(Path(asked.space)) if asked.space else teacher_space(shape)
    if asked.domain_text:
        read_text_lines(Path(asked.domain_text))
    asked = replace(asked, budget=budget.value)
    claim_run_dir(output, asked)
    info(f"[bold]kdcompress run[/] ({budget.value}) -> {output}")
    profile = profile_stage(output, asked.backend, threads, shape, searched)
    search_json = search_stage(output, resolved, profile, plan, asked.seed, searched)
    arch, label = chosen_arch(search_json, f"{plan.target_speedup:g}x")
    info(f"distilling the {label} recommendation: {arch.describe()}")
    student = distill_stage(output, resolved, arch, plan, asked)
    options = QuantizeOptions(mode=mode, seed=asked.seed) if mode is not Quantization.NONE else None
    student_export = export_stage(str(student), output / f"export-{fmt}", fmt, threads, options)
    teacher_export = export_stage(resolved, output / f"teacher-export-{fmt}", fmt, threads)
    if _done(student_export / REPORT, ValidationReport):
        info(f"[dim]validate: done earlier ({student_export / REPORT})[/]")
        report = ValidationReport.load(student_export / REPORT)
    else:
        report = validate_export(
            export_dir=student_export,
            teacher=teacher_export,
            profile=profile,
            threads=threads,
            seq_lens=seq_lens,
            quality="quick" if plan.quick_eval else "full",
        )
    validation_tables(report)
    write_report(output)
    return report
