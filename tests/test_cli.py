"""The command line as a user meets it: a real process, its exit code and what it prints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

COMMANDS = [
    "profile",
    "search",
    "distill",
    "export",
    "validate",
    "eval",
    "run",
    "report",
    "teachers",
    "backends",
]


def kdcompress(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "kdcompress", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def test_top_level_help_lists_every_command() -> None:
    result = kdcompress("--help")
    assert result.returncode == 0
    for command in COMMANDS:
        assert command in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = kdcompress(command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Example:" in result.stdout


def test_help_paragraphs_fill_the_terminal_width() -> None:
    # The docstring's paragraph spans several source lines; on 80 columns it must wrap at the
    # terminal's width, not keep the source's line breaks (a ragged right margin).
    env = {**os.environ, "COLUMNS": "80"}
    result = subprocess.run(
        [sys.executable, "-m", "kdcompress", "eval", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    lines = [line.strip() for line in result.stdout.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("Identical for"))
    paragraph = lines[start : lines.index("", start)]
    assert len(paragraph) >= 3 and all(len(line) >= 60 for line in paragraph[:-1])


def test_version() -> None:
    from kdcompress import __version__

    result = kdcompress("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout


def _one_line_error(result: subprocess.CompletedProcess[str], exit_code: int) -> str:
    assert result.returncode == exit_code, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


def test_missing_model_path_is_one_line_and_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "no-model"
    result = kdcompress("export", "--model", str(missing), "--output", str(tmp_path / "o"))
    assert "no-model" in _one_line_error(result, 2)
    assert not (tmp_path / "o").exists()


def test_unknown_backend_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = kdcompress("run", "--backend", "tensorrt", "--output", str(tmp_path / "r"))
    assert "unknown backend 'tensorrt'" in _one_line_error(result, 2)


def test_unknown_format_is_one_line_and_exit_2(tmp_path: Path, tiny_bert: Path) -> None:
    result = kdcompress(
        "export", "--model", str(tiny_bert), "--format", "tflite", "--output", str(tmp_path)
    )
    assert "unknown export format" in _one_line_error(result, 2)


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = kdcompress("--debug", "validate", str(tmp_path))
    assert result.returncode != 0
    assert "Traceback" in result.stderr or "ArtifactError" in result.stderr


def test_unknown_executor_is_one_line_and_exit_2() -> None:
    result = kdcompress("search", "--executor", "dask")
    assert "choose one of: local, ray" in _one_line_error(result, 2)
    result = kdcompress("search", "--ray-address", "auto")
    assert "--ray-address needs --executor ray" in _one_line_error(result, 2)


def test_export_then_validate_end_to_end(tmp_path: Path, tiny_xlmr: Path) -> None:
    out = tmp_path / "onnx"
    exported = kdcompress(
        *("export", "--model", str(tiny_xlmr), "--output", str(out)),
        *("--seq-len", "8", "--batch", "1", "--threads", "1"),
    )
    assert exported.returncode == 0, exported.stderr
    assert "pass" in exported.stdout
    assert (out / "validation.md").is_file()  # every export ends with its validation
    refused = kdcompress("export", "--model", str(tiny_xlmr), "--output", str(out))
    assert "--overwrite" in _one_line_error(refused, 2)
    validated = kdcompress(
        "validate", str(out), "--seq-len", "8", "--runs", "3", "--threads", "1", "--eval", "none"
    )
    assert validated.returncode == 0, validated.stderr
    assert "speedup vs student-pytorch" in validated.stdout
    assert (out / "validation.json").is_file()


@pytest.mark.parametrize("name", ["../../etc/x", ".hidden", "a/b", "", "[bold]x[/x]"])
def test_profile_name_must_be_a_plain_name(tmp_path: Path, name: str) -> None:
    result = kdcompress("profile", "--name", name, "--quick", cwd=tmp_path)
    assert "profile name" in _one_line_error(result, 2)
    assert list(tmp_path.iterdir()) == []


# Holds the output lock of argv[1] like a running command, until killed.
HOLDER = """
import sys, time
from pathlib import Path
from kdcompress.outputs import output_lock
with output_lock(Path(sys.argv[1])):
    print("holding", flush=True)
    time.sleep(300)
"""


@contextmanager
def holding(path: Path) -> Iterator[subprocess.Popen[str]]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        yield holder
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize(
    "command",
    [
        ["export", "--model", "{model}", "--output", "{out}"],
        [
            "distill",
            "--arch-json",
            '{{"layers":1,"hidden":32,"heads":4,"ffn":64}}',
            "--teacher",
            "{model}",
            "--steps",
            "1",
            "--resume",
            "--output",
            "{out}",
        ],
    ],
    ids=["export", "distill"],
)
def test_a_second_writer_of_the_same_output_gets_the_holders_pid(
    tmp_path: Path, tiny_bert: Path, command: list[str]
) -> None:
    out = tmp_path / "out"
    args = [a.format(model=tiny_bert, out=out) for a in command]
    with holding(out) as holder:
        line = _one_line_error(kdcompress(*args), 1)
        assert f"{out} is being written by another process (PID {holder.pid})" in line
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["search", "--beta", "0"], "--beta 0: must be a number above 0"),
        (["search", "--beta", "nan"], "--beta nan: must be a number above 0"),
        (["search", "--alpha", "0.1"], "--alpha 0.1: must be below 0"),
        (["search", "--latency-budget-ms", "0"], "--latency-budget-ms 0: must be a number above 0"),
        (["search", "--seq-len", "0"], "--seq-len 0: must be between 1 and 8192"),
        (
            ["search", "--target", "{model}/config.json", "--controller", "ppo", "--output", "o"],
            "unknown controller 'ppo'",
        ),
        (["export", "--model", "{model}", "--batch", "0"], "--batch 0: must be between 1 and 1024"),
        (["export", "--model", "{model}", "--seq-len", "100"], "the model takes 80 positions"),
        (
            ["validate", "{tmp}", "--batch", "1", "--batch", "-2"],
            "--batch -2: must be between 1 and 1024",
        ),
        (["profile", "--seq-len", "100000"], "--seq-len 100000: must be between 1 and 8192"),
        (["profile", "--batch", "0", "--quick"], "--batch 0: must be between 1 and 1024"),
        (["validate", "{tmp}", "--batch", "1000000000"], "--batch 1000000000: must be between 1"),
        (["export", "--model", "{model}", "--threads", "100000"], "--threads 100000: more than"),
    ],
)
def test_bad_numbers_are_refused_before_any_work(
    tmp_path: Path, tiny_bert: Path, args: list[str], message: str
) -> None:
    filled = [a.format(model=tiny_bert, tmp=tmp_path) for a in args]
    assert message in _one_line_error(kdcompress(*filled, cwd=tmp_path), 2)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"hello world\nbonjour\x00monde\n", "a binary file, not text (NUL byte at line 2, byte"),
        (
            b"hello world\nbonjour \xe9t\xe9\n",
            "not UTF-8 text (byte 0xe9 at line 2, byte offset 20)",
        ),
    ],
    ids=["binary", "latin-1"],
)
def test_distill_refuses_a_corpus_that_is_not_utf8_text(
    tmp_path: Path, tiny_bert: Path, content: bytes, message: str
) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(content)
    result = kdcompress(
        *("distill", "--teacher", str(tiny_bert), "--corpus", str(corpus), "--steps", "1"),
        *("--arch-json", '{"layers":1,"hidden":32,"heads":4,"ffn":64}'),
        *("--output", str(tmp_path / "student")),
    )
    assert message in _one_line_error(result, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt"]


# A command that takes its output's lock, starts writing it and waits, run through main().
SLEEPER = """
import signal, sys, time
from pathlib import Path
import typer
from kdcompress import cli
from kdcompress.cli.options import hold_output
from kdcompress.outputs import atomic_output_dir

signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored

@cli.app.command()
def sleep(ctx: typer.Context, output: Path) -> None:
    hold_output(ctx, output)
    with atomic_output_dir(output, overwrite=False):
        print("writing", flush=True)
        time.sleep(300)

sys.argv = ["kdcompress", "sleep", sys.argv[1]]
cli.main()
"""


def test_ctrl_c_is_one_line_exit_130_and_leaves_nothing_behind(tmp_path: Path) -> None:
    command = subprocess.Popen(
        [sys.executable, "-c", SLEEPER, str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert command.stdout is not None and command.stdout.readline() == "writing\n"
    command.send_signal(signal.SIGINT)
    _, stderr = command.communicate(timeout=60)
    assert command.returncode == 130
    assert [line for line in stderr.splitlines() if line.strip()] == ["error: interrupted"]
    assert list(tmp_path.iterdir()) == []  # no output, no staging folder, no lock file


def test_search_resume_refuses_options_it_would_ignore(tmp_path: Path) -> None:
    line = _one_line_error(
        kdcompress("search", "--resume", str(tmp_path), "--episodes", "3", "--seed", "7"), 2
    )
    assert "--episodes, --seed would be ignored" in line


DISTILL_TINY = ["--steps", "1", "--arch-json", '{{"layers":1,"hidden":32,"heads":4,"ffn":64}}']


@pytest.mark.parametrize(
    ("command", "damage"),
    [
        (["export", "--model", "{model}", "--output", "{out}"], "weights"),
        (["eval", "--quick", "--model", "{model}", "--output", "{out}"], "weights"),
        (["distill", "--teacher", "{model}", *DISTILL_TINY, "--output", "{out}"], "weights"),
        (["distill", "--teacher", "{model}", *DISTILL_TINY, "--output", "{out}"], "config"),
    ],
    ids=["export", "eval", "distill", "distill-config"],
)
def test_a_damaged_model_folder_is_one_line_before_any_work(
    tmp_path: Path, tiny_bert: Path, command: list[str], damage: str
) -> None:
    import shutil

    model = Path(shutil.copytree(tiny_bert, tmp_path / "model"))
    if damage == "config":
        (model / "config.json").write_text("garbage{")
        damaged = "config.json: not a readable JSON model config"
    else:
        weights = model / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:5000])
        damaged = "model.safetensors: damaged weights file"
    line = _one_line_error(
        kdcompress(*[a.format(model=model, out=tmp_path / "out") for a in command]), 2
    )
    assert f"{model}/{damaged}" in line and "save or copy the model folder again" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "--teacher", "{tmp}/missing"], "model '{tmp}/missing' not found"),
        (["export", "--teacher", "{tmp}"], "{tmp}: not a Hugging Face model folder"),
        (["export", "--target", "{tmp}/p.json"], "--target {tmp}/p.json: no such file"),
        (["export", "--no-validate", "--teacher", "me5-small"], "--teacher: only used by the"),
        (["validate", "{tmp}", "--target", "{tmp}"], "--target {tmp}: no such file"),
        (["validate", "{tmp}", "--teacher", "{tmp}/missing"], "model '{tmp}/missing' not found"),
    ],
)
def test_teacher_and_target_are_checked_before_the_export_and_the_timing(
    tmp_path: Path, tiny_bert: Path, args: list[str], message: str
) -> None:
    if args[0] == "export":
        args = [*args, "--model", str(tiny_bert), "--output", "{tmp}/out"]
    result = kdcompress(*[a.format(tmp=tmp_path) for a in args])
    assert message.format(tmp=tmp_path) in _one_line_error(result, 2)
    assert list(tmp_path.iterdir()) == []


def test_an_export_stopped_during_its_validation_says_how_to_validate_it(
    tmp_path: Path, tiny_bert: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from kdcompress.cli import app
    from kdcompress.errors import Interrupted, OutputExistsError

    def stopped(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("kdcompress.cli.export._validate", stopped)
    out = tmp_path / "out"
    args = ["export", "--model", str(tiny_bert), "--output", str(out), "--threads", "1"]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, Interrupted)
    hint = f"`kdcompress validate {out}` validates it"
    assert str(result.exception) == f"interrupted; the export in {out} is complete: {hint}"
    result = CliRunner().invoke(app, args)  # as after a kill -9 during the validation
    assert isinstance(result.exception, OutputExistsError)
    assert f"run `kdcompress validate {out}`, or pass --overwrite" in str(result.exception)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["distill", "--steps", "0", "--output", "o"], "Invalid value for '--steps'"),
        (["eval", "--model", "m", "--threads", "two"], "Invalid value for '--threads'"),
        (["export", "--bogus"], "No such option: --bogus"),
        (["report"], "Missing argument 'run_dir'"),
        (["cache", "verify", "--fix", "x", "--bogus"], "No such option: --bogus"),
        (["nosuchcommand"], "No such command 'nosuchcommand'"),
    ],
)
def test_options_refused_by_the_parser_are_one_line_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    line = _one_line_error(kdcompress(*args, cwd=tmp_path), 2)
    assert message in line and "--help`)" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lr", "inf"], "--lr inf: must be a number above 0"),
        (["--lr", "0"], "--lr 0: must be a number above 0"),
        (["--contrastive-weight", "inf"], "--contrastive-weight inf: must be a number"),
        (["--init", "zeros"], "unknown --init 'zeros'"),
        (["--max-length", "1000"], "--max-length 1000: the teacher takes at most 80 tokens"),
    ],
)
def test_distill_options_are_checked_before_the_teacher_runs(
    tmp_path: Path, tiny_bert: Path, args: list[str], message: str
) -> None:
    command = ["distill", "--teacher", str(tiny_bert), *DISTILL_TINY, *args, "--output", "s"]
    line = _one_line_error(kdcompress(*[a.format() for a in command], cwd=tmp_path), 2)
    assert message in line
    assert list(tmp_path.iterdir()) == []  # no teacher cache, no checkpoint folder


@pytest.mark.parametrize(
    ("output", "message"), [("f.txt/x.json", "f.txt is a file, not a folder"), ("d", "is a folder")]
)
def test_eval_output_is_checked_before_the_model_runs(
    tmp_path: Path, tiny_bert: Path, output: str, message: str
) -> None:
    (tmp_path / "f.txt").write_text("x")
    (tmp_path / "d").mkdir()
    result = kdcompress(
        "eval", "--model", str(tiny_bert), "--quick", "--output", output, cwd=tmp_path
    )
    assert message in _one_line_error(result, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d", "f.txt"]


OUT_OF_MEMORY = """
import sys
from kdcompress import cli

@cli.app.command()
def allocate() -> None:
    raise MemoryError("Unable to allocate 95.4 GiB for an array")

sys.argv = ["kdcompress", "allocate"]
cli.main()
"""


def test_out_of_memory_is_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-c", OUT_OF_MEMORY], capture_output=True, text=True, timeout=60
    )
    line = _one_line_error(result, 1)
    assert "out of memory (Unable to allocate 95.4 GiB for an array)" in line


def test_a_diverged_distillation_writes_no_student(tmp_path: Path, tiny_bert: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"hello world the small model {i}" for i in range(12)) + "\n")
    command = ["distill", "--teacher", str(tiny_bert), *DISTILL_TINY, "--corpus", str(corpus)]
    command += ["--batch", "2", "--lr", "1e30", "--output", "s"]
    result = kdcompress(*[a.format() for a in command], cwd=tmp_path)
    assert "the distillation diverged at step 1 (loss inf) at --lr 1e+30" in _one_line_error(
        result, 1
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt"]
