"""The evaluation suite (``kdcompress eval``): one fixed set of tasks that defines "quality kept".

Every model, teacher or student, PyTorch folder or ONNX / OpenVINO export, goes through the same
tasks with its own tokenizer, text prefix and pooling (``kdcompress_model.json``):

- ``retrieval``: English -> each of several languages, held-out Bible books only (the
  ``heldout`` split; never distillation data). Each English verse must find its translation
  among all target verses by cosine similarity; top-1 accuracy per language, the task's score is
  the mean over languages.
- ``imdb``: English movie-review sentiment (binary), a seeded train/test split of the 50k
  reviews (duplicates removed first, so no review is on both sides).
- ``zh-inews``: Chinese news sentiment (3 classes), seeded subsets of the official train and test
  splits.

Classification recipe, identical for every model: the encoder stays frozen; its pooled
embeddings are standardised and a scikit-learn ``LogisticRegression`` (fixed ``C`` and
``max_iter``) is fitted on train; the score is accuracy on test. The suite's mean is the mean of
the three task scores; with a reference (the teacher's report) each task also gets the
retention ratio student / teacher and the overall retention is the mean of those ratios.

The package, one module per concern: ``settings`` (tasks, presets), ``report`` (the
``eval`` artifact, retention), ``data`` (each task's data), ``embedding`` (batched sentence
embeddings), ``model`` (what to load and how), ``scoring`` (metrics, the suite), ``run``
(``kdcompress eval``).
"""

from __future__ import annotations

from kdcompress.quality.data import (
    Labelled,
    SuiteData,
    load_imdb,
    load_plan,
    load_zh_inews,
    retrieval_pairs,
)
from kdcompress.quality.embedding import (
    Embedder,
    embed_unique,
)
from kdcompress.quality.model import (
    ModelSource,
    locate_model,
    open_model,
)
from kdcompress.quality.report import (
    EvalReport,
    Retention,
    TaskScore,
    check_reference,
    load_reference,
    retention,
)
from kdcompress.quality.run import (
    check_data,
    default_output,
    run_eval,
    score_model_file,
)
from kdcompress.quality.scoring import (
    evaluate_suite,
    probe_accuracy,
    retrieval_top1,
)
from kdcompress.quality.settings import (
    DEFAULT_LANGUAGES,
    SOURCE_LANGUAGE,
    ZH_INEWS_CLASSES,
    EvalSettings,
    Task,
    check_settings,
    full_settings,
    make_settings,
    parse_languages,
    quick_settings,
    settings_differences,
)

__all__ = [
    "DEFAULT_LANGUAGES",
    "SOURCE_LANGUAGE",
    "ZH_INEWS_CLASSES",
    "Embedder",
    "EvalReport",
    "EvalSettings",
    "Labelled",
    "ModelSource",
    "Retention",
    "SuiteData",
    "Task",
    "TaskScore",
    "check_data",
    "check_reference",
    "check_settings",
    "default_output",
    "embed_unique",
    "evaluate_suite",
    "full_settings",
    "load_imdb",
    "load_plan",
    "load_reference",
    "load_zh_inews",
    "locate_model",
    "make_settings",
    "open_model",
    "parse_languages",
    "probe_accuracy",
    "quick_settings",
    "retention",
    "retrieval_pairs",
    "retrieval_top1",
    "run_eval",
    "score_model_file",
    "settings_differences",
]
