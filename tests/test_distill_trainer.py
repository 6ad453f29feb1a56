"""The distillation loop on tiny models: learning, exact resume, DDP parity, CLI, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kdcompress.artifacts import DistillResult, LossPoint, StudentArch
from kdcompress.cli import app
from kdcompress.distill import checkpoint_dir_for
from kdcompress.errors import KDCompressError
from kdcompress.kd import Diverged, LossKind, TeacherCache, distill_student
from kdcompress.kd.loop import BatchPlan
from kdcompress.kd.student import InitMode

TEXTS = [
    "hello world",
    "the small student model is fast",
    "bonjour monde",
    "the teacher was large and the search was fast on a small text",
    "hallo welt and hola mundo",
    "привет мир",
    "你好 世界",
    "the latency of the student is small",
    "a language model for search",
    "export the small model",
    "the teacher is a large language model",
    "distil the teacher to a fast student",
    "it was on the text",
    "this is a model of the world",
    "from the student to the teacher",
    "the search is fast",
]
ARCH = StudentArch(layers=1, hidden=16, heads=2, ffn=32)
ARCH_JSON = '{"layers":1,"hidden":16,"heads":2,"ffn":32}'


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Killed(Exception):
    """Stands in for a kill -9 in the middle of a run."""


def _run(teacher: Path, **overrides: Any) -> Any:
    options: dict[str, Any] = {
        "teacher_dir": teacher,
        "arch": ARCH,
        "sentences": TEXTS,
        "steps": 12,
        "batch_size": 4,
        "lr": 3e-3,
        "seed": 7,
        "max_length": 32,
        "init": InitMode.RANDOM,
        "loss": LossKind.HIDDEN,
        "log_every": 2,
    }
    return distill_student(**{**options, **overrides})


def test_batch_plan_is_seeded_bucketed_and_covers_every_sentence_once() -> None:
    lengths = np.random.default_rng(0).integers(3, 60, size=1000)
    plan = BatchPlan(lengths, 10, seed=3)
    epoch = [plan.batch(i) for i in range(plan.per_epoch)]
    assert sorted(np.concatenate(epoch).tolist()) == list(range(1000))
    again = BatchPlan(lengths, 10, seed=3)
    assert all(np.array_equal(again.batch(i), epoch[i]) for i in range(plan.per_epoch))
    assert not np.array_equal(plan.batch(plan.per_epoch), epoch[0])  # next epoch: new order
    padding = np.mean([lengths[b].max() - lengths[b].mean() for b in epoch])
    assert padding < 2.0  # bucketing: batches of similar lengths


def test_distill_student_learns_in_memory(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    outcome = _run(tiny_bert, steps=20)
    assert outcome.curve[-1].loss < outcome.curve[0].loss
    assert outcome.curve[-1].step == 20 and len(outcome.curve) == 10
    assert 0 < outcome.hidden_loss < 1.5
    # 1 student layer of 2: L_HS = (embedding pair + layer pair) / 2; the search's layer loss
    # is the layer pair alone, so at most twice L_HS (the embedding pair's loss is >= 0).
    assert outcome.pairs[0].student == 0 and len(outcome.pairs) == 2
    assert outcome.layer_loss is not None
    assert 0 < outcome.layer_loss <= 2 * outcome.hidden_loss + 1e-6
    assert outcome.student.config.num_hidden_layers == 1
    assert outcome.sentences_seen == 20 * 4
    assert list(tmp_path.iterdir()) == []  # nothing written unless asked


def test_resume_after_a_kill_reproduces_the_uninterrupted_run(
    tiny_bert: Path, tmp_path: Path
) -> None:
    common = {"checkpoint_every": 4, "dropout": 0.1}  # dropout: the noise must replay too
    full = _run(tiny_bert, checkpoint_dir=tmp_path / "a", **common)

    def kill_at_7(step: int, _point: LossPoint) -> None:
        if step == 7:
            raise Killed

    with pytest.raises(Killed):
        _run(tiny_bert, checkpoint_dir=tmp_path / "b", on_step=kill_at_7, **common)
    resumed = _run(tiny_bert, checkpoint_dir=tmp_path / "b", resume=True, **common)
    assert [p.step for p in resumed.curve] == [p.step for p in full.curve]
    for a, b in zip(full.curve, resumed.curve, strict=True):
        assert b.loss == pytest.approx(a.loss, rel=1e-6, abs=1e-9)
    assert resumed.hidden_loss == pytest.approx(full.hidden_loss, rel=1e-6)
    for name, value in full.student.state_dict().items():
        assert torch.allclose(resumed.student.state_dict()[name], value, atol=1e-6)


def test_a_diverging_distillation_stops_with_a_one_line_error(tiny_bert: Path) -> None:
    # Weights of 1e30 after the first update overflow the next forward pass to inf and NaN.
    expected = r"diverged at step \d+ \(loss (nan|inf)\) at --lr 1e\+30: nothing was written"
    with pytest.raises(Diverged, match=expected):
        _run(tiny_bert, lr=1e30, steps=6)


def test_one_cache_serves_students_of_any_depth(tiny_bert: Path, tmp_path: Path) -> None:
    cache = TeacherCache.build(tiny_bert, TEXTS, 32, tmp_path / "cache")
    assert cache.meta.layers == (0, 1, 2) and cache.meta.complete
    stamp = (tmp_path / "cache" / "hidden-01.npy").stat().st_mtime_ns
    again = TeacherCache.build(tiny_bert, TEXTS, 32, tmp_path / "cache", layers=[0, 2])
    assert (tmp_path / "cache" / "hidden-01.npy").stat().st_mtime_ns == stamp  # reused as is
    one = _run(tiny_bert, cache=again, steps=4)
    two = _run(tiny_bert, cache=again, steps=4, arch=StudentArch(2, 16, 2, 32))
    assert {p.teacher for p in two.pairs} == {0, 1, 2}
    assert one.hidden_loss > 0 and two.hidden_loss > 0
    with pytest.raises(KDCompressError, match="other sentences"):
        _run(tiny_bert, cache=again, sentences=TEXTS[:-1])


def test_cached_targets_are_the_teachers_hidden_states(tiny_bert: Path, tmp_path: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    cache = TeacherCache.build(tiny_bert, TEXTS[:3], 32, tmp_path / "cache")
    batch = cache.batch([1], [2])
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    with torch.no_grad():
        expected = AutoModel.from_pretrained(tiny_bert)(
            **tokenizer([TEXTS[1]], return_tensors="pt")
        )
    assert torch.allclose(batch.hidden[2], expected.last_hidden_state, atol=2e-3)  # float16


def test_attention_relation_loss_and_vocab_trimming(tiny_xlmr: Path) -> None:
    outcome = _run(tiny_xlmr, loss=LossKind.HIDDEN_RELATION, trim_vocab=True, init=InitMode.TEACHER)
    assert outcome.relation_loss is not None and outcome.relation_loss >= 0
    assert all(p.relation is not None for p in outcome.curve)
    assert outcome.vocab_trim is not None
    vocab = outcome.student.get_input_embeddings().weight.shape[0]
    assert vocab == outcome.vocab_trim.new_size < outcome.vocab_trim.old_size


# ----------------------------------------------------------------------------- CLI


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["distill", *args])


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return path


def _cli_args(teacher: Path, corpus: Path, output: Path) -> list[str]:
    return [
        "--teacher", str(teacher), "--arch-json", ARCH_JSON, "--corpus", str(corpus),
        "--steps", "6", "--batch", "4", "--lr", "0.003", "--init", "random", "--trim-vocab",
        "--loss", "hidden",
        "--output", str(output),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def cli_student(
    tiny_xlmr: Path, corpus_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    output = tmp_path_factory.mktemp("cli") / "student"
    result = _cli(*_cli_args(tiny_xlmr, corpus_file, output))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return output


def test_cli_writes_a_folder_that_auto_model_loads(cli_student: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(cli_student)
    tokenizer = AutoTokenizer.from_pretrained(cli_student)
    out = model(**tokenizer(["hello world"], return_tensors="pt"))
    assert out.last_hidden_state.shape[-1] == 16
    result = DistillResult.load(cli_student / "distill.json")
    assert result.arch_id == ARCH.arch_id and result.steps == 6
    assert result.vocab is not None and result.vocab.vocab_after < result.vocab.vocab_before
    assert json.loads((cli_student / "kdcompress_model.json").read_text())["pooling"] == "mean"
    assert not checkpoint_dir_for(cli_student).exists()  # cleaned up after success


def test_two_processes_with_gloo_match_one(
    cli_student: Path, tiny_xlmr: Path, corpus_file: Path, tmp_path: Path
) -> None:
    output = tmp_path / "ddp"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", "-m", "kdcompress"]
    command += ["distill", *_cli_args(tiny_xlmr, corpus_file, output)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    single = DistillResult.load(cli_student / "distill.json")
    double = DistillResult.load(output / "distill.json")
    assert double.world_size == 2 and single.world_size == 1
    for a, b in zip(single.curve, double.curve, strict=True):
        assert b.loss == pytest.approx(a.loss, rel=1e-4)
    assert double.final_hidden_loss == pytest.approx(single.final_hidden_loss, rel=1e-4)


def _error(result: Any) -> str:
    assert isinstance(result.exception, KDCompressError), result.output + repr(result.exception)
    return str(result.exception)


def test_cli_refuses_bad_inputs(
    tiny_bert: Path, corpus_file: Path, cli_student: Path, tmp_path: Path
) -> None:
    base = ["--teacher", str(tiny_bert), "--corpus", str(corpus_file), "--steps", "2"]
    out = ["--output", str(tmp_path / "s")]
    assert "not valid JSON" in _error(_cli(*base, *out, "--arch-json", "{layers: 2"))
    bad_heads = '{"layers":1,"hidden":30,"heads":4,"ffn":32}'
    assert "not divisible by 4 heads" in _error(_cli(*base, *out, "--arch-json", bad_heads))
    assert "exactly one of --arch" in _error(_cli(*base, *out))
    assert "no such file" in _error(_cli(*base, *out, "--arch", str(tmp_path / "none.json")))
    malformed = tmp_path / "search.json"
    malformed.write_text('{"recommendations": []}')
    assert "recommendations" in _error(_cli(*base, *out, "--arch", str(malformed)))
    existing = ["--arch-json", ARCH_JSON, "--output", str(cli_student)]
    assert "--overwrite" in _error(_cli(*base, *existing))
    too_deep = '{"layers":3,"hidden":16,"heads":2,"ffn":32}'
    assert "teacher only 2" in _error(_cli(*base, *out, "--arch-json", too_deep))
    binary = tmp_path / "domain.bin"
    binary.write_bytes(b"reviews\0\1")
    domain = ["--arch-json", ARCH_JSON, "--domain-text", str(binary)]
    assert "a binary file, not text" in _error(_cli(*base, *out, *domain))
    text = ["--arch-json", ARCH_JSON, "--domain-text", str(corpus_file)]
    assert "need cross-lingual targets" in _error(_cli(*base, *out, *text))  # with --corpus


def test_cli_reads_a_search_result_and_needs_resume_for_leftover_checkpoints(
    tiny_bert: Path, corpus_file: Path, tmp_path: Path
) -> None:
    search = tmp_path / "search.json"
    arch: dict[str, Any] = {"layers": 1, "hidden": 16, "heads": 2, "ffn": 32}
    search.write_text(json.dumps({"recommendations": [{"budget": "7x", "arch": arch}]}))
    output = tmp_path / "s"
    checkpoint_dir_for(output).mkdir()
    args = ["--teacher", str(tiny_bert), "--corpus", str(corpus_file), "--steps", "2"]
    args += ["--output", str(output)]
    assert "--resume" in _error(_cli(*args, "--arch", f"{search}#7x"))
    assert "no recommendation for budget '3x'" in _error(_cli(*args, "--arch", f"{search}#3x"))
    result = _cli(*args, "--arch", f"{search}#7x", "--resume")
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert DistillResult.load(output / "distill.json").arch == StudentArch(**arch)


def test_teachers_that_are_not_encoders_or_not_models_are_one_line(
    corpus_file: Path, tmp_path: Path
) -> None:
    from transformers import GPT2Config, GPT2Model

    decoder = tmp_path / "gpt2"
    GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50)).save_pretrained(decoder)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "config.json").write_text("{not json")
    common = ["--arch-json", ARCH_JSON, "--corpus", str(corpus_file), "--steps", "2"]
    result = _cli("--teacher", str(decoder), *common, "--output", str(tmp_path / "a"))
    assert "model type 'gpt2' cannot be a teacher" in _error(result)
    result = _cli("--teacher", str(garbage), *common, "--output", str(tmp_path / "b"))
    assert "not a readable JSON model config" in _error(result)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_outputs_and_caches_under_a_file_are_refused_before_any_work(
    tiny_bert: Path, corpus_file: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    common = ["--teacher", str(tiny_bert), "--arch-json", ARCH_JSON, "--corpus", str(corpus_file)]
    result = _cli(*common, "--steps", "2", "--output", str(blocker / "student"))
    assert "is a file, not a folder" in _error(result)
    result = _cli(*common, "--steps", "2", "--output", str(tmp_path / "s"), "--cache", str(blocker))
    assert "a file, not a folder" in _error(result)
    assert not (tmp_path / "s").exists()


def test_a_trimmed_vocabulary_keeps_the_tokens_of_texts_named_to_keep(tiny_xlmr: Path) -> None:
    from kdcompress.encoding import load_tokenizer

    extra = ["zebras quarrel over marmalade", "¿dónde está la biblioteca?"]
    outcome = _run(tiny_xlmr, loss=LossKind.POOLED, trim_vocab=True, keep_vocabulary=extra, steps=2)
    plain = _run(tiny_xlmr, loss=LossKind.POOLED, trim_vocab=True, steps=2)
    ids = load_tokenizer(tiny_xlmr)(extra, add_special_tokens=False)["input_ids"]
    wanted = {i for row in ids for i in row}
    assert wanted <= set(outcome.vocab_trim.keep_ids)
    assert not wanted <= set(plain.vocab_trim.keep_ids)  # the training sentences lack them
