"""Reusing measured profiles: whole when one covers what is asked, else their measurements.

A profile is reusable on the machine, runtime version, thread count and vocabulary it was
measured with. One that covers every block shape of the asked space (and the teacher) at the
asked input shapes is used as it is; otherwise the block and encoder timings the asked profile
shares with earlier ones seed its partial file, so profiling measures only what is missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from kdcompress.backends import get_backend
from kdcompress.console import info
from kdcompress.errors import ArtifactError
from kdcompress.latency.coverage import arch_blocks
from kdcompress.latency.schema import (
    BlockTiming,
    DeviceFingerprint,
    HardwareProfile,
    ModelTiming,
    ProfileSettings,
)
from kdcompress.profile.measure import block_graphs, choose_architectures, model_keys
from kdcompress.profile.runner import PartialProfile


def profile_differences(
    profile: HardwareProfile, settings: ProfileSettings, current: DeviceFingerprint, version: str
) -> list[str]:
    """Why ``profile`` cannot stand for ``settings`` on this machine (runtime ``version``), one
    entry a field, e.g. ``threads: profile 4 vs 2``; empty: it can."""
    return machine_differences(profile, settings, current, version) + coverage_differences(
        profile, settings
    )


def machine_differences(
    profile: HardwareProfile, settings: ProfileSettings, current: DeviceFingerprint, version: str
) -> list[str]:
    """How the machine, runtime and measuring settings of ``profile`` differ from these."""
    theirs = profile.settings
    why = [] if profile.fit is not None else ["fit: the profile has no fitted latency model"]
    for field in ("backend", "threads", "vocab"):
        if getattr(theirs, field) != getattr(settings, field):
            why.append(f"{field}: profile {getattr(theirs, field)} vs {getattr(settings, field)}")
    if profile.backend_version != version:
        why.append(f"{theirs.backend} version: profile {profile.backend_version} vs {version}")
    return why + profile.fingerprint.differences(current)


def coverage_differences(profile: HardwareProfile, settings: ProfileSettings) -> list[str]:
    """What of ``settings``' sequence lengths and block shapes (teacher's too) it lacks."""
    why = []
    missing_lens = sorted(set(settings.seq_lens) - set(profile.settings.seq_lens))
    if missing_lens:
        have, lacks = (", ".join(map(str, v)) for v in (profile.settings.seq_lens, missing_lens))
        why.append(f"seq_lens: profile {have}, lacks {lacks}")
    missing = sorted(needed_blocks(settings) - {b.key for b in profile.blocks})
    if missing and not missing_lens:
        why.append(f"search space: {len(missing)} block shapes not measured, e.g. {missing[0]}")
    return why


def profile_candidates(
    paths: list[Path], settings: ProfileSettings
) -> list[tuple[Path, HardwareProfile, list[str]]]:
    """Every readable profile among ``paths`` with why it cannot stand for ``settings`` here."""
    current = DeviceFingerprint.current()
    version = get_backend(settings.backend).version()
    found = []
    for path in paths:
        try:
            profile = HardwareProfile.load(path)
        except ArtifactError:
            continue
        found.append((path, profile, profile_differences(profile, settings, current, version)))
    return found


def same_machine_profiles(
    paths: list[Path], settings: ProfileSettings
) -> Iterator[tuple[Path, HardwareProfile]]:
    """The fitted profiles among ``paths`` measured like ``settings`` on this very machine."""
    current = DeviceFingerprint.current()
    version = get_backend(settings.backend).version()
    for path, profile, _ in profile_candidates(paths, settings):
        if not machine_differences(profile, settings, current, version):
            yield path, profile


def needed_blocks(settings: ProfileSettings) -> set[str]:
    """Every block key a profile of ``settings`` must hold (the teacher's included)."""
    graphs = block_graphs(settings.space)
    keys = {key.partition("#")[0] for graph in graphs for key in graph.keys(settings, 0)}
    if settings.teacher is not None:
        for seq_len in settings.seq_lens:
            for batch in settings.batch_sizes:
                keys.update(arch_blocks(settings.teacher, seq_len, batch))
    return keys


def find_matching_profile(paths: list[Path], settings: ProfileSettings) -> Path | None:
    """A profile among ``paths`` measured on this machine and runtime that covers every block
    shape of ``settings``' space (and teacher) at its sequence lengths and batch sizes."""
    return next((path for path, _, why in profile_candidates(paths, settings) if not why), None)


def seed_partial(paths: list[Path], settings: ProfileSettings, partial: Path) -> int:
    """Write ``partial`` with the timings of ``paths``' profiles that ``settings`` asks for
    (unless a partial file is there to resume); the number of timings reused."""
    if partial.exists():
        return 0
    rounds = range(settings.rounds)
    graphs = block_graphs(settings.space)
    wanted_blocks = {key for graph in graphs for r in rounds for key in graph.keys(settings, r)}
    roles = dict(choose_architectures(settings))
    wanted_models = {key for arch in roles for r in rounds for key in model_keys(arch, settings, r)}
    blocks: dict[str, BlockTiming] = {}
    models: dict[str, ModelTiming] = {}
    for _, profile in same_machine_profiles(paths, settings):
        for block in profile.blocks:
            blocks.setdefault(f"{block.key}#{block.round}", block)
        for model in profile.models:
            if model.arch in roles:
                models.setdefault(f"{model.key}#{model.round}", model.with_role(roles[model.arch]))
    kept_blocks = [b for k, b in blocks.items() if k in wanted_blocks]
    kept_models = [m for k, m in models.items() if k in wanted_models]
    if kept_blocks or kept_models:
        PartialProfile(settings, tuple(kept_blocks), tuple(kept_models)).save(partial)
        info(
            f"profile: reusing {len(kept_blocks)} block and {len(kept_models)} encoder timings "
            "of this machine; measuring the rest"
        )
    return len(kept_blocks) + len(kept_models)
