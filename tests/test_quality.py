"""The evaluation suite: metrics, data splits, the report, retention, and runs on tiny models.

Nothing here touches the network or the real data: a fake asset cache (a tiny SQLite Bible,
a tiny IMDB CSV, tiny zh-inews pickles, each with a valid completion marker) stands in for
``$KDCOMPRESS_CACHE``, and ``assets.fetch`` is made to fail so a lookup can never download.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import pickle
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kdcompress import assets, corpus, quality
from kdcompress.errors import (
    ArtifactError,
    AssetError,
    IncompatibleReferenceError,
    ModelNotFoundError,
    OutputExistsError,
    UsageError,
)
from kdcompress.quality import EvalReport, EvalSettings, Retention, TaskScore
from kdcompress.quality import data as quality_data

WORDS = (  # noqa: SIM905 - the tiny tokenizers' vocabulary, as prose
    "the a of and to in is was for on that with as by at from this be are it an or model fast "
    "small large text language search latency student teacher distil export hello world "
    "bonjour monde hallo welt hola mundo"
).split()
LANGS = ("de", "fr", "zh")
VERSES_PER_BOOK = 3

SETTINGS = dataclasses.replace(
    EvalSettings(),
    languages=LANGS,
    verses=20,
    imdb_train=16,
    imdb_test=12,
    zh_train=10,
    zh_test=8,
)


# ----------------------------------------------------------------------------- fake assets


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10)))


def _write_bible(path: Path) -> dict[str, int]:
    """en plus LANGS over a few train books and every held-out book; returns text -> book."""
    books = sorted({1, 2, 40, *corpus.HELDOUT_BOOKS, *corpus.PROXY_BOOKS})
    keys = [(b, 1, v) for b in books for v in range(1, VERSES_PER_BOOK + 1)]
    rng = random.Random(0)
    book_of: dict[str, int] = {}
    rows = []
    # A "translation" is the English verse with a word or two dropped: even a random
    # encoder then retrieves well above chance, so equal scores across backends mean something.
    english = {key: _sentence(rng).split() for key in keys}
    for lang in ("en", *LANGS):
        for key in keys:
            words = list(english[key])
            for _ in range(0 if lang == "en" else rng.randint(1, 2)):
                words.pop(rng.randrange(len(words)))
            text = f"{' '.join(words)} {lang}"
            book_of[text] = key[0]
            rows.append((len(rows), corpus.LANGUAGES[lang], *key, text))
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE bible (id INTEGER, bbName TEXT, bNumber INTEGER, cNumber INTEGER,"
        " vNumber INTEGER, vText TEXT)"
    )
    conn.executemany("INSERT INTO bible VALUES (?, ?, ?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()
    return book_of


def _write_imdb(path: Path) -> None:
    rng = random.Random(1)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["review", "sentiment"])
        for i in range(40):
            label = "positive" if i % 2 else "negative"
            writer.writerow([f"{_sentence(rng)}<br /><br />{_sentence(rng)}", label])
        writer.writerow(["hello world", "positive"])
        writer.writerow(["hello world", "negative"])  # a duplicate: kept once


def _write_inews(folder: Path) -> None:
    rng = random.Random(2)
    for split, count in (("train", 30), ("dev", 6), ("test", 12)):
        titles = [_sentence(rng) for _ in range(count)]
        contents = [_sentence(rng) + " 你好 世界" for _ in range(count)]
        labels = [i % 3 for i in range(count)]
        with (folder / f"{split}.pkl").open("wb") as handle:
            pickle.dump((titles, contents, labels), handle)


@pytest.fixture(scope="module")
def fake_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """A ``$KDCOMPRESS_CACHE`` whose bible / imdb / zh-inews entries are tiny but complete."""
    root = tmp_path_factory.mktemp("cache")
    for name in ("bible", "imdb", "zh-inews"):
        (root / name).mkdir()
    book_of = _write_bible(root / "bible" / "bible.db")
    _write_imdb(root / "imdb" / assets.IMDB_CSV)
    _write_inews(root / "zh-inews")
    for name in ("bible", "imdb", "zh-inews"):
        assets._write_marker(root / name, assets.ASSETS[name])
    return root, book_of


@pytest.fixture
def cache(fake_cache: tuple[Path, dict[str, int]], monkeypatch: pytest.MonkeyPatch) -> Path:
    def no_network(pin: assets.PinnedFile) -> Path:
        raise AssertionError(f"test tried to fetch {pin.spec}")

    monkeypatch.setenv("KDCOMPRESS_CACHE", str(fake_cache[0]))
    monkeypatch.setattr(assets, "fetch", no_network)
    return fake_cache[0]


# ----------------------------------------------------------------------------- metrics


def test_retrieval_of_identical_embeddings_is_perfect() -> None:
    vectors = np.random.default_rng(0).normal(size=(50, 16))
    assert quality.retrieval_top1(vectors, vectors) == 1.0
    assert quality.retrieval_top1(vectors, 3.0 * vectors) == 1.0  # cosine: scale-free


def test_retrieval_of_shuffled_targets_counts_fixed_points() -> None:
    vectors = np.eye(10)
    order = [1, 0, 3, 2, 4, 5, 6, 7, 8, 9]  # two swaps: 6 of 10 queries keep their target
    assert quality.retrieval_top1(vectors, vectors[order]) == pytest.approx(0.6)
    reversed_order = list(range(10))[::-1]  # no fixed point
    assert quality.retrieval_top1(vectors, vectors[reversed_order]) == 0.0


def test_retrieval_needs_aligned_embeddings() -> None:
    with pytest.raises(ValueError):
        quality.retrieval_top1(np.ones((3, 4)), np.ones((2, 4)))


def _clusters(rng: np.random.Generator, n: int, *, gap: float) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.integers(0, 2, size=n)
    features = rng.normal(size=(n, 8))
    features[:, 0] += gap * (2 * labels - 1)
    return features, labels


def test_probe_separates_separable_features() -> None:
    rng = np.random.default_rng(0)
    train_x, train_y = _clusters(rng, 200, gap=10.0)
    test_x, test_y = _clusters(rng, 200, gap=10.0)
    accuracy = quality.probe_accuracy(
        train_x, train_y, test_x, test_y, c=1.0, max_iter=1000, seed=0
    )
    assert accuracy == 1.0


def test_probe_on_random_features_is_chance() -> None:
    rng = np.random.default_rng(1)
    train_x, test_x = rng.normal(size=(300, 8)), rng.normal(size=(1000, 8))
    train_y, test_y = rng.integers(0, 2, 300), rng.integers(0, 2, 1000)
    accuracy = quality.probe_accuracy(
        train_x, train_y, test_x, test_y, c=1.0, max_iter=1000, seed=0
    )
    assert 0.44 < accuracy < 0.56


def test_probe_is_deterministic() -> None:
    rng = np.random.default_rng(2)
    x, y = _clusters(rng, 100, gap=0.5)
    runs = {quality.probe_accuracy(x, y, x, y, c=1.0, max_iter=1000, seed=0) for _ in range(2)}
    assert len(runs) == 1


# ----------------------------------------------------------------------------- settings


def test_quick_is_a_smaller_suite_over_the_same_languages() -> None:
    full, quick = quality.full_settings(), quality.quick_settings()
    assert quick.languages == full.languages and len(full.languages) >= 6
    assert full.verses >= 500
    assert quick.verses < full.verses and quick.imdb_train < full.imdb_train
    assert quality.settings_differences(full, quick)


def test_unknown_or_english_language_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="klingon"):
        quality.parse_languages("de,klingon")
    with pytest.raises(UsageError, match=r"language\(s\) en "):
        quality.parse_languages("en")
    assert quality.parse_languages(" de, fr ,de") == ("de", "fr")


def test_sizes_below_two_are_refused() -> None:
    with pytest.raises(UsageError, match="verses=1"):
        quality.make_settings(verses=1)


def test_overrides_replace_the_preset() -> None:
    settings = quality.make_settings(quick=True, languages=["fr"], imdb_test=50)
    assert settings.languages == ("fr",)
    assert settings.imdb_test == 50
    assert settings.verses == quality.quick_settings().verses


# ----------------------------------------------------------------------------- data


def test_retrieval_pairs_come_from_heldout_books_only(
    cache: Path, fake_cache: tuple[Path, dict[str, int]]
) -> None:
    book_of = fake_cache[1]
    pairs = quality.retrieval_pairs(SETTINGS)
    assert set(pairs) == set(LANGS)
    for language, language_pairs in pairs.items():
        assert len(language_pairs) == SETTINGS.verses
        for source, target in language_pairs:
            assert source.endswith(" en") and target.endswith(f" {language}")
            assert book_of[source] == book_of[target]
            assert book_of[source] in corpus.HELDOUT_BOOKS


def test_imdb_split_is_seeded_deduplicated_and_disjoint(cache: Path) -> None:
    data = quality.load_imdb(SETTINGS)
    assert (len(data.train_texts), len(data.test_texts)) == (16, 12)
    assert not set(data.train_texts) & set(data.test_texts)
    assert all("<br" not in text for text in data.train_texts + data.test_texts)
    assert set(data.train_labels + data.test_labels) == {0, 1}
    assert quality.load_imdb(SETTINGS) == data
    other = quality.load_imdb(dataclasses.replace(SETTINGS, seed=1))
    assert other.train_texts != data.train_texts


def test_imdb_refuses_more_reviews_than_it_has(cache: Path) -> None:
    with pytest.raises(UsageError, match="distinct reviews"):
        quality.load_imdb(dataclasses.replace(SETTINGS, imdb_train=40, imdb_test=40))


def test_zh_inews_uses_the_official_splits(cache: Path) -> None:
    data = quality.load_zh_inews(SETTINGS)
    assert (len(data.train_texts), len(data.test_texts)) == (10, 8)
    assert set(data.train_labels) <= {0, 1, 2}
    whole = quality.load_zh_inews(dataclasses.replace(SETTINGS, zh_train=1000, zh_test=1000))
    assert (len(whole.train_texts), len(whole.test_texts)) == (30, 12)
    assert set(data.test_texts) <= set(whole.test_texts)
    assert "\n" in data.train_texts[0]  # title, then the article


def test_a_pickle_with_code_references_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "train.pkl"
    path.write_bytes(pickle.dumps((["t"], ["c"], [len])))
    with pytest.raises(AssetError, match="refusing"):
        quality_data._read_inews(path)


# ----------------------------------------------------------------------------- embedding


def test_length_batching_restores_the_input_order(tiny_bert: Path) -> None:
    from kdcompress.backends import get_backend
    from kdcompress.encoding import load_tokenizer

    model = get_backend("torch").load(model_path=tiny_bert, threads=1)
    tokenizer = load_tokenizer(tiny_bert)
    texts = ["hello world the small student model is fast", "hello", "a b", "the teacher was large"]

    def embedder(batch_size: int, prefix: str = "") -> quality.Embedder:
        return quality.Embedder(
            model,
            tokenizer,
            text_prefix=prefix,
            pooling="mean",
            max_positions=64,
            batch_size=batch_size,
        )

    calls: list[int] = []
    batched = embedder(2).embed(texts, max_length=32, on_batch=lambda: calls.append(1))
    one_by_one = np.stack([embedder(1).embed([t], max_length=32)[0] for t in texts])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert len(calls) == 2 == embedder(2).batches(len(texts))
    prefixed = embedder(4, prefix="hello ").embed(texts, max_length=32)
    np.testing.assert_allclose(
        prefixed, embedder(4).embed([f"hello {t}" for t in texts], max_length=32), atol=1e-5
    )
    assert not np.allclose(prefixed, batched)


def test_max_positions_leaves_roberta_its_offset(tiny_bert: Path, tiny_xlmr: Path) -> None:
    from kdcompress.encoding import load_tokenizer, max_positions

    for folder in (tiny_bert, tiny_xlmr):
        tokenizer = load_tokenizer(folder)
        tokenizer.model_max_length = 10_000
        assert max_positions(folder, tokenizer) == (80 if folder == tiny_bert else 78)


# ----------------------------------------------------------------------------- report


def _report(scores: dict[str, float], details: dict[str, float], **extra: object) -> EvalReport:
    tasks = tuple(
        TaskScore(
            task=task,
            metric="top-1" if task == "retrieval" else "accuracy",
            score=score,
            details=details if task == "retrieval" else {},
            sizes={k: 20 for k in details} if task == "retrieval" else {"train": 8, "test": 8},
            max_length=64,
            texts=40,
            wall_s=1.5,
        )
        for task, score in scores.items()
    )
    fields: dict[str, object] = {
        "model": "m",
        "model_path": "/m",
        "backend": "torch",
        "backend_version": "x",
        "threads": 2,
        "batch_size": 32,
        "settings": SETTINGS,
        "tasks": tasks,
        "mean": sum(scores.values()) / len(scores),
        "wall_s": 3.0,
        **extra,
    }
    return EvalReport(**fields)  # type: ignore[arg-type]


TEACHER = _report(
    {"retrieval": 0.8, "imdb": 0.9, "zh-inews": 0.5}, {"en-de": 0.9, "en-fr": 0.7, "en-zh": 0.8}
)
STUDENT = _report(
    {"retrieval": 0.4, "imdb": 0.9, "zh-inews": 0.25}, {"en-de": 0.45, "en-fr": 0.35, "en-zh": 0.4}
)


def test_retention_is_the_mean_of_per_task_ratios() -> None:
    kept = quality.retention(STUDENT, TEACHER, source="t.json")
    assert kept.per_task == pytest.approx({"retrieval": 0.5, "imdb": 1.0, "zh-inews": 0.5})
    assert kept.overall == pytest.approx(2 / 3)
    assert kept.details["retrieval"] == pytest.approx({"en-de": 0.5, "en-fr": 0.5, "en-zh": 0.5})
    assert kept.reference_scores["imdb"] == 0.9
    assert kept.reference_model == "m"


def test_a_zero_reference_score_has_no_ratio() -> None:
    zero = _report({"retrieval": 0.0, "imdb": 0.9, "zh-inews": 0.5}, {"en-de": 0.0})
    kept = quality.retention(STUDENT, zero, source="t.json")
    assert kept.per_task["retrieval"] is None
    assert kept.overall is None


def test_report_json_round_trip(tmp_path: Path) -> None:
    report = dataclasses.replace(
        STUDENT, retention=quality.retention(STUDENT, TEACHER, source="t.json")
    )
    path = report.save(tmp_path / "eval.json")
    data = json.loads(path.read_text())
    assert data["kind"] == "eval" and data["schema_version"] == 1
    loaded = EvalReport.load(path)
    assert loaded == report
    assert isinstance(loaded.retention, Retention)
    assert loaded.settings.languages == LANGS
    assert loaded.score("imdb").score == 0.9


def test_reference_with_other_settings_is_refused(tmp_path: Path) -> None:
    other = dataclasses.replace(TEACHER, settings=dataclasses.replace(SETTINGS, verses=500))
    path = other.save(tmp_path / "teacher.json")
    with pytest.raises(IncompatibleReferenceError, match="verses 20 vs 500"):
        quality.load_reference(path, SETTINGS)
    # refused before any model or data is touched
    with pytest.raises(IncompatibleReferenceError):
        quality.run_eval(model=str(tmp_path / "nope"), settings=SETTINGS, reference=path)


def test_reference_missing_a_task_is_refused(tmp_path: Path) -> None:
    partial = dataclasses.replace(TEACHER, tasks=TEACHER.tasks[:1])
    path = partial.save(tmp_path / "teacher.json")
    with pytest.raises(IncompatibleReferenceError, match="imdb"):
        quality.load_reference(path, SETTINGS)


@pytest.mark.parametrize(
    "content",
    ["{not json", '{"kind": "export", "schema_version": 1}', "[1, 2]", "corrupt-score"],
)
def test_corrupt_reference_is_an_artifact_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "teacher.json"
    if content == "corrupt-score":
        data = TEACHER.to_json()
        data["tasks"][1]["score"] = "high"
        content = json.dumps(data)
    path.write_text(content)
    with pytest.raises(ArtifactError):
        quality.load_reference(path, SETTINGS)


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no-such-model"):
        quality.run_eval(model=str(tmp_path / "no-such-model"), settings=SETTINGS)


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny_onnx(tiny_xlmr: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kdcompress.export import ExportFormat, export_model

    out = tmp_path_factory.mktemp("export") / "onnx"
    export_model(model=str(tiny_xlmr), fmt=ExportFormat.ONNX, output=out, threads=1)
    return out


def _scores(report: EvalReport) -> dict[str, object]:
    return {t.task: (round(t.score, 6), t.details, t.sizes, t.max_length) for t in report.tasks}


def test_torch_and_onnxruntime_give_the_same_scores(
    cache: Path, tiny_xlmr: Path, tiny_onnx: Path, tmp_path: Path
) -> None:
    torch_report, torch_path = quality.run_eval(
        model=str(tiny_xlmr), settings=SETTINGS, output=tmp_path / "torch.json", threads=1
    )
    ort_report, ort_path = quality.run_eval(model=str(tiny_onnx), settings=SETTINGS, threads=1)
    assert ort_path == tiny_onnx / "eval-onnx.json"  # default: beside the model
    assert torch_report.backend == "torch" and ort_report.backend == "onnxruntime"
    assert _scores(torch_report) == _scores(ort_report)
    retrieval = torch_report.score("retrieval")
    assert retrieval.score > 0.3  # well above chance (0.05): the comparison is not vacuous
    assert retrieval.sizes == {f"en-{lang}": SETTINGS.verses for lang in LANGS}
    assert retrieval.max_length == 64  # the tiny tokenizer's limit, not the 128 asked for
    assert torch_report.score("imdb").sizes == {"train": 16, "test": 12}
    assert EvalReport.load(torch_path) == torch_report

    with pytest.raises(OutputExistsError, match="--overwrite"):
        quality.run_eval(model=str(tiny_onnx), settings=SETTINGS, threads=1)
    with pytest.raises(UsageError, match="onnxruntime export"):
        quality.run_eval(model=str(tiny_onnx), settings=SETTINGS, backend="openvino")

    compared, _ = quality.run_eval(
        model=str(tiny_onnx),
        settings=SETTINGS,
        reference=torch_path,
        overwrite=True,
        threads=1,
    )
    assert compared.retention is not None
    for ratio in compared.retention.per_task.values():
        assert ratio == pytest.approx(1.0, abs=1e-6) or ratio is None


def test_cli_eval_prints_the_table_and_refuses_to_overwrite(
    cache: Path, tiny_bert: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "KDCOMPRESS_CACHE": str(cache), "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "report.json"
    args = [
        *(sys.executable, "-m", "kdcompress", "eval", "--model", str(tiny_bert)),
        *("--languages", ",".join(LANGS), "--verses", "20", "--imdb-train", "16"),
        *("--imdb-test", "12", "--zh-train", "10", "--zh-test", "8", "--threads", "1"),
        *("--output", str(out)),
    ]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    for word in ("retrieval", "en-zh", "imdb", "zh-inews", "mean"):
        assert word in done.stdout
    assert EvalReport.load(out).settings == SETTINGS
    again = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 2
    lines = [line for line in again.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "--overwrite" in lines[0]
    bad = subprocess.run(
        [*args[:5], "--languages", "de,xx"], capture_output=True, text=True, env=env, timeout=300
    )
    assert bad.returncode == 2 and "xx" in bad.stderr and "Traceback" not in bad.stderr
