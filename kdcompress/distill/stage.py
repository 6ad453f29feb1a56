"""The ``distill`` stage: corpus -> teacher cache -> distillation -> student folder."""

from __future__ import annotations

import math
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdcompress.artifacts import DistillResult, StudentArch, VocabTrimStats
from kdcompress.errors import UsageError
from kdcompress.kd.distributed import DistEnv, agree, dist_env, process_group
from kdcompress.kd.loop import Diverged, distill_student, teacher_layers_for
from kdcompress.kd.parallel import Translations
from kdcompress.kd.settings import (
    DEFAULT_LR,
    DistillOutcome,
    LossKind,
    Targets,
)
from kdcompress.kd.student import (
    InitMode,
    count_parameters,
    validate_arch,
    write_student_folder,
)
from kdcompress.kd.teacher_cache import (
    TeacherCache,
)
from kdcompress.kd.vocab import (
    check_trimmed_tokenizer,
    tokenizer_bytes,
)
from kdcompress.model_card import write_model_card
from kdcompress.models import ResolvedModel
from kdcompress.outputs import atomic_output_dir, check_output_dir

DEFAULT_EPOCH_SENTENCES = 20_000  # --epochs without --sentences: a cache of a few GB, not 100s


def checkpoint_dir_for(output: Path) -> Path:
    """Where a run writing ``output`` keeps checkpoints (and its teacher cache) until done."""
    return output.with_name(output.name + ".partial-ckpt")


def _prepare_output(job: DistillJob, checkpoints: Path) -> None:
    check_output_dir(job.output, overwrite=job.overwrite)
    if not checkpoints.exists() or job.resume:
        return
    if job.overwrite:
        shutil.rmtree(checkpoints)
        return
    raise UsageError(
        f"{checkpoints} holds checkpoints of an interrupted run: pass --resume to continue it, "
        "or --overwrite to start over"
    )


def parse_languages(spec: str) -> tuple[str, ...]:
    """``"en,de,fr"`` or ``"all"`` -> Bible language codes, refusing unknown ones."""
    from kdcompress.corpus import LANGUAGES

    if spec.strip().lower() == "all":
        return tuple(LANGUAGES)
    chosen = tuple(code.strip() for code in spec.split(",") if code.strip())
    unknown = [code for code in chosen if code not in LANGUAGES]
    if unknown or not chosen:
        raise UsageError(
            f"unknown language(s) {', '.join(unknown) or '(none)'}; choose from "
            f"{', '.join(LANGUAGES)} or 'all'"
        )
    return chosen


SOURCE_LANGUAGE = "en"  # cross-lingual targets: the teacher embeds the English verse


def resolve_targets(targets: Targets | None, corpus_file: Path | None) -> Targets:
    """Cross-lingual targets on the aligned Bible, each sentence's own on a plain corpus."""
    if targets is None:
        return Targets.OWN if corpus_file is not None else Targets.CROSS_LINGUAL
    if targets is Targets.CROSS_LINGUAL and corpus_file is not None:
        raise UsageError("--targets cross-lingual needs the aligned Bible corpus, not --corpus")
    return targets


def _training_text(
    corpus_file: Path | None, languages: Sequence[str], seed: int, limit: int
) -> list[str]:
    if corpus_file is not None:
        from kdcompress.textfile import read_text_lines

        return read_text_lines(corpus_file)[:limit]
    from kdcompress import corpus

    return list(corpus.iter_sentences("train", languages, seed=seed, limit=limit))


def _parallel_text(
    languages: Sequence[str], seed: int, limit: int, passages: float
) -> tuple[list[str], list[tuple[str, ...]], tuple[str, ...]]:
    """English train-split verses (and passages) and their translations into ``languages``."""
    from kdcompress import corpus

    found = corpus.parallel_set(
        "train", SOURCE_LANGUAGE, languages, seed=seed, limit=limit, passages=passages
    )
    if not found.languages:
        raise UsageError(
            "cross-lingual targets need at least one language besides English (--languages)"
        )
    return list(found.sources), list(found.translations), found.languages


def _domain_vocabulary(job: DistillJob) -> list[str]:
    """The lines of the user's domain text when the vocabulary is trimmed: the student will
    meet all of its words, not only those of the sentences sampled for training."""
    if not (job.trim_vocab and job.domain_file is not None):
        return []
    from kdcompress.textfile import read_text_lines

    return read_text_lines(job.domain_file)


def _beyond_the_bible(
    job: DistillJob, verses: int, languages: Sequence[str], teacher_dir: Path
) -> list[str]:
    """General-domain sentences and vocabulary words making up their shares of all items."""
    from kdcompress.general import domain_sentences, general_sentences, vocabulary_words

    def count(share: float) -> int:
        return round(verses * share / (1.0 - job.general - job.words))

    extra = []
    if job.general and job.domain_file is not None:
        extra += domain_sentences(job.domain_file, seed=job.seed, limit=count(job.general))
    elif job.general:
        languages = (SOURCE_LANGUAGE, *languages)
        extra += general_sentences(languages, seed=job.seed, limit=count(job.general))
    if job.words:
        extra += vocabulary_words(teacher_dir, seed=job.seed, limit=count(job.words))
    return extra


def _mixed(
    texts: list[str], aligned: list[tuple[str, ...]], extra: list[str], seed: int
) -> tuple[list[str], list[tuple[str, ...]]]:
    """The Bible's items plus ``extra`` in one seeded order. The extra items have no
    translation: each learns the teacher's embedding of itself."""
    empty = ("",) * (len(aligned[0]) if aligned else 0)
    items = list(zip(texts, aligned, strict=True)) + [(t, empty) for t in extra]
    random.Random(f"{seed}:general-mix").shuffle(items)
    return [t for t, _ in items], [a for _, a in items]


def _plan_size(
    steps: int | None, epochs: float | None, sentences: int | None, batch_size: int
) -> int:
    """How many training sentences to read."""
    if (steps is None) == (epochs is None):
        raise UsageError("give exactly one of --steps or --epochs")
    if sentences is not None:
        return sentences
    return steps * batch_size if steps is not None else DEFAULT_EPOCH_SENTENCES


def _steps(steps: int | None, epochs: float | None, texts: int, batch_size: int) -> int:
    if steps is not None:
        return steps
    assert epochs is not None
    return max(1, int(np.ceil(epochs * max(1, texts // batch_size))))


@dataclass(frozen=True)
class DistillJob:
    """What the ``distill`` stage is asked to do (the ``kdcompress distill`` options, parsed),
    besides the teacher: its numbers are checked when the job is made, before any work.

    With cross-lingual targets ``sentences`` counts English verses: every step pairs each with
    one of its translations, so a step reads twice ``batch_size`` sentences.
    """

    arch: StudentArch
    output: Path
    steps: int | None = None
    epochs: float | None = None
    sentences: int | None = None
    corpus_file: Path | None = None
    languages: tuple[str, ...] = ()  # Bible languages; empty: all of them
    batch_size: int = 32
    lr: float = DEFAULT_LR
    max_length: int = 64
    loss: LossKind = LossKind.POOLED
    targets: Targets | None = None  # default: cross-lingual on the Bible, own with corpus_file
    contrastive_weight: float = 0.0
    whiten_weight: float = 0.0
    passages: float = 0.0  # share of multi-verse passages (cross-lingual targets)
    general: float = 0.0  # share of general-domain sentences (cross-lingual targets)
    domain_file: Path | None = None  # the general share's text instead of news and speeches
    words: float = 0.0  # share of single words of the teacher's vocabulary (cross-lingual)
    init: InitMode = InitMode.TEACHER
    trim_vocab: bool = False
    seed: int = 0
    dropout: float = 0.0
    cache_dir: Path | None = None
    log_every: int = 10
    checkpoint_every: int = 200
    resume: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        # The training loop checks them too, but only once the teacher's targets are cached.
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise UsageError(f"--lr {self.lr:g}: must be a number above 0")
        for option, value in (
            ("--contrastive-weight", self.contrastive_weight),
            ("--whiten-weight", self.whiten_weight),
            ("--dropout", self.dropout),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise UsageError(f"{option} {value:g}: must be a number, at least 0")
        if self.domain_file is not None and not self.general:
            raise UsageError("--domain-text needs a --general share above 0")
        if self.general + self.words >= 0.9:
            raise UsageError(
                f"--general {self.general:g} and --words {self.words:g} leave the Bible under "
                "10% of the training items: keep their sum under 0.9"
            )


@dataclass(frozen=True)
class _Corpus:
    texts: list[str]  # the teacher's inputs (English verses with cross-lingual targets)
    translations: Translations | None
    languages: tuple[str, ...]


def run_distill(job: DistillJob, *, teacher: ResolvedModel) -> DistillResult | None:
    """The ``distill`` stage: corpus -> teacher cache -> distillation -> student folder.

    ``teacher`` is resolved by the caller; ``distill.json`` records its name. Writes
    ``job.output`` (a Hugging Face folder plus ``distill.json``) atomically at the end;
    until then checkpoints and the teacher cache live in ``OUTPUT.partial-ckpt/``, which
    ``job.resume`` continues from. Returns the result on rank 0, None on other ranks.
    """
    from transformers import AutoConfig

    env = dist_env()
    with process_group(env):
        started = time.perf_counter()
        checkpoints = checkpoint_dir_for(job.output)
        teacher_dir = teacher.folder
        _check_max_length(job.max_length, teacher_dir)
        agree(env, lambda: _prepare_output(job, checkpoints))
        config = AutoConfig.from_pretrained(teacher_dir)
        validate_arch(job.arch, teacher_config=config, init=job.init)
        corpus = _corpus(job, teacher_dir)
        if len(corpus.texts) < env.world:
            raise UsageError(
                f"only {len(corpus.texts)} training sentences for {env.world} processes"
            )
        cache = TeacherCache.build(
            teacher_dir,
            corpus.texts,
            job.max_length,
            _cache_path(job.cache_dir, checkpoints, env),
            layers=teacher_layers_for(config, job.arch, job.loss),
            shard=(env.local_rank, env.local_world),
            show_progress=env.is_main,
        )
        run = _RunFacts(job, teacher, corpus, cache, time.perf_counter() - started)
        try:
            outcome = _distill(run, checkpoints)
            if not math.isfinite(outcome.pooled_loss):
                raise Diverged("by its end", outcome.pooled_loss, job.lr)
        except Diverged:
            if env.local_rank == 0:  # NaN weights: no student to write or resume
                shutil.rmtree(checkpoints, ignore_errors=True)
            raise
        result = agree(env, lambda: _write_output(outcome, run))
        if env.local_rank == 0:  # every node removes its own teacher cache (and rank 0 the rest)
            shutil.rmtree(checkpoints, ignore_errors=True)
        return result if env.is_main else None


def _check_max_length(max_length: int, teacher_dir: Path) -> None:
    from kdcompress.encoding import read_longest_input

    longest = read_longest_input(teacher_dir)
    if max_length > longest:
        raise UsageError(f"--max-length {max_length}: the teacher takes at most {longest} tokens")


def _corpus(job: DistillJob, teacher_dir: Path) -> _Corpus:
    """The training text, and its translations when the targets are cross-lingual."""
    from kdcompress.assets import read_embedding_info

    limit = _plan_size(job.steps, job.epochs, job.sentences, job.batch_size)
    targets = resolve_targets(job.targets, job.corpus_file)
    languages = job.languages
    if job.corpus_file is None and not languages:
        languages = parse_languages("all")
    if targets is not Targets.CROSS_LINGUAL:
        if job.passages or job.general or job.words:
            raise UsageError(
                "--passages, --general, --domain-text and --words need cross-lingual targets "
                "on the Bible"
            )
        return _Corpus(_training_text(job.corpus_file, languages, job.seed, limit), None, languages)
    texts, aligned, translated = _parallel_text(languages, job.seed, limit, job.passages)
    if job.general or job.words:
        extra = _beyond_the_bible(job, len(texts), languages, teacher_dir)
        texts, aligned = _mixed(texts, aligned, extra, job.seed)
    translations = Translations(
        aligned,
        translated,
        teacher_dir=teacher_dir,
        max_length=job.max_length,
        prefix=read_embedding_info(teacher_dir).text_prefix,
    )
    return _Corpus(texts, translations, languages)


def _distill(run: _RunFacts, checkpoints: Path) -> DistillOutcome:
    job = run.job
    return distill_student(
        teacher_dir=run.teacher.folder,
        arch=job.arch,
        sentences=run.corpus.texts,
        steps=_steps(job.steps, job.epochs, len(run.corpus.texts), job.batch_size),
        batch_size=job.batch_size,
        lr=job.lr,
        seed=job.seed,
        max_length=job.max_length,
        init=job.init,
        cache=run.cache,
        loss=job.loss,
        translations=run.corpus.translations,
        contrastive_weight=job.contrastive_weight,
        whiten_weight=job.whiten_weight,
        trim_vocab=job.trim_vocab,
        keep_vocabulary=_domain_vocabulary(job),
        dropout=job.dropout,
        log_every=job.log_every,
        checkpoint_dir=checkpoints,
        checkpoint_every=job.checkpoint_every,
        resume=job.resume,
        show_progress=True,
    )


def _cache_path(cache_dir: Path | None, checkpoints: Path, env: DistEnv) -> Path:
    if cache_dir is not None:
        return cache_dir
    # Several nodes on one shared filesystem must not write the same cache files at once.
    suffix = f"-node{env.node}" if env.world > env.local_world else ""
    return checkpoints / f"teacher-cache{suffix}"


@dataclass(frozen=True)
class _RunFacts:
    job: DistillJob
    teacher: ResolvedModel
    corpus: _Corpus
    cache: TeacherCache
    cache_s: float


def _vocab_stats(outcome: DistillOutcome, run: _RunFacts, folder: Path) -> VocabTrimStats | None:
    trim = outcome.vocab_trim
    if trim is None:
        return None
    params = count_parameters(outcome.student)
    before = params + (trim.old_size - trim.new_size) * outcome.arch.hidden
    return VocabTrimStats(
        vocab_before=trim.old_size,
        vocab_after=trim.new_size,
        params_before=before,
        params_after=params,
        weights_bytes_before=4 * before,
        weights_bytes_after=4 * params,
        tokenizer_bytes_before=tokenizer_bytes(run.teacher.folder),
        tokenizer_bytes_after=tokenizer_bytes(folder),
    )


def _write_output(outcome: DistillOutcome, run: _RunFacts) -> DistillResult:
    meta, job = run.cache.meta, run.job
    with atomic_output_dir(job.output, overwrite=job.overwrite) as staging:
        # The sentence-transformers config keeps the model's own input limit, not the
        # distillation's (64 by default): students are evaluated, and used, on longer texts.
        write_student_folder(outcome.student, run.teacher.folder, staging, trim=outcome.vocab_trim)
        if outcome.vocab_trim is not None:
            sample = [meta.text_prefix + t for t in run.corpus.texts[:200]]
            check_trimmed_tokenizer(
                run.teacher.folder, staging, outcome.vocab_trim, sample, max_length=meta.max_length
            )
        result = DistillResult(
            arch=outcome.arch,
            arch_id=outcome.arch.arch_id,
            teacher=run.teacher.name,
            init=outcome.init.mode,
            init_details=outcome.init.details,
            loss=job.loss.value,
            layer_map=tuple((p.student, p.teacher) for p in outcome.pairs),
            steps=outcome.steps,
            batch_size=job.batch_size,
            lr=job.lr,
            seed=job.seed,
            max_length=meta.max_length,
            languages=run.corpus.languages if job.corpus_file is None else (),
            sentences=len(run.corpus.texts),
            corpus_hash=outcome.corpus_hash,
            curve=outcome.curve,
            final_hidden_loss=outcome.hidden_loss,
            final_pooled_loss=outcome.pooled_loss,
            final_relation_loss=outcome.relation_loss,
            wall_s=outcome.train_s,
            teacher_cache_s=run.cache_s,
            sentences_per_s=outcome.sentences_per_s,
            world_size=outcome.world_size,
            parameters=count_parameters(outcome.student),
            vocab=_vocab_stats(outcome, run, staging),
            targets=(Targets.OWN if outcome.translations is None else Targets.CROSS_LINGUAL).value,
            final_cosine=outcome.cosine,
            passages=job.passages,
            general=job.general,
            domain_text=str(job.domain_file or ""),
            words=job.words,
        )
        result.save(staging / "distill.json")
        write_model_card(staging, result, model_path=job.output)
    return result
