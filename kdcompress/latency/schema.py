"""The hardware profile file: what was measured, on what, and how well it predicts."""

from __future__ import annotations

import dataclasses
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from kdcompress.artifacts import Artifact, LatencyStats, StudentArch
from kdcompress.console import warn
from kdcompress.errors import ArtifactError
from kdcompress.hardware import cpu_model, isa_flags, memory_gib, physical_cores
from kdcompress.space import SearchSpace


@dataclasses.dataclass(frozen=True)
class DeviceFingerprint:
    """What identifies a machine for latency purposes."""

    cpu: str
    physical_cores: int
    logical_cpus: int
    isa: tuple[str, ...]
    memory_gib: float
    machine: str

    @classmethod
    def current(cls) -> DeviceFingerprint:
        import os

        return cls(
            cpu=cpu_model(),
            physical_cores=physical_cores(),
            logical_cpus=os.cpu_count() or 1,
            isa=tuple(isa_flags()),
            memory_gib=memory_gib(),
            machine=platform.machine(),
        )

    def differences(self, other: DeviceFingerprint) -> list[str]:
        """Human-readable fields that differ; memory within 10% counts as the same."""
        diffs = []
        for field in ("cpu", "physical_cores", "logical_cpus", "isa", "machine"):
            mine, theirs = getattr(self, field), getattr(other, field)
            if mine != theirs:
                diffs.append(f"{field}: profile {_show(mine)} vs this machine {_show(theirs)}")
        if abs(self.memory_gib - other.memory_gib) > 0.1 * max(self.memory_gib, 1.0):
            diffs.append(f"memory: profile {self.memory_gib} GiB vs {other.memory_gib} GiB")
        return diffs


def _show(value: object) -> str:
    return ",".join(value) if isinstance(value, tuple) else str(value)


@dataclasses.dataclass(frozen=True)
class BlockTiming:
    """Latency of one building block at one input shape."""

    block: str  # embedding | attention | ffn
    hidden: int
    heads: int  # 0 where it does not apply
    ffn: int  # 0 where it does not apply
    seq_len: int
    batch: int
    latency: LatencyStats
    round: int = 0  # measurement pass; each pass loads the graph afresh

    @property
    def key(self) -> str:
        return block_key(self.block, self.hidden, self.heads, self.ffn, self.seq_len, self.batch)


def block_key(block: str, hidden: int, heads: int, ffn: int, seq_len: int, batch: int) -> str:
    return f"{block}/h{hidden}/a{heads}/f{ffn}/s{seq_len}/b{batch}"


@dataclasses.dataclass(frozen=True)
class ModelTiming:
    """Latency of one whole encoder, used to fit (role 'fit') or to test (role 'heldout')."""

    arch: StudentArch
    seq_len: int
    batch: int
    role: str
    latency: LatencyStats
    round: int = 0

    @property
    def key(self) -> str:
        return f"model/{self.arch.arch_id}/s{self.seq_len}/b{self.batch}"

    def with_role(self, role: str) -> ModelTiming:
        return dataclasses.replace(self, role=role)


T = TypeVar("T", BlockTiming, ModelTiming)


def best_rounds(timings: Iterable[T]) -> list[T]:
    """One timing per key: the fastest undisturbed round (the fastest round if all were).

    Latency on a shared CPU drifts between sessions by more than it varies within one, and
    interference only ever adds time, so every point is measured in several passes and the
    fastest quiet pass stands for it.
    """
    by_key: dict[str, list[T]] = {}
    for timing in timings:
        by_key.setdefault(timing.key, []).append(timing)
    result = []
    for rounds in by_key.values():
        quiet = [t for t in rounds if not t.latency.disturbed] or rounds
        result.append(min(quiet, key=lambda t: t.latency.p50_ms))
    return result


@dataclasses.dataclass(frozen=True)
class LatencyFit:
    """Linear correction over per-block sums, with its feature normalisation stored inline."""

    features: tuple[str, ...]
    scale: tuple[float, ...]  # each feature is divided by its scale before the dot product
    coefficients: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class HeldOutPoint:
    arch: StudentArch
    seq_len: int
    batch: int
    measured_ms: float
    predicted_ms: float


@dataclasses.dataclass(frozen=True)
class PredictorError:
    """The latency model's own error on architectures it was not fitted on."""

    heldout_architectures: int
    mape: float  # mean absolute percentage error, in percent
    worst_ape: float  # worst absolute percentage error, in percent
    fit_mape: float
    points: tuple[HeldOutPoint, ...]
    # Encoders left out of the fit and the error because other processes used the CPU in
    # every pass that timed them (even after retries).
    disturbed_excluded: int = 0


@dataclasses.dataclass(frozen=True)
class ProfileSettings:
    """Everything that decides what is measured; a partial profile resumes only if equal."""

    backend: str
    threads: int
    seq_lens: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    vocab: int
    runs: int
    warmup: int
    fit_architectures: int
    heldout_architectures: int
    seed: int
    space: SearchSpace
    rounds: int = 3  # passes over the whole plan; each point's fastest quiet pass is used
    retries: int = 5  # re-measurements of a disturbed or noisy point within one pass
    patience_s: float = 2.0  # wait before each re-measurement, for a burst of load to pass
    # The teacher's shape: its encoder is timed too (role "teacher"), so the search divides by
    # a measured teacher latency. None: no teacher was named.
    teacher: StudentArch | None = None
    # Encoders are drawn from the cheapest share (by compute) of the space: where the search's
    # budgets (teacher / 4 and faster) put students. Blocks are measured for the whole space.
    encoder_share: float = 1.0
    # Vocabulary sizes of the held-out encoders, taken by architecture (empty: ``vocab``), so
    # the held-out error covers the trimmed vocabularies students ship with.
    heldout_vocabs: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class HardwareProfile(Artifact):
    """``profiles/NAME.json``: measurements of one machine + backend and the latency model."""

    kind = "hardware-profile"

    name: str
    created: str
    fingerprint: DeviceFingerprint
    backend_version: str
    settings: ProfileSettings
    blocks: tuple[BlockTiming, ...]
    models: tuple[ModelTiming, ...]
    fit: LatencyFit | None = None
    error: PredictorError | None = None
    noise: float = 0.0  # median relative spread (p90 - p50) / p50 over all measurements


def read_profile(path: Path) -> HardwareProfile:
    """Read a profile that holds a fitted latency model (no comparison with this machine): how
    an option naming one is checked before any work."""
    profile = HardwareProfile.load(path)
    if profile.fit is None:
        raise ArtifactError(f"{path}: the profile has no fitted latency model")
    return profile


def load_profile(path: Path, *, strict: bool = False) -> HardwareProfile:
    """Read a profile; warn (or, with ``strict``, fail) when it describes another machine."""
    profile = read_profile(path)
    from kdcompress.backends import get_backend

    differences = profile.fingerprint.differences(DeviceFingerprint.current())
    backend = get_backend(profile.settings.backend)
    if backend.version() != profile.backend_version:
        installed = backend.version()
        differences.append(f"{backend.name}: profile {profile.backend_version} vs {installed}")
    if differences:
        message = f"{path} was measured elsewhere: " + "; ".join(differences)
        if strict:
            raise ArtifactError(message)
        warn(message + " (predicted latencies may not hold here)")
    return profile
