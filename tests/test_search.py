"""KD-NAS search on a tiny space: reward, controllers, reproducibility, resume."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import tiny_proxy_data

from kdcompress.artifacts import StudentArch
from kdcompress.errors import UsageError
from kdcompress.search import runner
from kdcompress.search.controller import ControllerName, explore, make_controller, mutate
from kdcompress.search.executor import LocalExecutor
from kdcompress.search.proxy import ProxySettings
from kdcompress.search.reward import RewardSettings, reward
from kdcompress.space import SearchSpace

SPACE = SearchSpace(layers=(1, 2, 3, 4), hidden=(64, 128), heads=(1, 2), ffn_ratio=(1, 2, 4))


def test_reward_formula_by_hand() -> None:
    settings = RewardSettings(alpha=-0.06, beta=0.6)
    value = reward(proxy_loss=0.25, latency_ms=3.0, teacher_latency_ms=10.0, settings=settings)
    assert value == pytest.approx(0.75 * (3.0 / 6.0) ** -0.06)
    at_target = reward(proxy_loss=0.25, latency_ms=6.0, teacher_latency_ms=10.0, settings=settings)
    assert at_target == pytest.approx(0.75)
    faster = reward(proxy_loss=0.25, latency_ms=1.0, teacher_latency_ms=10.0, settings=settings)
    assert faster > value > at_target  # alpha < 0: being faster than the target pays
    assert reward(proxy_loss=1.7, latency_ms=1.0, teacher_latency_ms=10.0, settings=settings) == 0
    with pytest.raises(ValueError):
        reward(proxy_loss=0.1, latency_ms=0.0, teacher_latency_ms=1.0, settings=settings)


def fake_loss(arch: StudentArch) -> float:
    """Deeper and wider students copy the teacher better (a smooth, known landscape)."""
    return 1.0 - 0.8 * (arch.layers / 4) ** 0.5 * (arch.hidden / 128) ** 0.3 - 0.02 * arch.ffn / 512


def fake_latency(arch: StudentArch) -> float:
    return 0.2 + arch.layers * (arch.hidden**2 * 4 + 2 * arch.hidden * arch.ffn) / 1e5


def settings(controller: str = "lstm", seed: int = 0, episodes: int = 4) -> runner.SearchSettings:
    return runner.SearchSettings(
        teacher="tiny",
        target="tiny.json",
        episodes=episodes,
        candidates=3,
        pool=12,
        seed=seed,
        seq_len=8,
        controller=controller,
        reward=RewardSettings(),
        proxy=ProxySettings(sentences=8, steps=2),
        space=dataclasses.replace(SPACE, min_head_size=32),
    )


def run(tmp: Path, s: runner.SearchSettings, **kwargs: object) -> list[runner.Candidate]:
    runner._prepare_run_dir(tmp, s, resume=bool(kwargs.pop("resume", False)), overwrite=False)
    return runner.run_episodes(
        settings=s,
        output=tmp,
        executor=LocalExecutor(kwargs.pop("loss", fake_loss)),  # type: ignore[arg-type]
        latency_ms=fake_latency,
        teacher_latency_ms=fake_latency(StudentArch(4, 128, 2, 512)),
    )


@pytest.mark.parametrize("controller", list(ControllerName))
def test_same_seed_same_candidates(tmp_path: Path, controller: ControllerName) -> None:
    first = run(tmp_path / "a", settings(controller))
    second = run(tmp_path / "b", settings(controller))
    assert [c.arch_id for c in first] == [c.arch_id for c in second]
    assert len(first) == 4 * 3
    assert all(SPACE.allows(c.arch) or c.arch.hidden // c.arch.heads >= 32 for c in first)
    other = run(tmp_path / "c", settings(controller, seed=1))
    assert [c.arch_id for c in other] != [c.arch_id for c in first]


def test_resume_after_a_crash_gives_the_uninterrupted_result(tmp_path: Path) -> None:
    reference = run(tmp_path / "ref", settings())
    calls = {"n": 0}

    def crashing_loss(arch: StudentArch) -> float:
        calls["n"] += 1
        if calls["n"] == 8:  # dies in the middle of episode 3
            raise KeyboardInterrupt
        return fake_loss(arch)

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "run", settings(), loss=crashing_loss)
    partial = runner.read_candidates(tmp_path / "run" / runner.CANDIDATES_FILE)
    assert len(partial) == 7
    # A torn last line (killed during a write) must be ignored, not fatal.
    with (tmp_path / "run" / runner.CANDIDATES_FILE).open("a") as handle:
        handle.write('{"episode": 2, "arch": {"lay')
    resumed = run(tmp_path / "run", settings(), resume=True)
    assert [c.arch_id for c in resumed] == [c.arch_id for c in reference]
    assert [c.reward for c in resumed] == pytest.approx([c.reward for c in reference])


def test_resume_cuts_a_torn_last_line_before_appending(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reference = run(tmp_path / "ref", settings())
    log = tmp_path / "run" / runner.CANDIDATES_FILE
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "run", settings(), loss=_crash_at(8))
    complete = log.read_bytes()
    with log.open("a") as handle:  # what a search killed in the middle of a write leaves
        handle.write('{"episode": 2, "arch": {')
    resumed = run(tmp_path / "run", settings(), resume=True)
    assert " ".join(capsys.readouterr().err.split()).count("dropping a torn last line") == 1
    assert log.read_bytes().startswith(complete)  # the fragment is gone, nothing else is
    lines = log.read_text().splitlines()
    assert [json.loads(line)["arch_id"] for line in lines] == [c.arch_id for c in resumed]
    assert [c.arch_id for c in runner.read_candidates(log)] == [c.arch_id for c in reference]
    assert "torn" not in capsys.readouterr().err


def _crash_at(call: int) -> Callable[[StudentArch], float]:
    calls = {"n": 0}

    def crashing_loss(arch: StudentArch) -> float:
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return fake_loss(arch)

    return crashing_loss


def test_resume_with_other_settings_is_refused(tmp_path: Path) -> None:
    run(tmp_path, settings(episodes=1))
    with pytest.raises(UsageError, match="episodes"):
        runner._prepare_run_dir(tmp_path, settings(episodes=2), resume=True, overwrite=False)
    with pytest.raises(UsageError, match="--resume"):
        runner._prepare_run_dir(tmp_path, settings(), resume=False, overwrite=False)


def test_controllers_learn_something_on_a_smooth_landscape(tmp_path: Path) -> None:
    """Evolution and LSTM should not do worse than random on a landscape they can learn."""
    best = {}
    for name in ControllerName:
        rewards = [
            max(c.reward for c in run(tmp_path / f"{name}{s}", settings(name, s, 6)))
            for s in range(3)
        ]
        best[name] = sum(rewards) / len(rewards)
    assert best[ControllerName.EVOLUTION] >= best[ControllerName.RANDOM] - 0.02
    assert best[ControllerName.LSTM] >= best[ControllerName.RANDOM] - 0.02


def test_random_choices_give_every_width_an_equal_chance() -> None:
    # as in a latency budget: many narrow shapes fit, few of the teacher's width
    narrow = [StudentArch(layers, 128, 4, ffn) for layers in range(1, 10) for ffn in (128, 256)]
    wide = [StudentArch(1, 384, 12, 384)]
    rng = random.Random(0)
    picks = [explore(narrow + wide, 1, rng)[0].hidden for _ in range(2000)]
    assert 0.45 < picks.count(384) / len(picks) < 0.55  # uniform over shapes: 1 in 19
    chosen = explore(narrow + wide, 5, rng)
    assert len(set(chosen)) == 5 and set(explore(wide, 3, rng)) == set(wide)


def test_mutation_and_unknown_controller() -> None:
    rng = random.Random(0)
    space = dataclasses.replace(SPACE, min_head_size=32)
    arch = StudentArch(2, 128, 2, 256)
    for _ in range(50):
        child = mutate(arch, space, rng)
        assert child != arch and space.allows(child)
    with pytest.raises(UsageError, match="choose one of: lstm, random, evolution"):
        make_controller("bayes", space, 0)


def test_budgets_the_teacher_meets_are_one_warning(capsys: pytest.CaptureFixture[str]) -> None:
    runner.warn_loose_budgets((1.0, 5.0, 9.0), teacher_ms=5.0)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1
    assert (
        "--latency-budget-ms 5, 9: at or above the teacher's own predicted latency (5 ms)"
        in lines[0]
    )
    runner.warn_loose_budgets((1.0,), teacher_ms=5.0)
    assert capsys.readouterr().err == ""


def test_candidates_come_from_what_the_loosest_budget_can_use(tmp_path: Path) -> None:
    teacher_ms = fake_latency(StudentArch(4, 128, 2, 512))
    asked = dataclasses.replace(settings(episodes=2), speedups=(2.0, 3.0))
    found = run(tmp_path / "fits", asked)
    assert len(found) == 6 and all(c.latency_ms <= teacher_ms / 2 for c in found)
    assert runner.loosest_budget_ms(asked, teacher_ms) == teacher_ms / 2
    # a space with nothing that fast is searched whole (and recommends nothing)
    nothing = run(tmp_path / "none", dataclasses.replace(asked, speedups=(1e6,)))
    assert len(nothing) == 6


def test_pareto_front_and_budgets() -> None:
    def cand(latency: float, loss: float) -> runner.Candidate:
        arch = StudentArch(1, 64, 1, int(latency * 64))
        return runner.Candidate(0, arch, arch.arch_id, latency, loss, 1 - loss, 0.0)

    candidates = [cand(1, 0.9), cand(2, 0.5), cand(3, 0.6), cand(4, 0.2), cand(5, 0.3)]
    front = runner.pareto_front(candidates)
    assert [(c.latency_ms, c.proxy_loss) for c in front] == [(1, 0.9), (2, 0.5), (4, 0.2)]
    rec = runner.recommend(candidates, "x", 3.5, 10.0)
    assert rec.latency_ms == 2 and rec.speedup == 5.0
    assert runner.recommend(candidates, "x", 0.5, 10.0).arch is None


def tiny_search(
    tiny_xlmr: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> runner.SearchSettings:
    """Settings of a real (tiny) search: tiny teacher, its own profile, 16 proxy sentences."""
    from test_profile import tiny_settings

    from kdcompress.profile.runner import run_profile

    space = SearchSpace(
        layers=(1, 2), hidden=(16, 32), heads=(2, 4), ffn_ratio=(2,), min_head_size=8
    )
    profile_path = tmp_path / "tiny.json"
    tiny = tiny_settings(space=space, heldout_architectures=1)
    run_profile(settings=tiny, name="tiny", output=profile_path)
    data = tiny_proxy_data()
    monkeypatch.setattr("kdcompress.search.proxy.proxy_data", lambda s, seed: data)
    return dataclasses.replace(
        settings(episodes=2),
        teacher=str(tiny_xlmr),
        target=str(profile_path),
        space=space,
        proxy=ProxySettings(sentences=16, steps=2, batch_size=4, max_length=16),
        budgets_ms=(1e6, 1e-6),
    )


def test_search_end_to_end_on_a_tiny_teacher(
    tiny_xlmr: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s = tiny_search(tiny_xlmr, tmp_path, monkeypatch)
    result = runner.run_search(settings=s, output=tmp_path / "run")
    assert "--latency-budget-ms 1e+06: at or above the teacher's own" in capsys.readouterr().err
    assert len(result.ranked) == 6
    assert all(c.proxy_loss >= 0 and math.isfinite(c.reward) for c in result.ranked)
    assert result.recommendations[0].arch is not None
    assert result.recommendations[1].arch is None  # nothing is that fast
    saved = json.loads((tmp_path / "run" / runner.RESULT_FILE).read_text())
    assert saved["recommendations"][0]["arch"]["layers"] in (1, 2)
    assert (tmp_path / "run" / runner.PLOT_FILE).stat().st_size > 1000


def test_a_candidate_whose_distillation_diverges_scores_worst_and_the_search_goes_on(
    tiny_xlmr: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = tiny_search(tiny_xlmr, tmp_path, monkeypatch)
    s = dataclasses.replace(s, proxy=dataclasses.replace(s.proxy, lr=1e30))
    result = runner.run_search(settings=s, output=tmp_path / "run")
    assert len(result.ranked) == 6
    assert {c.proxy_loss for c in result.ranked} == {1.0}


def test_ray_executor_gives_the_local_result(
    tiny_xlmr: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ray = pytest.importorskip("ray")
    s = tiny_search(tiny_xlmr, tmp_path, monkeypatch)
    local = runner.run_search(settings=s, output=tmp_path / "local")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        on_ray = runner.run_search(settings=s, output=tmp_path / "ray", executor_name="ray")
    finally:
        ray.shutdown()

    def by_candidate(result: runner.SearchResult) -> dict[tuple[int, str], float]:
        return {(c.episode, c.arch_id): c.proxy_loss for c in result.ranked}

    expected, got = by_candidate(local), by_candidate(on_ray)
    assert set(got) == set(expected) and len(got) == 6
    for key, loss in expected.items():
        assert got[key] == pytest.approx(loss, rel=1e-4)
    assert [r.arch for r in on_ray.recommendations] == [r.arch for r in local.recommendations]


def test_unknown_executor_is_a_usage_error(tmp_path: Path) -> None:
    from kdcompress.search.executor import parse_executor

    with pytest.raises(UsageError, match="choose one of: local, ray"):
        parse_executor("dask")
