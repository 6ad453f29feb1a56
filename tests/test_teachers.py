"""``kdcompress run`` end to end on a tiny random-init teacher of every family the README
promises, each narrower than the built-in space: the space, the profile and the search follow
the teacher."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from conftest import build_tiny_of_type, tiny_proxy_data
from test_pipeline import fake_sentences
from test_quality import SETTINGS, cache, fake_cache  # noqa: F401 - fixtures used by name

from kdcompress import pipeline
from kdcompress.artifacts import StudentArch
from kdcompress.latency.coverage import Coverage
from kdcompress.latency.schema import HardwareProfile
from kdcompress.models import teacher_arch
from kdcompress.profile import runner
from kdcompress.search.runner import SearchResult
from kdcompress.space import SearchSpace, teacher_space

# 48 wide (4 heads of 12), 2 layers: outside the built-in space (128-384 wide, heads of 32+).
SHAPE = StudentArch(2, 48, 4, 96)
BERT_KEYS = {"hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4}
FAMILIES = {
    "bert": {**BERT_KEYS, "intermediate_size": 96},
    "roberta": {**BERT_KEYS, "intermediate_size": 96},
    "xlm-roberta": {**BERT_KEYS, "intermediate_size": 96},
    "distilbert": {"dim": 48, "n_layers": 2, "n_heads": 4, "hidden_dim": 96},
    "mpnet": {**BERT_KEYS, "intermediate_size": 96},
}


def light(settings: runner.ProfileSettings) -> runner.ProfileSettings:
    """A quick profile's plan, with few calls per point: tiny blocks time in microseconds."""
    return dataclasses.replace(
        settings,
        runs=3,
        warmup=1,
        rounds=1,
        retries=0,
        patience_s=0.0,
        fit_architectures=5,
        heldout_architectures=1,
    )


@pytest.fixture
def light_run(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Every stage of a quick run at its smallest; the evaluation data are test_quality's."""
    request.getfixturevalue("cache")
    make_settings = runner.make_settings
    monkeypatch.setattr(runner, "make_settings", lambda **kw: light(make_settings(**kw)))
    monkeypatch.setattr("kdcompress.corpus.iter_sentences", fake_sentences)
    monkeypatch.setattr("kdcompress.quality.quick_settings", lambda: SETTINGS)
    data = tiny_proxy_data()
    monkeypatch.setattr("kdcompress.search.proxy.proxy_data", lambda s, seed: data)
    plan = dataclasses.replace(
        pipeline.PLANS[pipeline.Budget.QUICK],
        episodes=1,
        candidates=2,
        proxy_sentences=16,
        proxy_steps=2,
        distill_sentences=64,
        distill_steps=4,
        target_speedup=1.0,
    )
    monkeypatch.setitem(pipeline.PLANS, pipeline.Budget.QUICK, plan)
    # Tiny encoders cost mostly per-call overhead: no student is 4x faster than its teacher.
    monkeypatch.setattr("kdcompress.search.runner.DEFAULT_SPEEDUPS", (1.0,))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the runs start: its ``profiles/`` gets the first run's profile for the others."""
    folder = tmp_path_factory.mktemp("teachers")
    (folder / "profiles").mkdir()
    return folder


def _teacher(family: str, folder: Path, tiny_bert: Path, tiny_xlmr: Path) -> Path:
    tokenizer = tiny_xlmr if family in ("roberta", "xlm-roberta") else tiny_bert
    return build_tiny_of_type(tokenizer, folder, family, **FAMILIES[family])


@pytest.mark.parametrize("family", list(FAMILIES))
def test_run_on_a_tiny_teacher_of_each_family(
    family: str,
    tiny_bert: Path,
    tiny_xlmr: Path,
    workdir: Path,
    light_run: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(workdir)
    teacher = _teacher(family, workdir / f"teacher-{family}", tiny_bert, tiny_xlmr)
    assert teacher_arch(teacher) == dataclasses.replace(SHAPE, activation=_act(teacher))
    output = workdir / f"run-{family}"
    measured_before = sorted((workdir / "profiles").glob("*.json"))
    report = pipeline.run_pipeline(
        pipeline.RunSettings(str(teacher), "onnxruntime"), output, threads=1, seq_lens=(8,)
    )
    said = "".join(capsys.readouterr())
    assert ("reusing profiles" in said) == bool(measured_before)

    profile = HardwareProfile.load(output / "profile.json")
    space = teacher_space(SHAPE)
    assert space.hidden == (24, 36, 48) and not set(space.hidden) & set(SearchSpace().hidden)
    coverage = Coverage.of(profile)
    assert not coverage.uncovered(list(space.architectures()), seq_len=128)
    search = SearchResult.load(output / "search" / "search.json")
    assert search.settings.space == space
    assert search.teacher_latency_ms == coverage.measured_ms(SHAPE, seq_len=128)
    assert all(space.allows(c.arch) for c in search.ranked)
    assert {r.model for r in report.latency} == {"student-fp32", "student-int8", "teacher"}
    assert report.speedup(1, 8) is not None and report.speedup(1, 8) > 0
    assert (output / "report.md").is_file()
    if not measured_before:  # the next families reuse this one
        shutil.copy2(output / "profile.json", workdir / "profiles" / "tiny.json")


def _act(folder: Path) -> str:
    import json

    config = json.loads((folder / "config.json").read_text())
    return str(config.get("hidden_act", config.get("activation", "gelu")))
