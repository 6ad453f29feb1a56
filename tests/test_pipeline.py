"""``kdcompress run`` on a tiny teacher: every stage runs once, then resumes."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_profile import tiny_settings
from test_quality import SETTINGS, cache, fake_cache  # noqa: F401 - fixtures used by name

from kdcompress import pipeline
from kdcompress.artifacts import StudentArch
from kdcompress.errors import UsageError
from kdcompress.profile.runner import run_profile
from kdcompress.quality import EvalReport
from kdcompress.search import runner as search_runner
from kdcompress.space import SearchSpace

TINY_ARCH = StudentArch(1, 32, 4, 64)


def fake_sentences(split: str, languages: object, *, seed: int, limit: int | None) -> Iterator[str]:
    words = ["hello", "world", "bonjour", "monde", "the", "small", "student", "model"]
    for i in range(limit or 64):
        yield " ".join(words[(i + j) % len(words)] for j in range(3 + i % 5))


@pytest.fixture
def prepared_run(
    tiny_xlmr: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Path:
    """A run directory whose profile and search are done (tiny space), so the test is fast;
    the evaluation data are the tiny fakes of test_evaluate."""
    request.getfixturevalue("cache")
    monkeypatch.setattr("kdcompress.corpus.iter_sentences", fake_sentences)
    monkeypatch.setattr("kdcompress.quality.quick_settings", lambda: SETTINGS)
    monkeypatch.setitem(
        pipeline.PLANS,
        pipeline.Budget.QUICK,
        dataclasses.replace(
            pipeline.PLANS[pipeline.Budget.QUICK], distill_sentences=64, distill_steps=4
        ),
    )
    space = SearchSpace(
        layers=(1, 2), hidden=(16, 32), heads=(2, 4), ffn_ratio=(2,), min_head_size=8
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run_profile(
        settings=tiny_settings(
            space=space, fit_architectures=4, heldout_architectures=1, seq_lens=(8, 16)
        ),
        name="tiny",
        output=run_dir / "profile.json",
    )
    candidate = search_runner.Candidate(0, TINY_ARCH, TINY_ARCH.arch_id, 0.1, 0.5, 0.5, 1.0)
    result = search_runner.SearchResult(
        settings=search_runner.SearchSettings(
            teacher=str(tiny_xlmr),
            target=str(run_dir / "profile.json"),
            episodes=1,
            candidates=1,
            pool=1,
            seed=0,
            seq_len=8,
            controller="random",
            reward=search_runner.RewardSettings(),
            proxy=search_runner.ProxySettings(),
            space=space,
        ),
        teacher_arch=StudentArch(2, 32, 4, 64),
        teacher_latency_ms=1.0,
        ranked=(candidate,),
        pareto=(candidate,),
        recommendations=(search_runner.Recommendation("7x", 0.2, TINY_ARCH, 0.1, 0.5, 10.0),),
        wall_s=1.0,
    )
    (run_dir / "search").mkdir()
    result.save(run_dir / "search" / search_runner.RESULT_FILE)
    return run_dir


def test_run_continues_from_finished_stages_then_resumes(
    prepared_run: Path, tiny_xlmr: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = pipeline.RunSettings(str(tiny_xlmr), "onnxruntime")
    report = pipeline.run_pipeline(asked, prepared_run, threads=1, seq_lens=(8, 16))
    assert (prepared_run / "student" / "distill.json").is_file()
    assert report.teacher_export is not None
    assert report.speedup(1, 16) is not None and report.speedup(1, 16) > 0
    assert {r.model for r in report.latency} == {"student-fp32", "student-int8", "teacher"}
    # the profile predicts the teacher too, each next to the p50 measured
    predicted = {(p.model, p.seq_len): p for p in report.predicted}
    assert set(predicted) == {(m, s) for m in ("teacher", "student-fp32") for s in (8, 16)}
    assert all(p.measured_ms == report.p50(p.model, 1, p.seq_len) for p in predicted.values())
    assert "Profile prediction for teacher at batch 1, seq 16" in markdown_of(prepared_run)
    int8 = report.summary("student-int8")
    assert int8 is not None and int8.quantization == "dynamic" and int8.retention is not None
    student_eval = EvalReport.load(Path(int8.eval_report or ""))
    assert student_eval.retention is not None and student_eval.retention.overall is not None
    assert (prepared_run / "teacher-export-onnx" / "eval-quick.json").is_file()
    page = (prepared_run / "report.html").read_text()
    assert "data:image/png;base64," in page and "<table>" in page and "Distillation" in page
    markdown = (prepared_run / "report.md").read_text()
    assert "| student-int8 | dynamic |" in markdown and "retention" in markdown

    def fail(*_: object, **__: object) -> None:
        raise AssertionError("a finished stage ran again")

    for name in ("run_profile", "export_model", "validate_export"):
        monkeypatch.setattr(pipeline, name, fail, raising=False)
    monkeypatch.setattr("kdcompress.search.runner.run_search", fail)
    monkeypatch.setattr("kdcompress.distill.run_distill", fail)
    monkeypatch.setattr("kdcompress.quality.run_eval", fail)
    assert pipeline.run_pipeline(asked, prepared_run, threads=1, seq_lens=(8, 16)) == report


class _Stop(Exception):
    pass


def test_a_space_file_narrows_the_profile_and_the_search(
    tiny_xlmr: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    narrow = SearchSpace(layers=(1,), hidden=(32,), heads=(4,), ffn_ratio=(2,), min_head_size=8)
    narrow.save(tmp_path / "space.json")
    seen: dict[str, SearchSpace] = {}

    def profile_stage(run_dir: Path, *args: object) -> Path:
        seen["profile"] = args[-1]  # type: ignore[assignment]
        return run_dir / "profile.json"

    def search_stage(*args: object) -> Path:
        seen["search"] = args[-1]  # type: ignore[assignment]
        raise _Stop

    monkeypatch.setattr(pipeline, "profile_stage", profile_stage)
    monkeypatch.setattr(pipeline, "search_stage", search_stage)
    asked = pipeline.RunSettings(str(tiny_xlmr), "onnxruntime", space=str(tmp_path / "space.json"))
    with pytest.raises(_Stop):
        pipeline.run_pipeline(asked, tmp_path / "run")
    assert seen == {"profile": narrow, "search": narrow}
    with pytest.raises(UsageError, match="--space"):  # the folder's stages were for that space
        pipeline.run_pipeline(dataclasses.replace(asked, space=""), tmp_path / "run")


def markdown_of(run_dir: Path) -> str:
    return (run_dir / "report.md").read_text()


def test_a_profile_not_reused_says_which_field_differs(tmp_path: Path) -> None:
    reason = pipeline.no_profile_reason(
        [
            (tmp_path / "a.json", ["threads: profile 4 vs 2", "cpu: profile X vs this machine Y"]),
            (tmp_path / "b.json", ["onnxruntime version: profile 1.20.0 vs 1.22.0"]),
        ]
    )
    assert "b.json" in reason and "onnxruntime version: profile 1.20.0 vs 1.22.0" in reason
    assert "a.json" not in reason
    assert pipeline.no_profile_reason([]) == "no profile in profiles/ yet"


def test_unknown_budget_and_torch_backend_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown budget"):
        pipeline.run_pipeline(pipeline.RunSettings("x", "onnxruntime", "huge"), tmp_path)
    with pytest.raises(UsageError, match="needs no export"):
        pipeline.run_pipeline(pipeline.RunSettings("x", "torch"), tmp_path)


def test_a_missing_teacher_is_refused_before_the_profile(tmp_path: Path) -> None:
    from kdcompress.errors import ModelNotFoundError

    output = tmp_path / "run"
    with pytest.raises(ModelNotFoundError, match="no such folder"):
        pipeline.run_pipeline(pipeline.RunSettings(str(tmp_path / "nope"), "onnxruntime"), output)
    assert not output.exists()


def test_an_export_made_with_other_quantization_is_redone(
    tiny_xlmr: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kdcompress.export import ExportFormat
    from kdcompress.quantize import Quantization, QuantizeOptions

    out = tmp_path / "export-onnx"
    pipeline.export_stage(str(tiny_xlmr), out, ExportFormat.ONNX, 1)  # fp32 only
    calls: list[object] = []
    monkeypatch.setattr(pipeline, "export_model", lambda **kw: calls.append(kw["quantize"]))
    pipeline.export_stage(str(tiny_xlmr), out, ExportFormat.ONNX, 1)
    assert calls == []  # same request: done earlier
    dynamic = QuantizeOptions(mode=Quantization.DYNAMIC)
    pipeline.export_stage(str(tiny_xlmr), out, ExportFormat.ONNX, 1, dynamic)
    assert calls == [dynamic]  # the run now asks for int8: exported again


def test_a_run_directory_refuses_to_resume_with_other_settings(tmp_path: Path) -> None:
    settings = pipeline.RunSettings("me5-small", "onnxruntime", "quick", 0)
    pipeline.claim_run_dir(tmp_path / "run", settings)
    pipeline.claim_run_dir(tmp_path / "run", settings)  # the same settings: it resumes
    other = dataclasses.replace(settings, teacher="minilm-l6", seed=7)
    with pytest.raises(UsageError, match=r"--teacher me5-small \(now minilm-l6\), --seed 0"):
        pipeline.claim_run_dir(tmp_path / "run", other)
    assert pipeline.RunSettings.load(tmp_path / "run" / "run.json") == settings


def test_domain_text_reaches_the_distillation_and_binds_the_run_directory(
    prepared_run: Path, tiny_xlmr: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kdcompress.general import DOMAIN_SHARE

    reviews = tmp_path / "reviews.txt"
    reviews.write_text("The plot was thin but the acting carried it.\nA refund, please.\n")
    jobs: list[object] = []

    def distill(job: object, **_: object) -> None:
        jobs.append(job)
        raise _Stop

    monkeypatch.setattr("kdcompress.distill.run_distill", distill)
    asked = pipeline.RunSettings(str(tiny_xlmr), "onnxruntime", domain_text=str(reviews))
    with pytest.raises(_Stop):
        pipeline.run_pipeline(asked, prepared_run)
    (job,) = jobs
    assert job.domain_file == reviews and job.general == DOMAIN_SHARE  # type: ignore[attr-defined]
    with pytest.raises(UsageError, match="--domain-text"):  # made with that text
        pipeline.run_pipeline(dataclasses.replace(asked, domain_text=""), prepared_run)
    missing = dataclasses.replace(asked, domain_text=str(tmp_path / "none.txt"))
    with pytest.raises(UsageError, match="no such file"):
        pipeline.run_pipeline(missing, tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()  # refused before anything was written
