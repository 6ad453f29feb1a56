"""One contract, every backend: same outputs as PyTorch, sane latency numbers, clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from kdcompress import backends as registry
from kdcompress.backends import BackendName, LoadedModel, benchmark, get_backend
from kdcompress.encoding import load_tokenizer, synthetic_batch, tokenize
from kdcompress.errors import BackendUnavailableError, KDCompressError


class BackendContract:
    """Subclassed once per backend; every backend must pass every test here."""

    backend_name: ClassVar[BackendName]

    @pytest.fixture(scope="class")
    def artifact(self, tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
        out = tmp_path_factory.mktemp(f"export-{self.backend_name}")
        return get_backend(self.backend_name).export(model_dir=tiny_bert, output_dir=out)

    @pytest.fixture(scope="class")
    def loaded(self, artifact: Path) -> LoadedModel:
        return get_backend(self.backend_name).load(model_path=artifact, threads=1)

    def test_reports_name_and_version(self) -> None:
        backend = get_backend(self.backend_name)
        assert backend.name is self.backend_name
        assert backend.version()[0].isdigit()

    def test_outputs_match_pytorch(
        self, loaded: LoadedModel, tiny_bert: Path, sentences: list[str]
    ) -> None:
        batch = tokenize(load_tokenizer(tiny_bert), sentences)
        reference = get_backend("torch").load(model_path=tiny_bert, threads=1).run(batch)
        output = loaded.run(batch)
        assert output.shape == reference.shape == (len(sentences), batch["input_ids"].shape[1], 32)
        assert output.dtype == np.float32
        assert np.abs(output - reference).max() <= 1e-4

    def test_benchmark_returns_sane_numbers(self, loaded: LoadedModel) -> None:
        batch = synthetic_batch(vocab_size=40, batch=2, seq_len=16)
        stats = benchmark(loaded, batch, warmup=2, runs=7, min_time_s=0.0)
        assert 0 < stats.min_ms <= stats.p50_ms <= stats.p90_ms
        assert stats.min_ms <= stats.trimmed_mean_ms
        assert stats.p50_ms < 5_000  # a 2-layer, hidden-32 model: anything slower is broken
        assert (stats.runs, stats.warmup, stats.threads) == (7, 2, 1)

    def test_thread_count_is_explicit_and_recorded(self, artifact: Path) -> None:
        model = get_backend(self.backend_name).load(model_path=artifact, threads=2)
        assert model.threads == 2
        assert (
            benchmark(model, synthetic_batch(vocab_size=40, batch=1, seq_len=8), runs=3).threads
            == 2
        )

    def test_missing_artifact_is_a_clear_error(self, tmp_path: Path) -> None:
        with pytest.raises(KDCompressError, match=str(tmp_path)):
            get_backend(self.backend_name).load(model_path=tmp_path, threads=1)


class TestTorchBackend(BackendContract):
    backend_name = BackendName.TORCH


class TestOnnxRuntimeBackend(BackendContract):
    backend_name = BackendName.ONNXRUNTIME


class TestOpenVinoBackend(BackendContract):
    backend_name = BackendName.OPENVINO


def test_unknown_backend_names_the_choices() -> None:
    with pytest.raises(
        BackendUnavailableError, match="choose one of: torch, onnxruntime, openvino"
    ):
        get_backend("tensorrt")


def test_missing_library_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = registry.importlib.util.find_spec
    monkeypatch.setattr(
        registry.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "openvino" else real_find_spec(name, *a),
    )
    with pytest.raises(BackendUnavailableError, match="pip install 'openvino=="):
        get_backend("openvino")
    statuses = {s.name: s for s in registry.backend_statuses()}
    assert not statuses[BackendName.OPENVINO].available
    assert statuses[BackendName.ONNXRUNTIME].available


def test_corrupt_onnx_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(KDCompressError, match="ONNX Runtime cannot load"):
        get_backend("onnxruntime").load(model_path=tmp_path, threads=1)


def test_side_by_side_rounds_alternate_and_keep_every_rounds_p50(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Fake timings: the order of turns, the rounds kept, flags against the final baseline."""
    from kdcompress.artifacts import LatencyStats
    from kdcompress.backends import base

    # (model, round) -> (p50, reference before/after); the teacher's first turn ran on a
    # machine 30% slower than the fastest reference seen later, with clean counters
    plan = {
        ("teacher", 0): (13.0, (1.3, 1.3)),
        ("student", 0): (1.0, (1.3, 1.3)),
        ("student", 1): (1.1, (1.0, 1.0)),
        ("teacher", 1): (10.0, (1.0, 1.0)),
        ("teacher", 2): (10.5, (1.0, 1.02)),
        ("student", 2): (1.05, (1.0, 1.02)),
    }
    turns: list[str] = []

    def fake_benchmark(model: object, batch: object, **kwargs: object) -> LatencyStats:
        name = str(model)
        round_ = sum(t == name for t in turns)
        turns.append(name)
        p50, reference = plan[(name, round_)]
        stats = LatencyStats(p50, p50, p50, p50, 10, 1, 1, reference_ms=reference)
        probe = kwargs["probe"]
        assert isinstance(probe, base.SpeedProbe)
        probe.baseline_ms = min(probe.baseline_ms or 9.9, *reference)
        return stats.flagged()

    monkeypatch.setattr(base, "benchmark", fake_benchmark)
    models = {"teacher": "teacher", "student": "student"}
    result = base.compare_latency(models, {}, rounds=3, max_retries=0)  # type: ignore[arg-type]
    assert turns == ["teacher", "student", "student", "teacher", "teacher", "student"]
    assert result["teacher"].round_p50_ms == (13.0, 10.0, 10.5)
    assert result["student"].round_p50_ms == (1.0, 1.1, 1.05)
    # round 0 is disturbed against the final baseline (1.0): the median of the others is kept
    assert result["teacher"].p50_ms == 10.5 and not result["teacher"].disturbed
    assert base.round_order(["a", "b", "c"], 1) == ["c", "b", "a"]
