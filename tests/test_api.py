"""The Python API: distil, export and validate a tiny student without the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

import kdcompress.api as kd
from kdcompress.artifacts import DistillResult, ExportManifest, StudentArch, ValidationReport
from kdcompress.errors import OutputExistsError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_distill_export_validate_return_the_artifacts(
    tiny_xlmr: Path, sentences: list[str], tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(sentences * 4) + "\n", encoding="utf-8")
    arch = StudentArch(layers=1, hidden=16, heads=2, ffn=32)
    student = tmp_path / "student"
    result = kd.distill(
        teacher=str(tiny_xlmr), arch=arch, output=student, steps=3, batch_size=4, corpus_file=corpus
    )
    assert isinstance(result, DistillResult) and result.steps == 3 and result.targets == "own"
    with pytest.raises(OutputExistsError):
        kd.distill(teacher=str(tiny_xlmr), arch=arch, output=student, steps=3, corpus_file=corpus)
    manifest = kd.export(model=student, output=tmp_path / "export", threads=1)
    assert isinstance(manifest, ExportManifest) and manifest.quantization == "dynamic"
    report = kd.validate(
        export_dir=tmp_path / "export", teacher=str(tiny_xlmr), quality="none", threads=1
    )
    assert isinstance(report, ValidationReport)
    assert report.speedup(1, 32) is not None and report.teacher_export is not None
