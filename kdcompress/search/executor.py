"""Where the proxy distillations of an episode run: in this process, or as Ray tasks.

Both executors take the episode's pending architectures and yield ``(arch, hidden loss, wall
seconds)`` as each finishes, so the runner appends every finished candidate to
``candidates.jsonl`` at once and a killed search loses only what was in flight. The controller
observes the episode's results in the order it chose them, whichever finished first, so the
same seed gives the same search on either executor.

Ray tasks read the teacher cache the driver built, by path: on a cluster the run directory
must be on a filesystem every node mounts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from kdcompress.artifacts import StudentArch
from kdcompress.errors import BackendUnavailableError, KDCompressError, UsageError, parse_choice
from kdcompress.search.proxy import ProxyData, ProxySettings

Finished = tuple[StudentArch, float, float]  # architecture, hidden loss, wall seconds


class ExecutorName(StrEnum):
    LOCAL = "local"
    RAY = "ray"


def parse_executor(name: str) -> ExecutorName:
    return parse_choice(ExecutorName, name, what="executor")


class Executor(Protocol):
    def run(self, archs: Sequence[StudentArch]) -> Iterator[Finished]: ...


class LocalExecutor:
    """One candidate after the other, in this process."""

    def __init__(self, proxy_loss: Callable[[StudentArch], float]) -> None:
        self.proxy_loss = proxy_loss

    def run(self, archs: Sequence[StudentArch]) -> Iterator[Finished]:
        for arch in archs:
            started = time.perf_counter()
            loss = self.proxy_loss(arch)
            yield arch, loss, time.perf_counter() - started


def _proxy_loss(
    teacher_dir: str,
    settings: ProxySettings,
    cache_path: str,
    seed: int,
    data: ProxyData,
    arch: StudentArch,
) -> tuple[float, float]:
    """One proxy distillation inside a Ray worker; the teacher cache is opened, not rebuilt."""
    from kdcompress.search.proxy import ProxyEvaluator

    started = time.perf_counter()
    evaluator = ProxyEvaluator(
        teacher_dir=Path(teacher_dir),
        settings=settings,
        cache_path=Path(cache_path),
        seed=seed,
        data=data,
    )
    return evaluator.proxy_loss(arch), time.perf_counter() - started


class RayExecutor:
    """The episode's candidates as Ray tasks, one CPU each by default, collected as they end."""

    def __init__(
        self,
        *,
        teacher_dir: Path,
        settings: ProxySettings,
        cache_path: Path,
        seed: int,
        data: ProxyData,
        address: str | None = None,
        cpus_per_task: float = 1.0,
    ) -> None:
        ray = import_ray()
        if not ray.is_initialized():
            # Workers inherit this interpreter's environment; the dashboard is not needed.
            try:
                ray.init(
                    address=address,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = address or "a local instance"
                raise UsageError(f"cannot start or reach Ray ({where}): {exc}") from exc
        self.ray = ray
        self.task = ray.remote(num_cpus=cpus_per_task)(_proxy_loss)
        self.args = (str(teacher_dir), settings, str(cache_path), seed, data)

    def run(self, archs: Sequence[StudentArch]) -> Iterator[Finished]:
        pending: dict[Any, StudentArch] = {self.task.remote(*self.args, a): a for a in archs}
        while pending:
            done, _ = self.ray.wait(list(pending), num_returns=1)
            for ref in done:
                arch = pending.pop(ref)
                try:
                    loss, wall_s = self.ray.get(ref)
                except self.ray.exceptions.RayError as exc:
                    first = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
                    raise KDCompressError(
                        f"proxy distillation of {arch.describe()} failed on Ray: {first}"
                    ) from exc
                yield arch, float(loss), float(wall_s)


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise BackendUnavailableError(
            "--executor ray needs Ray: pip install 'kdcompress[ray]' (or ray==2.60.0)"
        ) from exc
    return ray
