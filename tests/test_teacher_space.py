"""The search space follows the teacher; a profile says what it covers; run reuses what it can."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from test_profile import _stats, tiny_settings

from kdcompress.artifacts import StudentArch
from kdcompress.errors import ArtifactError, UsageError
from kdcompress.latency.coverage import Coverage, search_space_for
from kdcompress.latency.predictor import LatencyModel
from kdcompress.latency.schema import (
    BlockTiming,
    DeviceFingerprint,
    HardwareProfile,
    ModelTiming,
    read_profile,
)
from kdcompress.models import teacher_arch, teacher_shape
from kdcompress.profile import reuse, runner
from kdcompress.profile.measure import block_graphs, choose_architectures
from kdcompress.search.runner import SearchSettings, check_coverage, teacher_latency
from kdcompress.space import SearchSpace, teacher_space

ME5_SMALL = StudentArch(12, 384, 12, 1536)
BASE = StudentArch(12, 768, 12, 3072)
COMMITTED = Path(__file__).parent.parent / "profiles" / "amd-epyc-onnxruntime.json"


@pytest.mark.parametrize("teacher", [ME5_SMALL, BASE, StudentArch(2, 48, 4, 96)])
def test_the_space_reaches_the_teacher_with_its_head_size(teacher: StudentArch) -> None:
    space = teacher_space(teacher)
    head_size = teacher.hidden // teacher.heads
    archs = list(space.architectures())
    assert space.allows(teacher) and teacher in archs
    assert max(space.hidden) == teacher.hidden and 3 * min(space.hidden) >= teacher.hidden
    assert space.layers == tuple(range(1, teacher.layers + 1))
    assert 3 <= len(space.hidden) <= 6
    assert all(a.hidden // a.heads == head_size for a in archs)
    assert all(a.ffn <= teacher.ffn for a in archs)


def test_base_space_is_wider_than_the_built_in_one() -> None:
    assert teacher_space(BASE).hidden == (256, 384, 512, 640, 768)
    assert teacher_space(ME5_SMALL).hidden == SearchSpace().hidden
    with pytest.raises(UsageError, match="not divisible"):
        teacher_space(StudentArch(2, 50, 4, 100))


def test_max_head_size_narrows_the_heads() -> None:
    space = SearchSpace(hidden=(128,), heads=(2, 4), min_head_size=32, max_head_size=32)
    assert space.attention_shapes() == [(128, 4)]
    assert not space.allows(StudentArch(1, 128, 2, 128))


def test_teacher_shapes_of_every_family(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(
        json.dumps(
            {"model_type": "distilbert", "dim": 48, "n_layers": 2, "n_heads": 4, "hidden_dim": 96}
        )
    )
    assert teacher_arch(tmp_path) == StudentArch(2, 48, 4, 96)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    with pytest.raises(UsageError, match="cannot read the shape of a 'bert' model"):
        teacher_arch(tmp_path)
    # built-in teachers need no fetching to know their shape
    assert teacher_shape("mpnet-base") == BASE and teacher_shape("me5-small") == ME5_SMALL


def test_the_committed_profile_says_what_it_covers(capsys: pytest.CaptureFixture[str]) -> None:
    profile = read_profile(COMMITTED)
    coverage = Coverage.of(profile)
    assert "hidden 128-384" in coverage.describe() and "seq 32/128" in coverage.describe()
    assert coverage.covers(ME5_SMALL, seq_len=128)
    assert coverage.missing(BASE, seq_len=128)[0] == "embedding/h768/a0/f0/s128/b1"
    # me5-small's own space less the one width measured with other heads only
    space = search_space_for(ME5_SMALL, profile, seq_len=128, name="me5-small")
    assert space.hidden == (128, 192, 256, 384)
    assert "widths 320" in capsys.readouterr().err
    assert not coverage.uncovered(list(space.architectures()), seq_len=128)


def _settings(teacher: str, space: SearchSpace) -> SearchSettings:
    from kdcompress.search.proxy import ProxySettings
    from kdcompress.search.reward import RewardSettings

    return SearchSettings(
        teacher=teacher,
        target=str(COMMITTED),
        episodes=1,
        candidates=1,
        pool=1,
        seed=0,
        seq_len=128,
        controller="random",
        reward=RewardSettings(),
        proxy=ProxySettings(),
        space=space,
    )


def test_a_base_teacher_off_the_grid_is_refused_with_the_fix() -> None:
    profile = read_profile(COMMITTED)
    coverage, model = Coverage.of(profile), LatencyModel.from_profile(profile)
    settings = _settings("mpnet-base", teacher_space(BASE))
    with pytest.raises(ArtifactError, match=r"does not cover .* of the 240 architectures") as err:
        check_coverage(coverage, settings)
    assert "kdcompress profile --teacher mpnet-base" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(ArtifactError, match="does not cover the teacher") as err:
        teacher_latency(coverage, model, BASE, settings)
    assert "no embedding/h768" in str(err.value) and "hidden 128-384" in str(err.value)
    ms, how = teacher_latency(coverage, model, ME5_SMALL, _settings("me5-small", SearchSpace()))
    assert how == "predicted" and ms > 0


TINY_TEACHER = StudentArch(2, 32, 4, 64)


def _profile_of(settings: runner.ProfileSettings, name: str) -> HardwareProfile:
    """A profile of this machine for ``settings`` with made-up timings (nothing measured)."""
    blocks = tuple(
        BlockTiming(g.block, g.hidden, g.heads, g.ffn, s, 1, _stats(0.1 + g.hidden / 1000))
        for g in block_graphs(settings.space)
        for s in settings.seq_lens
    )
    models = tuple(
        ModelTiming(arch, s, 1, role, _stats(0.5 * arch.layers + arch.hidden / 100))
        for arch, role in choose_architectures(settings)
        for s in settings.seq_lens
    )
    return runner._finish(
        settings, name, runner.get_backend("torch").version(), [*blocks], [*models]
    )


def test_teacher_profile_times_the_teacher_and_is_reused_whole(tmp_path: Path) -> None:
    settings = tiny_settings(space=teacher_space(TINY_TEACHER), teacher=TINY_TEACHER)
    assert TINY_TEACHER in [arch for arch, _ in choose_architectures(settings)]
    path = _profile_of(settings, "tiny").save(tmp_path / "tiny.json")
    coverage = Coverage.of(HardwareProfile.load(path))
    assert coverage.measured_ms(TINY_TEACHER, seq_len=8) is not None
    assert reuse.find_matching_profile([path], settings) == path
    other_machine = dataclasses.replace(
        HardwareProfile.load(path),
        fingerprint=dataclasses.replace(DeviceFingerprint.current(), cpu="another CPU"),
    ).save(tmp_path / "elsewhere.json")
    assert reuse.find_matching_profile([other_machine], settings) is None


def test_a_wider_space_reuses_the_blocks_already_measured(tmp_path: Path) -> None:
    small = tiny_settings(space=teacher_space(TINY_TEACHER), teacher=TINY_TEACHER)
    path = _profile_of(small, "small").save(tmp_path / "small.json")
    wider_teacher = StudentArch(2, 48, 6, 96)  # the same head size: shares widths 16, 32
    wider = tiny_settings(space=teacher_space(wider_teacher), teacher=wider_teacher)
    assert reuse.find_matching_profile([path], wider) is None
    partial = tmp_path / "wide.json.partial"
    reused = reuse.seed_partial([path], wider, partial)
    seeded = runner.PartialProfile.load(partial)
    assert reused == len(seeded.blocks) + len(seeded.models) > 0
    shared = {(g.block, g.hidden) for g in block_graphs(wider.space)} & {
        (g.block, g.hidden) for g in block_graphs(small.space)
    }
    assert {(b.block, b.hidden) for b in seeded.blocks} <= shared
    assert seeded.settings == wider
    assert reuse.seed_partial([path], wider, partial) == 0  # a partial to resume is kept
