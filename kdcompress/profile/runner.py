"""``kdcompress profile``: plan, measure (resumably), fit, validate and save a hardware profile."""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import statistics
from pathlib import Path

from kdcompress.artifacts import Artifact, StudentArch
from kdcompress.backends import get_backend
from kdcompress.console import info, progress, warn
from kdcompress.errors import ArtifactError, OutputExistsError, UsageError
from kdcompress.hardware import threads_or_default
from kdcompress.latency.predictor import (
    FEATURES,
    BlockTable,
    LatencyModel,
    evaluate,
    fit_latency_model,
)
from kdcompress.latency.schema import (
    BlockTiming,
    DeviceFingerprint,
    HardwareProfile,
    ModelTiming,
    ProfileSettings,
    best_rounds,
)
from kdcompress.profile.measure import (
    block_graphs,
    choose_architectures,
    measure_blocks,
    measure_model,
    model_keys,
)
from kdcompress.space import SearchSpace, teacher_space

QUICK_ENCODER_SHARE = 0.35  # a little more than teacher / 4, the slowest default budget


@dataclasses.dataclass(frozen=True)
class PartialProfile(Artifact):
    """What has been measured so far; lets an interrupted profile resume."""

    kind = "hardware-profile-partial"

    settings: ProfileSettings
    blocks: tuple[BlockTiming, ...] = ()
    models: tuple[ModelTiming, ...] = ()


def make_settings(
    *,
    backend: str,
    threads: int | None = None,
    seq_lens: tuple[int, ...] = (),
    batch_sizes: tuple[int, ...] = (1,),
    quick: bool = False,
    vocab: int = 32_000,
    seed: int = 0,
    space: SearchSpace | None = None,
    fit_architectures: int | None = None,
    heldout_architectures: int | None = None,
    teacher: StudentArch | None = None,
    heldout_vocabs: tuple[int, ...] | None = None,
) -> ProfileSettings:
    """Settings with the defaults of a quick or a full profile.

    ``vocab`` defaults to a trimmed-vocabulary size: students are vocabulary-trimmed, and an
    embedding lookup's latency hardly depends on the table's size anyway. With ``teacher``,
    the space defaults to the teacher's and its own encoder is timed too. Held-out encoders
    alternate it with :data:`SHIPPED_VOCAB` (``heldout_vocabs``), so the latency model's error
    is measured on the vocabulary a shipped student has, not only the one it was fitted with.
    """
    if any(s < 1 for s in seq_lens) or any(b < 1 for b in batch_sizes):
        raise UsageError("sequence lengths and batch sizes must be positive")
    return ProfileSettings(
        backend=get_backend(backend).name.value,
        threads=threads_or_default(threads),
        seq_lens=tuple(sorted(set(seq_lens))) or ((128,) if quick else (32, 128)),
        batch_sizes=tuple(sorted(set(batch_sizes))),
        vocab=vocab,
        runs=20 if quick else 40,
        warmup=5 if quick else 10,
        fit_architectures=(12 if quick else 24) if fit_architectures is None else fit_architectures,
        heldout_architectures=(
            (12 if quick else 24) if heldout_architectures is None else heldout_architectures
        ),
        seed=seed,
        space=(space or (teacher_space(teacher) if teacher else SearchSpace())).validate(),
        # On a busy machine every point waits out its retries; a quick profile must stay quick.
        retries=2 if quick else 4,
        patience_s=1.0 if quick else 2.0,
        teacher=teacher,
        # A quick profile times encoders where the search's budgets lie (a base-sized encoder
        # takes seconds a call on 2 cores); a full one times them over the whole space.
        encoder_share=QUICK_ENCODER_SHARE if quick else 1.0,
        heldout_vocabs=(vocab, SHIPPED_VOCAB) if heldout_vocabs is None else heldout_vocabs,
    )


# About the 61k pieces a me5-small student keeps after trimming its vocabulary on the default
# distillation corpus (BENCHMARKS.md: 250,037 -> 61,066).
SHIPPED_VOCAB = 64_000


def default_name(settings: ProfileSettings) -> str:
    """A file-name-safe name from the CPU model and backend, e.g. ``amd-epyc-onnxruntime``."""
    import re

    cpu = re.sub(r"\(r\)|\(tm\)|cpu|processor|@.*$", "", DeviceFingerprint.current().cpu.lower())
    slug = re.sub(r"[^a-z0-9]+", "-", cpu).strip("-") or "cpu"
    return f"{slug}-{settings.backend}"


def partial_path(output: Path) -> Path:
    return output.with_name(output.name + ".partial")


def _resume_state(path: Path, settings: ProfileSettings) -> PartialProfile:
    if not path.is_file():
        return PartialProfile(settings)
    try:
        partial = PartialProfile.load(path)
    except ArtifactError as exc:
        warn(f"ignoring unreadable partial profile ({exc}); starting again")
        return PartialProfile(settings)
    if partial.settings != settings:
        warn(f"{path} was measured with other settings; starting again")
        return PartialProfile(settings)
    info(
        f"resuming: {len(partial.blocks)} blocks and {len(partial.models)} models already measured"
    )
    return partial


def run_profile(
    *, settings: ProfileSettings, name: str, output: Path, overwrite: bool = False
) -> HardwareProfile:
    """Measure this machine for ``settings`` and write the profile to ``output``."""
    if output.exists() and not overwrite:
        raise OutputExistsError(f"{output} already exists; pass --overwrite to replace it")
    backend = get_backend(settings.backend)
    partial_file = partial_path(output)
    state = _resume_state(partial_file, settings)
    # Exported graphs are kept across passes (and an interruption) and removed at the end.
    workdir = output.with_name(output.name + ".work")
    workdir.mkdir(parents=True, exist_ok=True)
    blocks, models = list(state.blocks), list(state.models)
    graphs = block_graphs(settings.space)
    archs = choose_architectures(settings)
    done = {f"{t.key}#{t.round}" for t in blocks} | {f"{t.key}#{t.round}" for t in models}
    shapes = len(settings.seq_lens) * len(settings.batch_sizes)
    total = (len(graphs) + len(archs)) * shapes * settings.rounds

    def checkpoint() -> None:
        PartialProfile(settings, tuple(blocks), tuple(models)).save(partial_file)

    with progress() as bar:
        task = bar.add_task("Profiling", total=total, completed=len(done))
        for round_ in range(settings.rounds):
            for graph in graphs:
                if set(graph.keys(settings, round_)) <= done:
                    continue
                bar.update(task, description=f"pass {round_ + 1}: {graph.block} h{graph.hidden}")
                for timing in measure_blocks(backend, graph, settings, done, round_, workdir):
                    blocks.append(timing)
                    checkpoint()
                    bar.advance(task)
            for arch, role in archs:
                if set(model_keys(arch, settings, round_)) <= done:
                    continue
                label = f"pass {round_ + 1}: encoder {arch.layers}L {arch.hidden}H ({role})"
                bar.update(task, description=label)
                for model_timing in measure_model(
                    backend, arch, role, settings, done, round_, workdir
                ):
                    models.append(model_timing)
                    checkpoint()
                    bar.advance(task)
    profile = _finish(settings, name, backend.version(), blocks, models)
    profile.save(output)
    partial_file.unlink(missing_ok=True)
    shutil.rmtree(workdir, ignore_errors=True)
    return profile


def _finish(
    settings: ProfileSettings,
    name: str,
    version: str,
    blocks: list[BlockTiming],
    models: list[ModelTiming],
) -> HardwareProfile:
    table = BlockTable(tuple(blocks))
    chosen = best_rounds(models)
    quiet = [m for m in chosen if not m.latency.disturbed]
    disturbed = len(chosen) - len(quiet)
    if sum(m.role == "fit" for m in quiet) < len(FEATURES):
        warn(
            "the machine was busy throughout (other processes used the CPU while timing): "
            "fitting on disturbed timings; profile again on a quiet machine"
        )
        quiet, disturbed = chosen, 0
    elif disturbed:
        warn(
            f"{disturbed} of {len(chosen)} encoder timings were disturbed by other processes in "
            "every pass and are left out; profile a quiet machine for best results"
        )
    fit_set = [m for m in quiet if m.role == "fit"]
    heldout = [m for m in quiet if m.role == "heldout"]
    fit = fit_latency_model(table, fit_set)
    error = None
    if heldout:
        error = evaluate(LatencyModel(table, fit, fit_set), fit_set, heldout)
        error = dataclasses.replace(error, disturbed_excluded=disturbed)
    spreads = [b.latency.spread for b in blocks] + [m.latency.spread for m in models]
    return HardwareProfile(
        name=name,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        fingerprint=DeviceFingerprint.current(),
        backend_version=version,
        settings=settings,
        blocks=tuple(blocks),
        models=tuple(models),
        fit=fit,
        error=error,
        noise=statistics.median(spreads) if spreads else 0.0,
    )
