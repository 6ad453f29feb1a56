"""Validation against a teacher (size, memory, quality, retention) and the int8 quality gate.

The evaluation data are the tiny fakes of test_evaluate, so the suite runs in seconds.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from test_quality import SETTINGS, cache, fake_cache  # noqa: F401 - fixtures used by name
from test_quantize import fake_sentences, options

from kdcompress.artifacts import ValidationReport
from kdcompress.backends.onnxruntime_int8 import OnnxRuntimeInt8
from kdcompress.errors import ArtifactError
from kdcompress.export import ExportFormat, export_model, teacher_export
from kdcompress.memory import measure_memory
from kdcompress.quantize import Int8ParityError, Quantization
from kdcompress.validate import validate_export


@pytest.fixture
def quick_suite(monkeypatch: pytest.MonkeyPatch, cache: Path) -> Path:  # noqa: F811
    monkeypatch.setattr("kdcompress.quality.quick_settings", lambda: SETTINGS)
    monkeypatch.setattr("kdcompress.corpus.iter_sentences", fake_sentences)
    return cache


def _scramble(path: Path) -> None:
    """Break a model without breaking its graph: shuffle the values of every weight tensor."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        values = numpy_helper.to_array(init)
        if values.size > 16:
            shuffled = rng.permutation(values.ravel()).reshape(values.shape)
            init.CopyFrom(numpy_helper.from_array(shuffled, init.name))
    onnx.save(model, str(path))


def test_quality_gate_rejects_a_broken_int8_model_and_writes_nothing(
    quick_suite: Path, tiny_xlmr: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = OnnxRuntimeInt8.quantize

    def broken(self: object, static: object, target: Path, *args: object) -> None:
        real(self, static, target, *args)  # type: ignore[arg-type]
        _scramble(target)

    monkeypatch.setattr(OnnxRuntimeInt8, "quantize", broken)
    # Parity alone would let it through (gate -1): only the quality gate can catch it.
    gated = options(Quantization.DYNAMIC, min_int8_cosine=-1.0, max_quality_drop=5.0)
    with pytest.raises(Int8ParityError, match=r"quality drop \d+\.\d% .*gate 5%"):
        export_model(
            model=str(tiny_xlmr), fmt=ExportFormat.ONNX, output=tmp_path / "o", quantize=gated
        )
    assert list(tmp_path.iterdir()) == []


def test_quality_gate_keeps_a_sound_int8_model_and_records_the_drop(
    quick_suite: Path, tiny_xlmr: Path, tmp_path: Path
) -> None:
    gated = options(Quantization.DYNAMIC, max_quality_drop=20.0, speed_check=False)
    manifest = export_model(
        model=str(tiny_xlmr), fmt=ExportFormat.ONNX, output=tmp_path / "o", quantize=gated
    )
    assert manifest.int8 is not None
    accepted = [a for a in manifest.int8.attempts if a.accepted]
    assert len(accepted) == 1 and accepted[0].quality is not None
    quality = accepted[0].quality
    assert set(quality.fp32_scores) == {"retrieval", "imdb", "zh-inews"}
    assert quality.passed and quality.drop_pct <= 20.0


def test_validation_against_a_teacher_reports_size_memory_and_quality(
    quick_suite: Path, tiny_xlmr: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "student"
    export_model(
        model=str(tiny_xlmr),
        fmt=ExportFormat.ONNX,
        output=out,
        threads=1,
        quantize=options(Quantization.DYNAMIC, speed_check=False),
    )
    kwargs = {"seq_lens": (8, 16), "batch_sizes": (1, 4), "threads": 1, "runs": 3, "rounds": 1}
    # The teacher is named as a model: exported to the same runtime once, into the cache.
    teacher = teacher_export(str(tiny_xlmr), "onnxruntime", 1)
    report = validate_export(export_dir=out, teacher=teacher, quality="quick", **kwargs)
    assert {m.name for m in report.models} == {"teacher", "student-fp32", "student-int8"}
    assert {r.model for r in report.latency} == {"teacher", "student-fp32", "student-int8"}
    assert {(r.batch, r.seq_len) for r in report.latency} == {(1, 8), (1, 16), (4, 8), (4, 16)}
    teacher, fp32, int8 = (report.summary(n) for n in ("teacher", "student-fp32", "student-int8"))
    assert teacher and fp32 and int8
    assert int8.size_bytes < fp32.size_bytes == teacher.size_bytes  # the same model, fp32
    for model in (teacher, fp32, int8):
        assert model.memory is not None and model.memory.peak_mib > model.memory.runtime_mib > 0
        assert set(model.scores) == {"retrieval", "imdb", "zh-inews"}
    # The "student" here is the teacher itself: a retention that is not 100% would be a bug.
    assert fp32.retention == pytest.approx(1.0, abs=1e-9)
    assert int8.retention is not None and int8.retention > 0
    assert report.fp32_parity is not None and report.fp32_parity.passed
    assert ValidationReport.load(out / "validation.json") == report
    markdown = (out / "validation.md").read_text()
    assert "| student-int8 | dynamic |" in markdown and "speedup vs teacher" in markdown

    def fail(**_: object) -> None:
        raise AssertionError("the cached teacher export or an evaluation was redone")

    # Validating again re-measures latency and memory, but neither re-exports the teacher nor
    # re-scores a file that was scored since it was last written.
    monkeypatch.setattr("kdcompress.export.export_model", fail)
    monkeypatch.setattr("kdcompress.quality.run_eval", fail)
    teacher = teacher_export(str(tiny_xlmr), "onnxruntime", 1)
    again = validate_export(export_dir=out, teacher=teacher, quality="quick", **kwargs)
    assert again.teacher_export == report.teacher_export
    assert [m.scores for m in again.models] == [m.scores for m in report.models]


def test_memory_probe_of_a_corrupt_model_is_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"\x00garbage")
    with pytest.raises(ArtifactError, match=r"measuring the memory of .*model\.onnx failed"):
        measure_memory(
            backend="onnxruntime", model_path=broken, seq_len=8, threads=1, vocab_size=10
        )


def test_summary_uses_the_smallest_batch_measured() -> None:
    from kdcompress.artifacts import LatencyRow, LatencyStats, ModelSummary, ParityReport
    from kdcompress.summaries import validation_summary

    def row(model: str, ms: float) -> LatencyRow:
        stats = LatencyStats(ms, ms * 1.1, ms * 0.9, ms, runs=10, warmup=2, threads=1)
        return LatencyRow(model, "onnxruntime", 8, 128, stats)

    report = ValidationReport(
        export_dir="x",
        parity=ParityReport(10, 0.0, 1.0, 1.0, 0.999),
        latency=(row("teacher", 80.0), row("student-fp32", 10.0)),
        cpu="cpu",
        threads=1,
        teacher_export="t",
        models=(
            ModelSummary("teacher", "onnxruntime", "t.onnx", "none", 100),
            ModelSummary("student-fp32", "onnxruntime", "s.onnx", "none", 10),
        ),
    )
    header, rows = validation_summary(report)
    assert "p50 ms seq 128" in header and "speedup vs teacher" in header
    student = dict(zip(header, rows[1], strict=True))
    assert student["p50 ms seq 128"] == "10.00" and student["speedup vs teacher"] == "8.00x"


def test_latency_table_shows_tail_percentiles_and_std() -> None:
    from kdcompress.artifacts import LatencyRow, LatencyStats, ParityReport
    from kdcompress.summaries import validation_markdown
    from kdcompress.timing import summarise

    new = summarise(np.array([1.0, 2.0, 3.0, 4.0]), warmup=1, threads=1)
    old = LatencyStats(2.0, 3.0, 1.0, 2.0, runs=4, warmup=1, threads=1)  # before p95/p99/std
    report = ValidationReport(
        export_dir="x",
        parity=ParityReport(10, 0.0, 1.0, 1.0, 0.999),
        latency=(
            LatencyRow("student-fp32", "onnxruntime", 1, 8, new),
            LatencyRow("student-pytorch", "torch", 1, 8, old),
        ),
        cpu="cpu",
        threads=1,
    )
    lines = validation_markdown(report)
    assert any("| p95 ms | p99 ms | std ms |" in line for line in lines)
    assert (
        "| student-fp32 | 1 | 8 | 2.50 | 3.70 | 3.85 | 3.97 | 1.29 | 1.00 | 4 |  |  |  |" in lines
    )
    assert "| student-pytorch | 1 | 8 | 2.00 | 3.00 |  |  |  | 1.00 | 4 |  |  |  |" in lines


def _side_by_side_report(**changes: object) -> ValidationReport:
    from kdcompress.artifacts import (
        LatencyRow,
        LatencyStats,
        ModelSummary,
        ParityReport,
        PredictedLatency,
    )

    def row(model: str, rounds: tuple[float, ...], **fields: object) -> LatencyRow:
        ms = sorted(rounds)[len(rounds) // 2]
        stats = LatencyStats(ms, ms, ms, ms, 10, 1, 2, round_p50_ms=rounds, **fields)  # type: ignore[arg-type]
        return LatencyRow(model, "onnxruntime", 1, 128, stats.flagged())

    report = ValidationReport(
        export_dir="x",
        parity=ParityReport(10, 0.0, 1.0, 1.0, 0.999),
        latency=(
            row("teacher", (20.0, 16.0, 17.0), foreign_load=0.0, steal=0.09),
            row("student-fp32", (2.0, 2.0, 2.5), reference_ms=(1.0, 1.25)),
        ),
        cpu="cpu",
        threads=2,
        teacher_export="t",
        models=(
            ModelSummary("teacher", "onnxruntime", "t.onnx", "none", 100),
            ModelSummary("student-fp32", "onnxruntime", "s.onnx", "none", 10),
        ),
        predicted=(
            PredictedLatency(1, 128, 15.24, "teacher", 17.0),
            PredictedLatency(1, 128, 2.06, "student-fp32", 2.0),
        ),
    )
    return dataclasses.replace(report, **changes)  # type: ignore[arg-type]


def test_speedup_has_its_spread_over_the_rounds() -> None:
    from kdcompress.summaries import validation_markdown

    report = _side_by_side_report()
    assert report.speedup_rounds(1, 128, "student-fp32") == [10.0, 8.0, 6.8]
    lines = validation_markdown(report)
    # the median of the rounds' own ratios, not 17.0 / 2.0 from the medians of different rounds
    assert report.speedup(1, 128, "student-fp32") == 8.0
    assert any("| 8.00x (6.80-10.00) |" in line for line in lines)
    assert any(line.startswith("| teacher | none |") and "| 1.00x |" in line for line in lines)


def test_every_prediction_is_reported_and_a_miss_over_10_percent_flagged() -> None:
    from kdcompress.summaries import prediction_lines

    lines = prediction_lines(_side_by_side_report())
    assert lines == [
        "Profile prediction for teacher at batch 1, seq 128: 15.24 ms, measured 17.00 ms "
        "(-10%): **off by more than 10%**.",
        "Profile prediction for student-fp32 at batch 1, seq 128: 2.06 ms, measured 2.00 ms (+3%).",
    ]


def test_predictions_of_older_files_are_the_students_with_the_measurement_looked_up() -> None:
    from kdcompress.artifacts import PredictedLatency

    old = {"batch": 1, "seq_len": 128, "predicted_ms": 1.5}
    report = _side_by_side_report(predicted=(_load(PredictedLatency, old),))
    (pred,) = report.predictions()
    assert (pred.model, pred.measured_ms) == ("student-fp32", 2.0)
    assert pred.off  # 1.5 / 2.0: 25% low


def _load(tp: type, data: dict[str, object]) -> object:
    from kdcompress.artifacts import _from_jsonable

    return _from_jsonable(tp, data, "test")


def test_disturbed_timings_say_why_in_the_table() -> None:
    from kdcompress.summaries import validation_markdown

    lines = validation_markdown(_side_by_side_report())
    teacher = next(line for line in lines if line.startswith("| teacher | 1 | 128 | 17.00"))
    assert teacher.endswith("| 0% | 9% |  **disturbed** (steal 9%) |")
    student = next(line for line in lines if line.startswith("| student-fp32 | 1 | 128 | 2.00"))
    assert student.endswith("|  |  | +25% **disturbed** (reference kernel +25%) |")
    assert any("2 of 2 timings were disturbed" in line for line in lines)


def test_the_teacher_is_predicted_by_the_profiles_own_timing_of_its_shape(tiny_xlmr: Path) -> None:
    """As in the search: a profile that timed a teacher-shaped encoder gives that timing for
    the teacher; a student of the same shape still gets the block model's prediction."""
    from kdcompress import validate

    class Blocks:
        def predict_ms(self, arch: object, *, seq_len: int, batch: int) -> float:
            return 1.0

    class Profiled:
        def measured_ms(self, arch: object, *, seq_len: int, batch: int = 1) -> float | None:
            return 5.0 if seq_len == 16 else None

    subject = validate._Subject(
        manifest=None,  # type: ignore[arg-type]
        source_dir=tiny_xlmr,
        files={},
        quantization={},
        teacher_dir=None,
        teacher_source=tiny_xlmr,
        vocab=100,
        seq_lens=(8, 16),
    )
    found = validate._predicted((Blocks(), Profiled()), subject, (1,), [])  # type: ignore[arg-type]
    assert {(p.model, p.seq_len): (p.predicted_ms, p.how) for p in found} == {
        ("teacher", 8): (1.0, "predicted"),
        ("teacher", 16): (5.0, "profiled"),
        ("student-fp32", 8): (1.0, "predicted"),
        ("student-fp32", 16): (1.0, "predicted"),
    }
