"""``kdcompress search``: KD-NAS against a hardware profile."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kdcompress.catalog import DEFAULT_TEACHER
from kdcompress.cli.app import app
from kdcompress.cli.options import (
    OverwriteOption,
    TeacherOption,
    check_positive,
    check_shapes,
    hold_output,
)
from kdcompress.errors import UsageError

if TYPE_CHECKING:
    from kdcompress.space import SearchSpace


@app.command()
def search(
    ctx: typer.Context,
    target: Annotated[
        Path | None, typer.Option(help="Hardware profile JSON (from `kdcompress profile`).")
    ] = None,
    output: Annotated[Path | None, typer.Option(help="Run directory for the search.")] = None,
    teacher: TeacherOption = DEFAULT_TEACHER,
    space: Annotated[
        Path | None,
        typer.Option(
            help="Search space JSON (default: the teacher's, within what the profile measured)."
        ),
    ] = None,
    episodes: Annotated[int, typer.Option(min=1, help="Search episodes.")] = 15,
    candidates: Annotated[
        int, typer.Option(min=1, help="Candidates proxy-distilled per episode.")
    ] = 8,
    pool: Annotated[
        int, typer.Option(min=1, help="Random architectures the controller ranks per episode.")
    ] = 100,
    proxy_size: Annotated[int, typer.Option(min=8, help="Proxy-split sentences.")] = 256,
    proxy_steps: Annotated[int, typer.Option(min=1, help="Distillation steps per candidate.")] = 60,
    alpha: Annotated[float, typer.Option(help="Latency exponent of the reward (< 0).")] = -0.06,
    beta: Annotated[
        float, typer.Option(help="Latency target as a fraction of the teacher's latency.")
    ] = 0.6,
    latency_budget_ms: Annotated[
        list[float] | None,
        typer.Option(
            "--latency-budget-ms",
            help="Latency budgets to recommend for (repeatable; default teacher/4, /7, /10).",
        ),
    ] = None,
    speedup: Annotated[
        list[float] | None,
        typer.Option(
            "--speedup",
            help="Speedups over the teacher to recommend for (repeatable; default 4, 7, 10). "
            "Candidates predicted slower than the loosest budget are never distilled.",
        ),
    ] = None,
    seq_len: Annotated[
        int, typer.Option(help="Sequence length the latency is predicted at.")
    ] = 128,
    controller: Annotated[str, typer.Option(help="lstm, random or evolution.")] = "lstm",
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same search.")] = 0,
    executor: Annotated[
        str,
        typer.Option(
            help="local, or ray: each episode's candidates as Ray tasks (pip install "
            "'kdcompress[ray]'); same results for the same seed."
        ),
    ] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster to join (e.g. ray://HEAD:10001 or auto); default: start a local "
            "Ray. The run directory must be on storage every node mounts."
        ),
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue the search in this run directory.")
    ] = None,
    strict: Annotated[
        bool, typer.Option(help="Refuse a profile measured on another machine.")
    ] = False,
    overwrite: OverwriteOption = False,
) -> None:
    """Run KD-NAS: propose students, distil the best briefly, learn, recommend per budget.

    Each episode ranks a pool of random valid architectures with the controller, distils the
    chosen candidates briefly on the proxy split and rewards them with
    (1 - L) * (latency / (beta * teacher latency)) ** alpha, latency from the profile, where
    1 - L is the candidate's cross-lingual retrieval on held-out proxy verses.
    A killed search continues with [bold]--resume RUN_DIR[/] (at most one candidate is lost).

    Example: [bold]kdcompress search --target profiles/xeon.json --output runs/s1[/]
    """
    from kdcompress.render import search_summary
    from kdcompress.search.controller import parse_controller
    from kdcompress.search.proxy import ProxySettings
    from kdcompress.search.reward import RewardSettings
    from kdcompress.search.runner import DEFAULT_SPEEDUPS, SETTINGS_FILE, SearchSettings, run_search

    executor_name = _check_options(alpha, beta, latency_budget_ms, executor, ray_address)
    for asked in speedup or ():
        if not (math.isfinite(asked) and asked > 1):
            raise UsageError(
                f"--speedup {asked:g}: must be above 1 (a student faster than the teacher)"
            )
    parse_controller(controller)  # an unknown name fails before the profile is read
    check_shapes([seq_len], None)
    if resume is not None:
        _refuse_settings_with_resume(ctx)
        settings, output = SearchSettings.load(resume / SETTINGS_FILE), resume
    else:
        output = _check_new_search(target, output)
        settings = SearchSettings(
            teacher=teacher,
            target=str(target),
            episodes=episodes,
            candidates=candidates,
            pool=pool,
            seed=seed,
            seq_len=seq_len,
            controller=controller,
            reward=RewardSettings(alpha=alpha, beta=beta),
            proxy=ProxySettings(sentences=proxy_size, steps=proxy_steps),
            space=_space(space, teacher, target, seq_len),
            budgets_ms=tuple(latency_budget_ms or ()),
            speedups=tuple(speedup or DEFAULT_SPEEDUPS),
        )
    hold_output(ctx, output)
    result = run_search(
        settings=settings,
        output=output,
        resume=resume is not None,
        overwrite=overwrite and resume is None,
        strict=strict,
        executor_name=executor_name,
        ray_address=ray_address,
    )
    search_summary(result)


def _check_options(
    alpha: float,
    beta: float,
    budgets_ms: list[float] | None,
    executor: str,
    ray_address: str | None,
) -> str:
    """Refuse impossible reward and executor options before any work; the executor's name."""
    from kdcompress.search.executor import parse_executor

    if not (math.isfinite(alpha) and alpha < 0):
        raise UsageError(f"--alpha {alpha:g}: must be below 0 (faster students earn more)")
    check_positive("--beta", beta)
    for budget_ms in budgets_ms or ():
        check_positive("--latency-budget-ms", budget_ms)
    executor_name = parse_executor(executor).value
    if ray_address is not None and executor_name != "ray":
        raise UsageError("--ray-address needs --executor ray")
    return executor_name


def _space(path: Path | None, teacher: str, target: Path | None, seq_len: int) -> SearchSpace:
    """The ``--space`` file, else the teacher's space within what the profile measured."""
    from kdcompress.latency.coverage import search_space_for
    from kdcompress.latency.schema import read_profile
    from kdcompress.models import teacher_shape
    from kdcompress.space import load_space

    if path is not None or target is None:
        return load_space(path)
    profile = read_profile(target)
    return search_space_for(teacher_shape(teacher), profile, seq_len=seq_len, name=teacher)


def _check_new_search(target: Path | None, output: Path | None) -> Path:
    """A new search needs an existing profile and an output; the output."""
    if target is None or output is None:
        raise UsageError("--target and --output are required (or --resume RUN_DIR)")
    if not target.is_file():
        raise UsageError(f"--target {target}: no such profile (make one with `kdcompress profile`)")
    return output


# What a resumed search may still choose: how it runs, not what it computes.
_RESUME_OPTIONS = {"resume", "strict", "executor", "ray_address", "overwrite"}


def _refuse_settings_with_resume(ctx: typer.Context) -> None:
    """A resumed search continues with its own settings; options that would change them are
    refused rather than silently ignored."""
    given = [
        f"--{name.replace('_', '-')}"
        for name in ctx.params
        if name not in _RESUME_OPTIONS
        and getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"
    ]
    if given:
        raise UsageError(
            f"--resume continues with the search's own settings; {', '.join(given)} would be "
            "ignored: leave them out (or start a new search)"
        )
