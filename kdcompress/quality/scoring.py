"""The metrics and the suite: each task scored on one embedder."""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from kdcompress.console import progress, warn
from kdcompress.quality.data import Labelled, SuiteData
from kdcompress.quality.embedding import Embedder, embed_unique
from kdcompress.quality.report import TaskScore
from kdcompress.quality.settings import SOURCE_LANGUAGE, EvalSettings, Task


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.clip(norms, 1e-12, None)


def retrieval_top1(queries: np.ndarray, targets: np.ndarray) -> float:
    """Share of queries whose most cosine-similar target is the one at the same index."""
    if queries.shape != targets.shape or len(queries) == 0:
        raise ValueError(f"need aligned, non-empty embeddings ({queries.shape} vs {targets.shape})")
    similarity = _normalise(queries) @ _normalise(targets).T
    return float(np.mean(np.argmax(similarity, axis=1) == np.arange(len(queries))))


def probe_accuracy(
    train_x: np.ndarray,
    train_y: Sequence[int],
    test_x: np.ndarray,
    test_y: Sequence[int],
    *,
    c: float,
    max_iter: int,
    seed: int,
) -> float:
    """Accuracy on test of a logistic-regression head on standardised frozen features."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    head = make_pipeline(
        StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, random_state=seed)
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        head.fit(np.asarray(train_x, dtype=np.float64), np.asarray(train_y))
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        warn(f"the classification head did not converge in {max_iter} iterations")
    predicted = head.predict(np.asarray(test_x, dtype=np.float64))
    return float(np.mean(predicted == np.asarray(test_y)))


def _score_retrieval(
    embedder: Embedder, plan: SuiteData, settings: EvalSettings, on_batch: Callable[[], None]
) -> TaskScore:
    started = time.perf_counter()
    texts = plan.retrieval_texts()
    vectors = embed_unique(
        embedder, texts, max_length=settings.retrieval_max_length, on_batch=on_batch
    )
    details = {}
    for language, pairs in plan.pairs.items():
        queries = np.stack([vectors[source] for source, _ in pairs])
        targets = np.stack([vectors[target] for _, target in pairs])
        details[f"{SOURCE_LANGUAGE}-{language}"] = retrieval_top1(queries, targets)
    return TaskScore(
        task=Task.RETRIEVAL.value,
        metric="top-1",
        score=float(np.mean(list(details.values()))),
        details=details,
        sizes={f"{SOURCE_LANGUAGE}-{lang}": len(pairs) for lang, pairs in plan.pairs.items()},
        max_length=embedder.max_length(settings.retrieval_max_length),
        texts=len(texts),
        wall_s=time.perf_counter() - started,
    )


def _score_classification(
    task: Task,
    data: Labelled,
    embedder: Embedder,
    *,
    max_length: int,
    settings: EvalSettings,
    on_batch: Callable[[], None],
) -> TaskScore:
    started = time.perf_counter()
    vectors = embed_unique(
        embedder, data.train_texts + data.test_texts, max_length=max_length, on_batch=on_batch
    )
    accuracy = probe_accuracy(
        np.stack([vectors[t] for t in data.train_texts]),
        data.train_labels,
        np.stack([vectors[t] for t in data.test_texts]),
        data.test_labels,
        c=settings.classifier_c,
        max_iter=settings.classifier_max_iter,
        seed=settings.seed,
    )
    return TaskScore(
        task=task.value,
        metric="accuracy",
        score=accuracy,
        details={},
        sizes={"train": len(data.train_texts), "test": len(data.test_texts)},
        max_length=embedder.max_length(max_length),
        texts=len(vectors),
        wall_s=time.perf_counter() - started,
    )


def evaluate_suite(embedder: Embedder, plan: SuiteData, settings: EvalSettings) -> list[TaskScore]:
    """Every task of the suite on one embedder, with a progress bar per task (in batches)."""
    classification = (
        (Task.IMDB, plan.imdb, settings.imdb_max_length),
        (Task.ZH_INEWS, plan.zh, settings.zh_max_length),
    )
    with progress() as bar:
        retrieval_bar = bar.add_task(
            "retrieval", total=embedder.batches(len(plan.retrieval_texts()))
        )
        bars = {
            task: bar.add_task(
                task.value,
                total=embedder.batches(len(set(data.train_texts + data.test_texts))),
            )
            for task, data, _ in classification
        }
        results = [
            _score_retrieval(
                embedder, plan, settings, on_batch=functools.partial(bar.advance, retrieval_bar)
            )
        ]
        for task, data, max_length in classification:
            results.append(
                _score_classification(
                    task,
                    data,
                    embedder,
                    max_length=max_length,
                    settings=settings,
                    on_batch=functools.partial(bar.advance, bars[task]),
                )
            )
    return results
