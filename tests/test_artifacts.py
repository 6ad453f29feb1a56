from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from kdcompress.artifacts import Artifact, ExportManifest, LatencyStats, ParityReport
from kdcompress.errors import ArtifactError, OutputExistsError, OutputLockedError
from kdcompress.outputs import atomic_output_dir, atomic_write_text, lock_file_for, output_lock

PARITY = ParityReport(
    sentences=3, max_abs_diff=1e-6, min_cosine=0.9999, mean_cosine=1.0, min_cosine_required=0.999
)
MANIFEST = ExportManifest(
    format="onnx",
    backend="onnxruntime",
    backend_version="1.0",
    source_model="/m",
    model_file="model.onnx",
    quantization="none",
    parity=PARITY,
)


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    path = MANIFEST.save(tmp_path / "export.json")
    assert ExportManifest.load(path) == MANIFEST
    data = json.loads(path.read_text())
    assert (data["kind"], data["schema_version"]) == ("export", 1)


def test_nested_tuples_and_optional_round_trip() -> None:
    @dataclass(frozen=True)
    class Holder(Artifact):
        kind = "holder"
        stats: tuple[LatencyStats, ...]
        note: str | None = None

    holder = Holder(stats=(LatencyStats(1.0, 2.0, 0.5, 1.2, 10, 2, 1, None),))
    assert Holder.from_json(json.loads(json.dumps(holder.to_json()))) == holder


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "profile"}, "holds a 'profile' artifact"),
        ({"schema_version": 99}, "schema version 99 is not supported"),
        ({"surprise": 1}, "unknown field"),
        ({"quantization": 3}, "expected str"),
        ({"parity": "oops"}, "expected an object"),
    ],
)
def test_foreign_or_malformed_files_are_refused(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    path = tmp_path / "export.json"
    path.write_text(json.dumps({**MANIFEST.to_json(), **change}))
    with pytest.raises(ArtifactError, match=message):
        ExportManifest.load(path)


def test_invalid_json_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        ExportManifest.load(tmp_path / "x.json")


def test_save_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    path = MANIFEST.save(tmp_path / "export.json")
    with pytest.raises(OutputExistsError):
        MANIFEST.save(path, overwrite=False)


def test_atomic_write_leaves_old_content_and_no_temp_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    atomic_write_text(target, "old")
    with pytest.raises(TypeError):
        atomic_write_text(target, 42)  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_output_dir_appears_only_on_success(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_output_dir(out, overwrite=False) as staging:
        (staging / "half.bin").write_text("x")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with atomic_output_dir(out, overwrite=False) as staging:
        (staging / "done.bin").write_text("x")
    assert [p.name for p in out.iterdir()] == ["done.bin"]


def test_existing_output_dir_needs_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("precious")
    with (
        pytest.raises(OutputExistsError, match="--overwrite"),
        atomic_output_dir(out, overwrite=False),
    ):
        pass
    assert (out / "keep").read_text() == "precious"
    with atomic_output_dir(out, overwrite=True) as staging:
        (staging / "new").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in out.iterdir()] == ["new"]


def test_output_lock_is_shared_by_nested_blocks_and_leaves_no_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with output_lock(out):
        assert lock_file_for(out).read_text() == f"{os.getpid()}\n"
        with atomic_output_dir(out, overwrite=False) as staging:  # the same writer: no wait
            (staging / "done.bin").write_text("x")
        assert lock_file_for(out).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with output_lock(out):  # released: it can be taken again
        pass


# Starts writing argv[1] like an export or distillation does, and never finishes.
WRITER = """
import sys, time
from pathlib import Path
from kdcompress.outputs import atomic_output_dir
with atomic_output_dir(Path(sys.argv[1]), overwrite=False) as staging:
    (staging / "half.bin").write_text("x")
    print("writing", flush=True)
    time.sleep(300)
"""


def test_a_killed_writers_staging_is_removed_only_once_it_is_dead(tmp_path: Path) -> None:
    out = tmp_path / "out"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
        with pytest.raises(OutputLockedError, match=f"PID {writer.pid}"), output_lock(out):
            pass
        assert len(list(tmp_path.glob(".out.*.partial"))) == 1  # a live writer's: kept
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    with atomic_output_dir(out, overwrite=False) as staging:
        (staging / "done.bin").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_only_this_outputs_leftovers_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    leftovers = [".out.k2_9abcd.partial", ".out.zzzzzzzz.old", ".out.a1b2c3d4.tmp"]
    others = [".out.x.k2_9abcd.partial", ".out2.k2_9abcd.partial", "out.partial-ckpt", "keep"]
    for name in leftovers + others:
        (tmp_path / name).mkdir()
        (tmp_path / name / "file").write_text("x")
    with output_lock(out):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others)


def test_files_written_private_get_the_folders_usual_mode(tmp_path: Path) -> None:
    import os

    out = tmp_path / "out"
    with atomic_output_dir(out, overwrite=False) as staging:
        weights = staging / "model.safetensors"
        weights.write_bytes(b"x")
        weights.chmod(0o600)  # what safetensors leaves
    umask = os.umask(0)
    os.umask(umask)
    assert (out / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
