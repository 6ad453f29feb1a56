"""``kdcompress search``: KD-NAS episodes against a hardware profile, resumable after a kill.

Run directory:
- ``search-settings.json``  what was asked (a resumed run must ask the same);
- ``candidates.jsonl``      one line per evaluated candidate, appended and fsynced as it finishes;
- ``controller.json``       the controller after each finished episode;
- ``teacher-cache/``        the teacher's hidden states on the proxy sentences (built once);
- ``search.json``, ``search.png``   the result: ranking, Pareto front, one recommendation per
  latency budget, and a plot of every candidate with the front and the teacher.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from kdcompress.artifacts import Artifact, StudentArch
from kdcompress.console import info, progress, warn
from kdcompress.errors import ArtifactError, OutputExistsError, UsageError
from kdcompress.outputs import atomic_write_text
from kdcompress.search.controller import (
    Controller,
    Observation,
    make_controller,
    parse_controller,
)
from kdcompress.search.executor import (
    Executor,
    ExecutorName,
    LocalExecutor,
    RayExecutor,
    import_ray,
    parse_executor,
)
from kdcompress.search.proxy import ProxySettings
from kdcompress.search.reward import RewardSettings, reward
from kdcompress.space import SearchSpace

if TYPE_CHECKING:
    from kdcompress.latency.coverage import Coverage
    from kdcompress.latency.predictor import LatencyModel
    from kdcompress.models import ResolvedModel

SETTINGS_FILE = "search-settings.json"
CANDIDATES_FILE = "candidates.jsonl"
CONTROLLER_FILE = "controller.json"
RESULT_FILE = "search.json"
PLOT_FILE = "search.png"
DEFAULT_SPEEDUPS = (4.0, 7.0, 10.0)


@dataclasses.dataclass(frozen=True)
class SearchSettings(Artifact):
    kind = "search-settings"
    # 3: the proxy loss is 1 - proxy retrieval (2: L_HS without the embedding pair). A search
    # begun under another version scored its candidates differently, so resuming it is refused
    # rather than mixing two losses.
    schema_version = 3

    teacher: str
    target: str
    episodes: int
    candidates: int
    pool: int
    seed: int
    seq_len: int
    controller: str
    reward: RewardSettings
    proxy: ProxySettings
    space: SearchSpace
    budgets_ms: tuple[float, ...] = ()  # explicit budgets; empty: teacher latency / speedups
    speedups: tuple[float, ...] = DEFAULT_SPEEDUPS


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One evaluated architecture: a line of ``candidates.jsonl``."""

    episode: int
    arch: StudentArch
    arch_id: str
    latency_ms: float  # predicted by the profile's latency model
    proxy_loss: float
    reward: float
    wall_s: float


@dataclasses.dataclass(frozen=True)
class Recommendation:
    budget: str
    budget_ms: float
    arch: StudentArch | None
    latency_ms: float | None
    proxy_loss: float | None
    speedup: float | None


@dataclasses.dataclass(frozen=True)
class SearchResult(Artifact):
    kind = "search"

    settings: SearchSettings
    teacher_arch: StudentArch
    teacher_latency_ms: float
    ranked: tuple[Candidate, ...]
    pareto: tuple[Candidate, ...]
    recommendations: tuple[Recommendation, ...]
    wall_s: float


# ----------------------------------------------------------------------------- run directory


def _prepare_run_dir(
    output: Path, settings: SearchSettings, *, resume: bool, overwrite: bool
) -> None:
    settings_file = output / SETTINGS_FILE
    if resume:
        if not settings_file.is_file():
            raise UsageError(f"--resume {output}: not a search run directory (no {SETTINGS_FILE})")
        saved = SearchSettings.load(settings_file)
        if saved != settings:
            raise UsageError(
                f"--resume {output}: started with other settings ({_diff(saved, settings)})"
            )
        return
    if output.exists() and any(output.iterdir()):
        if not overwrite:
            raise OutputExistsError(
                f"{output} already exists; pass --resume to continue it or --overwrite"
            )
        for name in (SETTINGS_FILE, CANDIDATES_FILE, CONTROLLER_FILE, RESULT_FILE, PLOT_FILE):
            (output / name).unlink(missing_ok=True)
    settings.save(settings_file)


def _diff(saved: SearchSettings, asked: SearchSettings) -> str:
    fields = [
        f.name
        for f in dataclasses.fields(saved)
        if getattr(saved, f.name) != getattr(asked, f.name)
    ]
    return ", ".join(fields)


def read_candidates(path: Path) -> list[Candidate]:
    """Every complete line. A torn last line (a search killed while writing it) is dropped
    with a warning; the next ``append_candidate`` cuts it off the file."""
    if not path.is_file():
        return []
    complete, _, torn = path.read_bytes().rpartition(b"\n")
    if torn:
        warn(f"{path}: dropping a torn last line (the search was killed while writing it)")
    candidates = []
    for number, line in enumerate(complete.decode("utf-8", errors="replace").splitlines(), 1):
        try:
            data = json.loads(line)
            candidates.append(Candidate(**{**data, "arch": StudentArch(**data["arch"])}))
        except (json.JSONDecodeError, TypeError, KeyError):
            warn(f"{path}: ignoring malformed line {number}")
    return candidates


def append_candidate(path: Path, candidate: Candidate) -> None:
    """Append one line with a single write and fsync, so a kill loses at most this line.

    A torn last line left by a killed search is cut off first, so the new line starts a line
    of its own instead of being glued onto the fragment.
    """
    line = json.dumps(dataclasses.asdict(candidate)) + "\n"
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            os.ftruncate(fd, os.pread(fd, size, 0).rfind(b"\n") + 1)
        os.write(fd, line.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


def _save_controller(output: Path, controller: Controller, episodes_done: int) -> None:
    state = {"episodes_done": episodes_done, "state": controller.state()}
    atomic_write_text(output / CONTROLLER_FILE, json.dumps(state))


def _restore_controller(output: Path, controller: Controller, candidates: list[Candidate]) -> int:
    """Load the controller checkpoint and replay its history; returns finished episodes."""
    path = output / CONTROLLER_FILE
    if not path.is_file():
        return 0
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        done = int(data["episodes_done"])
        controller.load_state(data["state"])
    except (json.JSONDecodeError, KeyError, ValueError) as exc:
        raise ArtifactError(f"{path}: corrupt controller checkpoint ({exc})") from exc
    controller.history = [
        Observation(c.arch, c.reward, c.episode) for c in candidates if c.episode < done
    ]
    return done


# ----------------------------------------------------------------------------- episodes


def episode_rng(seed: int, episode: int) -> random.Random:
    """Each episode draws from its own seeded stream, so a resumed run makes the same choices."""
    return random.Random(seed * 1_000_003 + episode)


def sample_pool(
    space: SearchSpace,
    size: int,
    rng: random.Random,
    exclude: set[StudentArch],
    fits: Callable[[StudentArch], bool] = lambda _: True,
) -> list[StudentArch]:
    """Up to ``size`` distinct valid architectures not evaluated before, among those that
    ``fits`` (among all of them once none that fits is left)."""
    available = [a for a in space.architectures() if a not in exclude]
    available = [a for a in available if fits(a)] or available
    return rng.sample(available, min(size, len(available)))


def loosest_budget_ms(settings: SearchSettings, teacher_latency_ms: float) -> float:
    """The latency above which no budget can use a candidate."""
    return max(ms for _, ms in budgets(settings, teacher_latency_ms))


Predict = Callable[[StudentArch], float]


def run_episodes(
    *,
    settings: SearchSettings,
    output: Path,
    executor: Executor,
    latency_ms: Predict,
    teacher_latency_ms: float,
) -> list[Candidate]:
    """All episodes (continuing a partial run): select, proxy-distil, reward, learn.

    Pools hold only architectures predicted within the loosest budget: a proxy distillation
    of a student no budget can use would only teach the controller what it never recommends.
    """
    import torch

    ceiling = loosest_budget_ms(settings, teacher_latency_ms)
    fits = functools.cache(lambda arch: latency_ms(arch) <= ceiling)
    _say_fitting(settings.space, fits, ceiling)
    candidates = read_candidates(output / CANDIDATES_FILE)
    controller = make_controller(settings.controller, settings.space, settings.seed)
    start = _restore_controller(output, controller, candidates)
    total = settings.episodes * settings.candidates
    best = max((c.reward for c in candidates), default=float("nan"))
    with progress() as bar:
        task = bar.add_task("Search", total=total, completed=min(len(candidates), total))
        for episode in range(start, settings.episodes):
            rng = episode_rng(settings.seed, episode)
            seen = {c.arch for c in candidates if c.episode < episode}
            pool = sample_pool(settings.space, settings.pool, rng, seen, fits)
            chosen = controller.select(pool, settings.candidates, episode, rng)
            done_here = {c.arch: c for c in candidates if c.episode == episode}
            pending = [arch for arch in chosen if arch not in done_here]
            bar.update(
                task,
                description=f"episode {episode + 1}/{settings.episodes}, best reward {best:.4f}",
            )
            for arch, loss, wall_s in executor.run(pending):
                candidate = _candidate(
                    arch, episode, loss, wall_s, latency_ms, teacher_latency_ms, settings
                )
                append_candidate(output / CANDIDATES_FILE, candidate)
                candidates.append(candidate)
                done_here[arch] = candidate
                best = max(best, candidate.reward) if best == best else candidate.reward
                bar.update(
                    task,
                    advance=1,
                    description=(
                        f"episode {episode + 1}/{settings.episodes}, best reward {best:.4f}"
                    ),
                )
            # Observed in the order chosen, whichever finished first: the same seed gives the
            # same controller on every executor.
            observed = [Observation(a, done_here[a].reward, episode) for a in chosen]
            torch.manual_seed(settings.seed + episode)
            controller.observe(observed)
            _save_controller(output, controller, episode + 1)
    return candidates


def _say_fitting(space: SearchSpace, fits: Callable[[StudentArch], bool], ceiling: float) -> None:
    architectures = list(space.architectures())
    fitting = sum(map(fits, architectures))
    if fitting:
        info(
            f"search: {fitting} of {len(architectures)} architectures are predicted within the "
            f"loosest budget ({ceiling:.2f} ms); candidates come from those"
        )
    else:
        warn(f"no architecture of the space is predicted within {ceiling:.2f} ms: searching all")


def _candidate(
    arch: StudentArch,
    episode: int,
    loss: float,
    wall_s: float,
    latency_ms: Predict,
    teacher_latency_ms: float,
    settings: SearchSettings,
) -> Candidate:
    latency = latency_ms(arch)
    value = reward(
        proxy_loss=loss,
        latency_ms=latency,
        teacher_latency_ms=teacher_latency_ms,
        settings=settings.reward,
    )
    return Candidate(episode, arch, arch.arch_id, latency, loss, value, wall_s)


# ----------------------------------------------------------------------------- results


def pareto_front(candidates: list[Candidate]) -> list[Candidate]:
    """Candidates no other candidate beats on both latency and loss, fastest first."""
    front: list[Candidate] = []
    for candidate in sorted(candidates, key=lambda c: (c.latency_ms, c.proxy_loss)):
        if not front or candidate.proxy_loss < front[-1].proxy_loss:
            front.append(candidate)
    return front


def warn_loose_budgets(budgets_ms: tuple[float, ...], teacher_ms: float) -> None:
    """One line, before the search, for budgets the uncompressed teacher already meets."""
    loose = [f"{ms:g}" for ms in budgets_ms if ms >= teacher_ms]
    if loose:
        warn(
            f"--latency-budget-ms {', '.join(loose)}: at or above the teacher's own predicted "
            f"latency ({teacher_ms:.3g} ms), so no speedup is asked for; choose a budget below it"
        )


def budgets(settings: SearchSettings, teacher_latency_ms: float) -> list[tuple[str, float]]:
    if settings.budgets_ms:
        return [(f"{ms:g}ms", ms) for ms in settings.budgets_ms]
    return [(f"{s:g}x", teacher_latency_ms / s) for s in settings.speedups]


def recommend(
    candidates: list[Candidate], label: str, budget_ms: float, teacher_ms: float
) -> Recommendation:
    """The lowest-loss candidate within the latency budget (none if nothing fits)."""
    fitting = [c for c in candidates if c.latency_ms <= budget_ms]
    if not fitting:
        return Recommendation(label, budget_ms, None, None, None, None)
    best = min(fitting, key=lambda c: (c.proxy_loss, c.latency_ms))
    return Recommendation(
        label, budget_ms, best.arch, best.latency_ms, best.proxy_loss, teacher_ms / best.latency_ms
    )


def summarise(
    settings: SearchSettings,
    candidates: list[Candidate],
    teacher_arch: StudentArch,
    teacher_ms: float,
    wall_s: float,
) -> SearchResult:
    unique = list({c.arch_id: c for c in candidates}.values())
    recommendations = tuple(
        recommend(unique, label, ms, teacher_ms) for label, ms in budgets(settings, teacher_ms)
    )
    return SearchResult(
        settings=settings,
        teacher_arch=teacher_arch,
        teacher_latency_ms=teacher_ms,
        ranked=tuple(sorted(unique, key=lambda c: -c.reward)),
        pareto=tuple(pareto_front(unique)),
        recommendations=recommendations,
        wall_s=wall_s,
    )


def plot(result: SearchResult, path: Path) -> None:
    """Every candidate (loss vs predicted latency), the Pareto front and the teacher."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [c.latency_ms for c in result.ranked]
    ys = [c.proxy_loss for c in result.ranked]
    episodes = [c.episode for c in result.ranked]
    points = ax.scatter(xs, ys, c=episodes, cmap="viridis", s=28, label="candidates")
    fig.colorbar(points, ax=ax, label="episode")
    ax.plot(
        [c.latency_ms for c in result.pareto],
        [c.proxy_loss for c in result.pareto],
        "r-o",
        ms=4,
        label="Pareto front",
    )
    ax.axvline(
        result.teacher_latency_ms,
        color="k",
        ls="--",
        label=f"teacher ({result.teacher_latency_ms:.1f} ms)",
    )
    for rec in result.recommendations:
        ax.axvline(rec.budget_ms, color="grey", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel(f"predicted latency (ms, seq {result.settings.seq_len}, batch 1)")
    ax.set_ylabel("normalised hidden-state loss after proxy KD")
    ax.set_title("KD-NAS candidates")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def finish(output: Path, result: SearchResult) -> SearchResult:
    result.save(output / RESULT_FILE)
    plot(result, output / PLOT_FILE)
    info(f"[green]Search written[/] to {output / RESULT_FILE} and {output / PLOT_FILE}")
    return result


def check_coverage(coverage: Coverage, settings: SearchSettings) -> None:
    """Refuse, in one line, a space with architectures the profile has not measured."""
    archs = list(settings.space.architectures())
    off_grid = coverage.uncovered(archs, seq_len=settings.seq_len)
    if off_grid:
        coverage.require(
            off_grid[0],
            seq_len=settings.seq_len,
            what=f"{len(off_grid)} of the {len(archs)} architectures of the search space, e.g.",
            fix=(
                f"measure one with `kdcompress profile --teacher {settings.teacher}` (or narrow "
                "the space with --space)"
            ),
        )


def teacher_latency(
    coverage: Coverage, model: LatencyModel, teacher: StudentArch, settings: SearchSettings
) -> tuple[float, str]:
    """The teacher's latency and how it was had: the profile's timing of a teacher-shaped
    encoder, else a prediction from measured blocks; a teacher off the grid is refused."""
    seq_len = settings.seq_len
    measured = coverage.measured_ms(teacher, seq_len=seq_len)
    if measured is not None:
        return measured, "measured"
    plain = dataclasses.replace(teacher, activation="gelu")
    coverage.require(
        plain,
        seq_len=seq_len,
        what="the teacher",
        fix=(
            f"measure one with `kdcompress profile --teacher {settings.teacher}` "
            "(`kdcompress run` measures what it needs itself)"
        ),
    )
    return model.predict_ms(plain, seq_len=seq_len), "predicted"


def run_search(
    *,
    settings: SearchSettings,
    output: Path,
    resume: bool = False,
    overwrite: bool = False,
    strict: bool = False,
    executor_name: str = "local",
    ray_address: str | None = None,
    resolved_teacher: ResolvedModel | None = None,
) -> SearchResult:
    """Run (or resume) a KD-NAS search and write its artifacts into ``output``.

    ``resolved_teacher``: ``settings.teacher`` as the caller resolved it (else resolved here).

    ``executor_name`` ray runs each episode's proxy distillations as Ray tasks (a local Ray
    instance, or the cluster at ``ray_address``); the result is the same as local's.
    """
    from kdcompress.latency.coverage import Coverage
    from kdcompress.latency.predictor import LatencyModel
    from kdcompress.latency.schema import load_profile
    from kdcompress.models import resolved, teacher_arch

    parse_controller(settings.controller)  # an unknown name fails now, not after the teacher
    profile = load_profile(Path(settings.target), strict=strict)
    latency_model = LatencyModel.from_profile(profile)
    teacher_dir = resolved(resolved_teacher or settings.teacher).folder
    teacher = teacher_arch(teacher_dir)
    coverage = Coverage.of(profile)
    check_coverage(coverage, settings)  # fail now, not mid-search, if off-grid
    teacher_ms, how = teacher_latency(coverage, latency_model, teacher, settings)
    warn_loose_budgets(settings.budgets_ms, teacher_ms)
    use_ray = parse_executor(executor_name) is ExecutorName.RAY
    if use_ray:
        import_ray()  # a missing Ray fails before anything is written
    _prepare_run_dir(output, settings, resume=resume, overwrite=overwrite)
    info(f"teacher {teacher.describe()}: {teacher_ms:.2f} ms {how} on '{profile.name}'")
    started = time.perf_counter()
    candidates = run_episodes(
        settings=settings,
        output=output,
        executor=_executor(settings, output, teacher_dir, use_ray, ray_address),
        latency_ms=lambda arch: latency_model.predict_ms(arch, seq_len=settings.seq_len),
        teacher_latency_ms=teacher_ms,
    )
    result = summarise(settings, candidates, teacher, teacher_ms, time.perf_counter() - started)
    return finish(output, result)


def _executor(
    settings: SearchSettings,
    output: Path,
    teacher_dir: Path,
    use_ray: bool,
    ray_address: str | None,
) -> Executor:
    """What runs the episodes' proxy distillations: this process, or Ray tasks."""
    from kdcompress.search.proxy import ProxyEvaluator

    proxy = ProxyEvaluator(
        teacher_dir=teacher_dir,
        settings=settings.proxy,
        cache_path=output / "teacher-cache",
        seed=settings.seed,
    )
    if not use_ray:
        return LocalExecutor(proxy.proxy_loss)
    return RayExecutor(
        teacher_dir=teacher_dir,
        settings=settings.proxy,
        cache_path=output / "teacher-cache",
        seed=settings.seed,
        data=proxy.data,
        address=ray_address,
    )
