"""``kdcompress report``: the page built from a run directory's artifacts (synthetic, fast)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pytest

from kdcompress.artifacts import (
    Int8Attempt,
    Int8Settings,
    Int8SpeedCheck,
    LatencyRow,
    ModelSummary,
    ParityReport,
    QualityDrop,
    QuantizationReport,
    ValidationReport,
)
from kdcompress.latency.schema import (
    DeviceFingerprint,
    HardwareProfile,
    PredictorError,
    ProfileSettings,
)
from kdcompress.report import build_markdown, write_report
from kdcompress.space import SearchSpace
from kdcompress.timing import summarise

PARITY = ParityReport(10, 0.01, 0.999, 0.9995, 0.98)
FAILED = ParityReport(10, 0.3, 0.95, 0.97, 0.98)


def _row(model: str, ms: float, seq_len: int = 128) -> LatencyRow:
    stats = summarise(np.array([ms * 0.95, ms, ms * 1.05]), warmup=1, threads=2)
    return LatencyRow(model, "onnxruntime", 1, seq_len, stats)


def _validation(disturbed: bool = False) -> ValidationReport:
    scores = {"retrieval": 0.7, "imdb": 0.6}
    return ValidationReport(
        export_dir="runs/r/export-onnx",
        parity=ParityReport(10, 0.01, 0.97, 0.99, 0.98),  # fails its gate: shown as **fail**
        latency=(
            _row("teacher", 55.0),
            _row("student-fp32", 6.5),
            _row("student-int8", 3.4),
            _row("student-int8", 1.0, seq_len=32),
        ),
        cpu="AMD EPYC",
        threads=2,
        teacher_export="runs/r/teacher-export-onnx",
        models=(
            ModelSummary("teacher", "onnxruntime", "t.onnx", "none", 400, scores=scores),
            ModelSummary("student-fp32", "onnxruntime", "s.onnx", "none", 90, retention=0.79),
            ModelSummary("student-int8", "onnxruntime", "q.onnx", "dynamic", 24, retention=0.78),
        ),
        eval_suite="quick",
    )


def _settings(mode: str, keep: tuple[str, ...] = ()) -> Int8Settings:
    return Int8Settings(
        mode,
        f"onnxruntime.quantize_{mode}",
        "avx512-vnni",
        "QDQ",
        "int8",
        "uint8",
        True,
        "8-bit",
        "bert",
        keep_fp32=keep,
    )


def _quantization() -> QuantizationReport:
    speed = Int8SpeedCheck(1, 128, _row("fp32", 6.5).latency, _row("int8", 3.4).latency)
    drop = QualityDrop({"imdb": 0.60}, {"imdb": 0.50}, max_drop_pct=2.0)
    return QuantizationReport(
        requested="static",
        settings=_settings("dynamic"),
        attempts=(
            Int8Attempt(_settings("static"), FAILED, False),
            Int8Attempt(
                _settings("static", ("embeddings", "layer 0")), PARITY, False, drop.describe(), drop
            ),
            Int8Attempt(_settings("dynamic"), PARITY, True),
        ),
        isa=("avx2", "avx512f", "avx512_vnni"),
        fp32_bytes=90 * 2**20,
        int8_bytes=24 * 2**20,
        fallback="static lost parity",
        speed=speed,
    )


def _profile() -> HardwareProfile:
    settings = ProfileSettings(
        "onnxruntime", 2, (32, 128), (1,), 32000, 40, 10, 24, 24, 0, SearchSpace()
    )
    fingerprint = DeviceFingerprint("AMD EPYC", 2, 2, ("avx2", "avx512f"), 8.0, "x86_64")
    error = PredictorError(24, mape=7.5, worst_ape=21.0, fit_mape=4.2, points=())
    return HardwareProfile(
        "mine", "2025-01-01", fingerprint, "1.32.0", settings, (), (), error=error
    )


def _run_dir(tmp_path: Path) -> Path:
    from kdcompress.artifacts import ExportManifest

    run = tmp_path / "r"
    (run / "export-onnx").mkdir(parents=True)
    _validation().save(run / "export-onnx" / "validation.json")
    manifest = ExportManifest(
        "onnx",
        "onnxruntime",
        "1.32.0",
        "student",
        "onnx/m.onnx",
        "dynamic",
        PARITY,
        int8=_quantization(),
    )
    manifest.save(run / "export-onnx" / "export.json")
    _profile().save(run / "profile.json")
    return run


def test_markdown_has_profile_error_int8_attempts_and_the_plot(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    markdown = build_markdown(run)
    assert "## Hardware profile" in markdown
    assert "**MAPE 7.5%**, worst 21.0%" in markdown and "24 held-out architectures" in markdown
    assert markdown.index("## Hardware profile") < markdown.index("## Validation")
    assert "| static | onnxruntime.quantize_static | int8, 8-bit | 0.95000 |" in markdown
    assert "(embeddings, layer 0 in fp32)" in markdown and "| 16.7% |" in markdown
    assert "| deployed |" in markdown and "Fallback: static lost parity." in markdown
    assert "fp32 6.50 ms, int8 3.40 ms p50 (1.91x)" in markdown
    assert "![quality against measured latency](quality-latency-export-onnx.png)" in markdown
    png = (run / "quality-latency-export-onnx.png").read_bytes()
    assert png.startswith(b"\x89PNG")


def test_html_renders_markdown_and_inlines_every_image(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    html_path, _ = write_report(run)
    page = html_path.read_text()
    body = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    for literal in ("**", "`", "| ---", "|---", "![", "&lt;", "&amp;lt;"):
        assert literal not in body, literal
    assert "<strong>fail</strong>" in body and "<strong>MAPE 7.5%</strong>" in body
    assert "<code>runs/r/export-onnx</code>" in body and "<h2>Hardware profile</h2>" in body
    assert body.count("<table>") >= 3 and "<th>min cosine</th>" in body
    images = re.findall(r'<img src="([^"]+)"', page)
    assert images and all(src.startswith("data:image/png;base64,") for src in images)
    png = base64.b64decode(images[0].split(",", 1)[1])
    assert png == (run / "quality-latency-export-onnx.png").read_bytes()


def test_no_plot_without_quality_scores(tmp_path: Path) -> None:
    import dataclasses

    run = tmp_path / "r"
    (run / "export-onnx").mkdir(parents=True)
    report = dataclasses.replace(_validation(), models=(), eval_suite="none")
    report.save(run / "export-onnx" / "validation.json")
    markdown = build_markdown(run)
    assert "quality against measured latency" not in markdown
    assert "## Hardware profile" not in markdown and "int8 attempts" not in markdown


def test_the_teachers_reference_frontier_is_drawn_at_this_runs_latency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kdcompress import report
    from kdcompress.artifacts import Frontier, FrontierPoint

    run = _run_dir(tmp_path)
    assert "reference frontier" not in build_markdown(run)  # no distill.json: teacher unknown
    points = (FrontierPoint("student-7x", "2L", 7.5, 0.91), FrontierPoint("m2v", "m", 500, 0.6))
    frontier = Frontier("me5-small", "AMD EPYC", "full", "ONNX Runtime fp32", 1, 128, points)
    monkeypatch.setattr(report, "reference_frontier", lambda teacher: frontier)
    markdown = build_markdown(run)
    assert "Grey: the reference frontier of me5-small (full suite, measured on AMD EPYC" in markdown
    assert (run / "quality-latency-export-onnx.png").read_bytes().startswith(b"\x89PNG")


def test_reference_frontiers_are_found_by_teacher_name() -> None:
    from kdcompress.report import reference_frontier

    assert reference_frontier(None) is None and reference_frontier("no-such-teacher") is None
    shipped = reference_frontier("me5-small")
    assert shipped is not None and shipped.teacher == "me5-small" and shipped.suite == "full"
    assert all(p.speedup > 0 and 0 < p.retention <= 1.2 for p in shipped.points)
