"""Hardware profile: schema, fingerprint check, latency fit, resume — offline and fast."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from kdcompress.artifacts import LatencyStats, StudentArch
from kdcompress.errors import ArtifactError, UsageError
from kdcompress.latency.predictor import BlockTable, LatencyModel, fit_latency_model
from kdcompress.latency.schema import (
    BlockTiming,
    DeviceFingerprint,
    HardwareProfile,
    ModelTiming,
    load_profile,
)
from kdcompress.profile import measure as measure_module
from kdcompress.profile import reuse, runner
from kdcompress.profile.measure import block_graphs, choose_architectures
from kdcompress.space import SearchSpace

TINY_SPACE = SearchSpace(layers=(1, 2), hidden=(32, 64), heads=(1, 2), ffn_ratio=(1, 2))


def _stats(ms: float) -> LatencyStats:
    return LatencyStats(ms, ms * 1.05, ms * 0.95, ms, 20, 5, 2, 0.0)


def tiny_settings(**changes: object) -> runner.ProfileSettings:
    settings = runner.make_settings(
        backend="torch",
        threads=1,
        seq_lens=(8,),
        space=dataclasses.replace(TINY_SPACE, min_head_size=16),
        fit_architectures=5,
        heldout_architectures=2,
    )
    changes = {"runs": 3, "warmup": 1, "rounds": 1, "retries": 0, "patience_s": 0.0, **changes}
    return dataclasses.replace(settings, **changes)  # type: ignore[arg-type]


def synthetic_profile(coefficients: dict[str, float]) -> tuple[BlockTable, list[ModelTiming]]:
    """Blocks with made-up latencies and encoders that follow a known additive model exactly."""
    space = SearchSpace()
    rng = np.random.default_rng(0)
    blocks = []
    for graph in block_graphs(space):
        ms = float(rng.uniform(0.1, 2.0))
        blocks.append(
            BlockTiming(graph.block, graph.hidden, graph.heads, graph.ffn, 128, 1, _stats(ms))
        )
    table = BlockTable(tuple(blocks))
    models = []
    for arch in list(space.architectures())[::7]:
        f = table.features(arch, 128, 1)
        ms = (
            coefficients["overhead"]
            + coefficients["embedding"] * f[1]
            + coefficients["attention"] * f[2]
            + coefficients["ffn"] * f[3]
            + coefficients["layers"] * f[4]
        )
        models.append(ModelTiming(arch, 128, 1, "fit", _stats(ms)))
    return table, models


def test_fit_recovers_a_known_additive_model() -> None:
    truth = {"overhead": 0.3, "embedding": 1.2, "attention": 1.1, "ffn": 0.9, "layers": -0.02}
    table, models = synthetic_profile(truth)
    fit = fit_latency_model(table, models)
    weights = np.array(fit.coefficients) / np.array(fit.scale)
    expected = [truth[k] for k in ("overhead", "embedding", "attention", "ffn", "layers")]
    assert np.allclose(weights, expected, atol=1e-6)
    model = LatencyModel(table, fit)
    for timing in models[:5]:
        predicted = model.predict_ms(timing.arch, seq_len=128)
        assert predicted == pytest.approx(timing.latency.p50_ms, rel=1e-6)


def test_no_prediction_falls_below_the_fastest_measured_share_of_its_blocks() -> None:
    """A line fitted with a negative constant runs below zero for small shapes (a quick
    profile of a base-sized teacher did so for its smallest students)."""
    truth = {"overhead": 0.3, "embedding": 1.2, "attention": 1.1, "ffn": 0.9, "layers": -0.02}
    table, models = synthetic_profile(truth)
    fit = fit_latency_model(table, models)
    negative = dataclasses.replace(fit, coefficients=(-50.0, *fit.coefficients[1:]))
    small = models[0].arch
    line = table.features(small, 128, 1) @ (np.array(negative.coefficients) / negative.scale)
    assert line < 0
    floored = LatencyModel(table, negative, models).predict_ms(small, seq_len=128)
    blocks = float(table.features(small, 128, 1)[1:4].sum())
    ratios = [m.latency.p50_ms / float(table.features(m.arch, 128, 1)[1:4].sum()) for m in models]
    assert floored == pytest.approx(min(ratios) * blocks)
    # where the line is above the floor, it is the prediction
    model = LatencyModel(table, fit, models)
    assert model.predict_ms(small, seq_len=128) == pytest.approx(models[0].latency.p50_ms)


def test_prediction_outside_the_grid_is_a_clear_error() -> None:
    table, models = synthetic_profile(
        {"overhead": 0, "embedding": 1, "attention": 1, "ffn": 1, "layers": 0}
    )
    model = LatencyModel(table, fit_latency_model(table, models))
    with pytest.raises(ArtifactError, match="outside the profiled grid"):
        model.predict_ms(StudentArch(2, 384, 12, 1536), seq_len=512)


def test_architectures_are_disjoint_deterministic_and_span_the_space() -> None:
    settings = runner.make_settings(backend="torch", threads=1, seq_lens=(128,), quick=True)
    chosen = choose_architectures(settings)
    assert chosen == choose_architectures(settings)
    fit = [a for a, role in chosen if role == "fit"]
    heldout = [a for a, role in chosen if role == "heldout"]
    assert (len(fit), len(heldout)) == (12, 12)
    assert not set(fit) & set(heldout)
    for group in (fit, heldout):
        assert {a.layers for a in group} >= {1, 6}
        assert {a.hidden for a in group} >= {128, 384}
    other_seed = choose_architectures(dataclasses.replace(settings, seed=1))
    assert other_seed != chosen


def test_profile_round_trip_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = tiny_settings()
    output = tmp_path / "tiny.json"
    real_measure = measure_module.measure
    calls = {"n": 0}

    def crash_after_five(*args: object, **kwargs: object) -> LatencyStats:
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return real_measure(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(measure_module, "measure", crash_after_five)
    with pytest.raises(KeyboardInterrupt):
        runner.run_profile(settings=settings, name="tiny", output=output)
    assert not output.exists()
    partial = runner.PartialProfile.load(runner.partial_path(output))
    assert len(partial.blocks) == 5

    monkeypatch.setattr(measure_module, "measure", real_measure)
    profile = runner.run_profile(settings=settings, name="tiny", output=output)
    graphs, archs = block_graphs(settings.space), choose_architectures(settings)
    assert len(profile.blocks) == len(graphs)  # the first five were not measured again
    assert len(profile.models) == len(archs)
    assert profile.blocks[:5] == partial.blocks
    assert not runner.partial_path(output).exists()
    assert not output.with_name(output.name + ".work").exists()
    assert HardwareProfile.load(output) == profile
    assert profile.error is not None and profile.error.heldout_architectures == 2
    assert LatencyModel.from_profile(profile).predict_ms(archs[0][0], seq_len=8) > 0


def test_existing_profile_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "p.json").write_text("{}")
    with pytest.raises(UsageError, match="--overwrite"):
        runner.run_profile(settings=tiny_settings(), name="p", output=tmp_path / "p.json")


@pytest.fixture
def saved_profile(tmp_path: Path) -> Path:
    table, models = synthetic_profile(
        {"overhead": 0.1, "embedding": 1, "attention": 1, "ffn": 1, "layers": 0}
    )
    profile = HardwareProfile(
        name="synthetic",
        created="2026-01-01T00:00:00+00:00",
        fingerprint=DeviceFingerprint.current(),
        backend_version=runner.get_backend("onnxruntime").version(),
        settings=runner.make_settings(backend="onnxruntime", seq_lens=(128,)),
        blocks=tuple(
            BlockTiming(g.block, g.hidden, g.heads, g.ffn, 128, 1, _stats(0.5))
            for g in block_graphs(SearchSpace())
        ),
        models=tuple(models),
        fit=fit_latency_model(table, models),
    )
    return profile.save(tmp_path / "synthetic.json")


def test_matching_profile_loads_quietly(
    saved_profile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert load_profile(saved_profile, strict=True).name == "synthetic"
    assert "measured elsewhere" not in capsys.readouterr().err


def test_foreign_machine_warns_or_fails_with_strict(
    saved_profile: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = json.loads(saved_profile.read_text())
    data["fingerprint"]["cpu"] = "Imaginary CPU 9000"
    data["fingerprint"]["isa"] = ["avx2", "avx512f", "amx_tile"]
    data["backend_version"] = "0.0.1"
    saved_profile.write_text(json.dumps(data))
    load_profile(saved_profile)
    err = capsys.readouterr().err
    assert "Imaginary CPU 9000" in err and "onnxruntime" in err and "amx_tile" in err
    with pytest.raises(ArtifactError, match="measured elsewhere"):
        load_profile(saved_profile, strict=True)


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "not valid JSON"), ('{"kind": "export"}', "holds a 'export' artifact")],
)
def test_malformed_or_foreign_profile_is_refused(
    tmp_path: Path, content: str, message: str
) -> None:
    (tmp_path / "p.json").write_text(content)
    with pytest.raises(ArtifactError, match=message):
        load_profile(tmp_path / "p.json")


def test_profile_differences_name_each_field(saved_profile: Path) -> None:
    profile = HardwareProfile.load(saved_profile)
    current = DeviceFingerprint.current()
    version = profile.backend_version
    same = runner.make_settings(backend="onnxruntime", seq_lens=(128,))
    assert reuse.profile_differences(profile, same, current, version) == []
    other = dataclasses.replace(
        same,
        threads=same.threads + 1,
        seq_lens=(32, 128),
        space=dataclasses.replace(same.space, hidden=(*same.space.hidden, 448)),
    )
    elsewhere = dataclasses.replace(current, cpu="Imaginary CPU 9000")
    why = reuse.profile_differences(profile, other, elsewhere, "0.0.1")
    assert f"threads: profile {same.threads} vs {same.threads + 1}" in why
    assert "onnxruntime version: profile " + version + " vs 0.0.1" in why
    assert any(w.startswith("cpu: profile") and "Imaginary CPU 9000" in w for w in why)
    assert "seq_lens: profile 128, lacks 32" in why
    wider = dataclasses.replace(other, seq_lens=(128,))
    assert any(
        w.startswith("search space: ")
        for w in reuse.profile_differences(profile, wider, current, version)
    )
    assert reuse.find_matching_profile([saved_profile], same) == saved_profile
    assert reuse.profile_candidates([saved_profile], other)[0][2]


def test_held_out_encoders_take_the_shipped_vocabularies_the_fit_keeps_its_own() -> None:
    settings = runner.make_settings(backend="torch", seq_lens=(128,), quick=True)
    assert settings.heldout_vocabs == (32_000, runner.SHIPPED_VOCAB)
    archs = choose_architectures(settings)
    vocab = measure_module.encoder_vocab
    assert {vocab(arch, role, settings) for arch, role in archs if role == "fit"} == {32_000}
    heldout = {vocab(arch, role, settings) for arch, role in archs if role == "heldout"}
    assert heldout == {32_000, runner.SHIPPED_VOCAB}  # both kinds are held out
    older = dataclasses.replace(settings, heldout_vocabs=())  # profiles written before
    assert {vocab(arch, role, older) for arch, role in archs} == {32_000}
