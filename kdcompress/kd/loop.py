"""The distillation loop: batches from the teacher cache, losses, checkpoints, resume, DDP.

Reproducibility is by construction rather than by saved RNG state: the batch order of epoch
``e`` is a function of ``(seed, e)``, the dropout noise of step ``s`` on rank ``r`` is drawn
from a generator seeded with ``(seed, s, r)``, and a checkpoint stores the model, projection,
optimizer, scheduler, step and loss curve. A run resumed from step ``s`` therefore computes
exactly the steps an uninterrupted run would have computed.

Under ``torchrun`` (``WORLD_SIZE`` > 1) every global batch is split across the processes and
each process divides its partial loss sums by the counts of the *whole* batch, so the averaged
gradients equal the single-process ones: N processes reproduce a single-process run up to
floating-point summation order. Only rank 0 writes checkpoints and outputs or prints.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from kdcompress.artifacts import (
    LossPoint,
    StudentArch,
)
from kdcompress.console import info, progress
from kdcompress.errors import KDCompressError, UsageError
from kdcompress.kd.checkpoint import State, load_checkpoint, restore, run_identity, save_checkpoint
from kdcompress.kd.distributed import (
    DistEnv,
    agree,
    all_reduce,
    device_for,
    dist_env,
    is_distributed,
    process_group,
)
from kdcompress.kd.losses import (
    relation_heads_for,
)
from kdcompress.kd.mapping import (
    HiddenProjection,
    describe_pairs,
    teacher_layers_needed,
    uniform_last_pairs,
)
from kdcompress.kd.module import KDModule, teacher_qkv
from kdcompress.kd.parallel import ParallelBatch, Translations
from kdcompress.kd.settings import (
    DistillOutcome,
    DistillSettings,
    LossKind,
    Targets,
    uses_hidden,
)
from kdcompress.kd.student import (
    BERT_FAMILY,
    InitMode,
    InitReport,
    build_student,
    validate_arch,
)
from kdcompress.kd.teacher_cache import (
    TeacherBatch,
    TeacherCache,
    corpus_hash,
    load_teacher,
    teacher_fingerprint,
)
from kdcompress.kd.vocab import (
    VocabTrim,
    plan_trim,
    read_tokenizer_json,
)

_BUCKET = 50  # batches per length bucket: sorted within, shuffled across


class BatchPlan:
    """Global batches of sentence indices, bucketed by length, in a seeded order per epoch."""

    def __init__(self, lengths: npt.NDArray[np.int64], batch_size: int, seed: int) -> None:
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self.per_epoch = max(1, len(lengths) // batch_size)
        self._epoch: tuple[int, list[npt.NDArray[np.int64]]] | None = None

    def batch(self, index: int) -> npt.NDArray[np.int64]:
        """The ``index``-th (0-based) global batch of the run."""
        epoch, position = divmod(index, self.per_epoch)
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = (epoch, self._batches(epoch))
        return self._epoch[1][position]

    def _batches(self, epoch: int) -> list[npt.NDArray[np.int64]]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.lengths))
        chunk = self.batch_size * _BUCKET
        batches = []
        for start in range(0, len(order), chunk):
            part = order[start : start + chunk]
            part = part[np.argsort(self.lengths[part], kind="stable")]
            batches += [part[i : i + self.batch_size] for i in range(0, len(part), self.batch_size)]
        if len(self.lengths) >= self.batch_size:  # equal batch sizes: drop the short remainder
            batches = [b for b in batches if len(b) == self.batch_size]
        return [batches[i] for i in rng.permutation(len(batches))]


def _optimizer(kd: KDModule, settings: DistillSettings) -> tuple[Any, Any]:
    trainable = [p for p in kd.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": settings.weight_decay},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=settings.lr)
    warm = max(1, round(settings.warmup * settings.steps))
    decay = max(1, settings.steps - warm)

    def factor(step: int) -> float:  # step counts finished optimizer steps
        return (step + 1) / warm if step < warm else max(0.0, (settings.steps - step) / decay)

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 7919 + rank) % (2**63)


def _counts(batch: TeacherBatch, device: torch.device) -> tuple[Tensor, Tensor]:
    """Tokens and sentences of the whole global batch (summed over processes)."""
    local = torch.tensor(
        [float(batch.attention_mask.sum()), float(batch.input_ids.shape[0])],
        dtype=torch.float64,
        device=device,
    )
    total = all_reduce(local)
    return total[0].float(), total[1].float()


class Diverged(KDCompressError):
    """The loss stopped being a number: every later step would only train on NaN."""

    def __init__(self, when: str, loss: float, lr: float) -> None:
        super().__init__(
            f"the distillation diverged {when} (loss {loss}) at --lr {lr:g}: nothing was "
            "written; try a lower --lr"
        )


def _detach_terms(terms: dict[str, Tensor]) -> dict[str, float]:
    names = sorted(terms)
    stacked = torch.stack([terms[n].detach().double() for n in names])
    reduced = all_reduce(stacked).tolist()
    return dict(zip(names, reduced, strict=True))


# ----------------------------------------------------------------------------- public API


def teacher_layers_for(teacher_config: Any, arch: StudentArch, loss: LossKind) -> tuple[int, ...]:
    """Teacher hidden states a run reads: the layer map's, plus the relation loss's input."""
    if not uses_hidden(loss):
        return ()
    layers = teacher_config.num_hidden_layers
    pairs = uniform_last_pairs(layers, arch.layers)
    extra = (layers - 1,) if loss is LossKind.HIDDEN_RELATION else ()
    return teacher_layers_needed(pairs, *extra)


def distill_student(
    *,
    teacher_dir: Path,
    arch: StudentArch,
    sentences: Sequence[str],
    cache: TeacherCache | None = None,
    translations: Translations | None = None,
    checkpoint_dir: Path | None = None,
    checkpoint_every: int = 200,
    resume: bool = False,
    eval_sentences: int = 256,
    show_progress: bool = False,
    on_step: Callable[[int, LossPoint], None] | None = None,
    keep_vocabulary: Sequence[str] = (),
    **settings: Any,
) -> DistillOutcome:
    """Distil ``arch`` from the teacher in ``teacher_dir`` on ``sentences``, in memory.

    ``settings`` are the fields of :class:`DistillSettings` (steps, batch_size, lr, seed,
    max_length, loss, ...; its defaults for the rest). ``cache``: teacher targets for exactly
    these ``sentences`` and ``max_length`` (see :meth:`TeacherCache.build`), built once and
    shared by many calls; without one a private cache is built in a temporary folder and
    removed. ``translations`` (aligned with ``sentences``) makes the targets cross-lingual: at
    every step each sentence is also paired with one of its translations, which learns the
    sentence's teacher embedding. Nothing is written unless ``checkpoint_dir`` is given: then a
    checkpoint is saved every ``checkpoint_every`` steps (rounded to a multiple of
    ``log_every``) and ``resume=True`` continues from it. ``on_step(step, losses)`` is called
    after every optimizer step (it may raise to stop). With ``trim_vocab``, the tokens of
    ``keep_vocabulary`` (texts the student will meet, of which ``sentences`` hold only a
    sample) survive the trimming too. The outcome's final losses are measured
    in eval mode on the first ``eval_sentences`` of ``sentences``. Under ``torchrun`` every
    process calls this with the same arguments.
    """
    targets = Targets.OWN if translations is None else Targets.CROSS_LINGUAL
    chosen = DistillSettings(**settings, targets=targets)
    env = dist_env()
    with process_group(env):
        chosen.check(env.world)
        run = _Run(teacher_dir, arch, chosen, env, show_progress, keep_vocabulary)
        with _private_cache(cache, run, sentences) as ready:
            run.check_cache(ready, sentences, translations)
            return run.execute(
                ready,
                translations,
                checkpoint_dir,
                checkpoint_every,
                resume,
                eval_sentences,
                on_step,
            )


def _token_ids(teacher_dir: Path, texts: Sequence[str]) -> npt.NDArray[np.int64]:
    """Every token id the teacher's tokenizer gives ``texts``, whole (not truncated)."""
    from kdcompress.encoding import load_tokenizer

    encoded = load_tokenizer(teacher_dir)(list(texts), add_special_tokens=False)["input_ids"]
    return np.unique(np.fromiter((i for ids in encoded for i in ids), dtype=np.int64))


@contextmanager
def _private_cache(
    cache: TeacherCache | None, run: _Run, sentences: Sequence[str]
) -> Iterator[TeacherCache]:
    if cache is not None:
        yield cache
        return
    with tempfile.TemporaryDirectory(prefix="kdcompress-teacher-cache-") as folder:
        yield TeacherCache.build(
            run.teacher_dir,
            sentences,
            run.settings.max_length,
            Path(folder) / "cache",
            layers=run.needed,
            show_progress=run.show,
        )


class _Run:
    """One distillation: the teacher, the student and the loop that connects them."""

    def __init__(
        self,
        teacher_dir: Path,
        arch: StudentArch,
        settings: DistillSettings,
        env: DistEnv,
        show: bool,
        keep_vocabulary: Sequence[str] = (),
    ) -> None:
        self.teacher_dir, self.arch = Path(teacher_dir), arch
        self.keep_vocabulary = keep_vocabulary  # texts whose tokens a trim keeps as well
        self.settings, self.env = settings, env
        self.show = show and env.is_main
        self.device = device_for(env)
        self.teacher = load_teacher(self.teacher_dir)
        config = self.teacher.config
        validate_arch(arch, teacher_config=config, init=settings.init)
        self.relation = settings.loss is LossKind.HIDDEN_RELATION
        if self.relation and config.model_type not in BERT_FAMILY:
            raise UsageError(
                f"--loss {settings.loss} needs a BERT-family teacher, not {config.model_type}"
            )
        self.pairs = uniform_last_pairs(config.num_hidden_layers, arch.layers)
        self.needed = teacher_layers_for(config, arch, settings.loss)

    def check_cache(
        self, cache: TeacherCache, sentences: Sequence[str], translations: Translations | None
    ) -> None:
        meta = cache.meta
        if translations is not None and len(translations) != len(cache):
            raise UsageError(
                f"{len(translations)} rows of translations for {len(cache)} cached sentences"
            )
        if meta.max_length != self.settings.max_length:
            raise UsageError(
                f"teacher cache has max length {meta.max_length}, not {self.settings.max_length}"
            )
        if sentences and corpus_hash(sentences) != meta.sentences_hash:
            raise UsageError(f"teacher cache {cache.path} was built from other sentences")
        if meta.teacher_fingerprint != teacher_fingerprint(self.teacher_dir):
            raise UsageError(f"teacher cache {cache.path} was built from another teacher")
        if not cache.covers(self.needed):
            missing = sorted(set(self.needed) - set(meta.layers))
            raise UsageError(f"teacher cache {cache.path} lacks teacher layers {missing}")

    def _build(
        self, cache: TeacherCache, translations: Translations | None
    ) -> tuple[KDModule, InitReport, VocabTrim | None]:
        trim = None
        if self.settings.trim_vocab:
            vocab = self.teacher.get_input_embeddings().weight.shape[0]
            used = np.unique(cache.token_ids())
            if translations is not None:
                used = np.union1d(used, translations.token_ids())
            if self.keep_vocabulary:
                used = np.union1d(used, _token_ids(self.teacher_dir, self.keep_vocabulary))
            trim = plan_trim(read_tokenizer_json(self.teacher_dir), used, vocab_size=vocab)
        student, report = build_student(
            self.teacher,
            self.arch,
            init=self.settings.init,
            seed=self.settings.seed,
            keep_tokens=trim.keep_ids if trim else None,
            dropout=self.settings.dropout,
            calibration=(
                _calibration(cache) if self.settings.init is InitMode.ACTIVATIONS else None
            ),
        )
        if self.settings.freeze_embeddings:
            student.get_input_embeddings().weight.requires_grad_(False)
        dims = report.hidden_dims if len(report.hidden_dims) == self.arch.hidden else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.settings.seed)
            projection = HiddenProjection(self.arch.hidden, self.teacher.config.hidden_size, dims)
        qkv = teacher_qkv(self.teacher) if self.relation else None
        heads = relation_heads_for(
            self.arch.hidden, self.teacher.config.hidden_size, self.settings.relation_heads
        )
        kd = KDModule(student, projection, self.pairs, cache, self.settings, qkv, heads)
        return kd.to(self.device), report, trim

    def execute(
        self,
        cache: TeacherCache,
        translations: Translations | None,
        checkpoint_dir: Path | None,
        checkpoint_every: int,
        resume: bool,
        eval_sentences: int,
        on_step: Callable[[int, LossPoint], None] | None,
    ) -> DistillOutcome:
        kd, report, trim = self._build(cache, translations)
        if self.show:
            if self.needed:  # the layer map matters only to the hidden-state loss
                info(f"Layer map (Uniform+Last): {describe_pairs(self.pairs)}")
            info(
                f"Student {self.arch.describe()} ({self.arch.arch_id}), init {report.mode}: "
                f"{report.describe()}"
            )
        loop = _Loop(self, kd, cache, trim, translations)
        every = max(1, checkpoint_every // self.settings.log_every) * self.settings.log_every
        state = loop.train(checkpoint_dir, every, resume, on_step)
        losses = loop.evaluate(eval_sentences)
        return DistillOutcome(
            student=kd.student.cpu(),
            projection=kd.projection.cpu(),
            arch=self.arch,
            init=report,
            pairs=self.pairs,
            hidden_loss=losses.get("hidden"),
            pooled_loss=losses["pooled"],
            relation_loss=losses.get("relation"),
            curve=tuple(state.curve),
            steps=state.step,
            sentences_seen=state.sentences,
            train_s=state.train_s,
            sentences_per_s=state.sentences / state.train_s if state.train_s else 0.0,
            world_size=self.env.world,
            corpus_hash=cache.meta.sentences_hash,
            layer_loss=losses.get("layers"),
            cosine=1.0 - losses["cosine"],
            translations=translations.languages if translations is not None else None,
            vocab_trim=trim,
        )


CALIBRATION_SENTENCES = 256  # what --init activations scores the teacher's parts on


def _calibration(cache: TeacherCache) -> tuple[Tensor, Tensor]:
    """The first cached sentences as teacher inputs (a random sample: caches are shuffled)."""
    batch = cache.batch(np.arange(min(CALIBRATION_SENTENCES, len(cache))), ())
    return batch.input_ids, batch.attention_mask


class _Loop:
    """The optimisation loop of one run, and the final evaluation."""

    def __init__(
        self,
        run: _Run,
        kd: KDModule,
        cache: TeacherCache,
        trim: VocabTrim | None,
        translations: Translations | None,
    ):
        self.run, self.kd, self.cache, self.translations = run, kd, cache, translations
        self.settings, self.env, self.device = run.settings, run.env, run.device
        self.token_map = (
            torch.from_numpy(trim.old_to_new()).to(self.device) if trim is not None else None
        )
        self.plan = BatchPlan(cache.lengths, self.settings.batch_size, self.settings.seed)
        self.identity = run_identity(self.settings, run.arch, cache, translations)

    def _batch(self, indices: npt.NDArray[np.int64]) -> TeacherBatch:
        batch = self.cache.batch(indices, self.run.needed).to(self.device)
        if self.token_map is not None:
            batch.input_ids = self.token_map[batch.input_ids]
        return batch

    def _parallel(
        self, whole: npt.NDArray[np.int64], step: int, rank: int = 0, world: int = 1
    ) -> ParallelBatch | None:
        """This step's translations of this process's share of the global batch ``whole``."""
        if self.translations is None:
            return None
        seed = self.settings.seed
        sources, chosen = self.translations.share(
            whole, seed=seed, step=step, rank=rank, world=world
        )
        found = self.translations.batch(sources, chosen, self.cache.meta.pad_token_id)
        if found is None:
            return None
        found = found.to(self.device)
        if self.token_map is not None:
            found.input_ids = self.token_map[found.input_ids]
        return found

    def train(
        self,
        checkpoint_dir: Path | None,
        checkpoint_every: int,
        resume: bool,
        on_step: Callable[[int, LossPoint], None] | None,
    ) -> State:
        optimizer, scheduler = _optimizer(self.kd, self.settings)
        state = self._resume(checkpoint_dir, resume, optimizer, scheduler)
        model: nn.Module = self.kd
        if is_distributed():
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(self.kd)  # after restoring: it broadcasts rank 0's
        self.kd.train()
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), self._progress(state.step) as tick:
            for step in range(state.step + 1, self.settings.steps + 1):
                started = time.perf_counter()
                terms = self._one_step(model, optimizer, scheduler, step)
                if not math.isfinite(terms["loss"]):
                    raise Diverged(f"at step {step}", terms["loss"], self.settings.lr)
                state.train_s += time.perf_counter() - started
                state.step = step
                state.sentences += len(self.plan.batch(step - 1))
                lr = scheduler.get_last_lr()[0]
                state.record(step, terms, lr, self.settings.log_every, self.settings.steps)
                if (
                    checkpoint_dir is not None
                    and step % checkpoint_every == 0
                    and step < self.settings.steps
                ):
                    self._checkpoint(checkpoint_dir, optimizer, scheduler, state)
                tick(state)
                if on_step is not None:
                    point = LossPoint(
                        step,
                        terms["loss"],
                        terms.get("hidden"),
                        terms["pooled"],
                        terms.get("relation"),
                        lr,
                    )
                    on_step(step, point)
        return state

    def _one_step(
        self, model: nn.Module, optimizer: Any, scheduler: Any, step: int
    ) -> dict[str, float]:
        indices = self.plan.batch(step - 1)[self.env.rank :: self.env.world]
        batch = self._batch(indices)
        tokens, sentences = _counts(batch, self.device)
        torch.manual_seed(_step_seed(self.settings.seed, step, self.env.rank))  # dropout masks
        parallel = self._parallel(self.plan.batch(step - 1), step, self.env.rank, self.env.world)
        terms = model(batch, tokens, sentences, parallel)
        # Partial sums over the whole batch's counts; DDP averages, so scale back by the world.
        (terms["loss"] * self.env.world).backward()
        torch.nn.utils.clip_grad_norm_([p for p in self.kd.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return _detach_terms(terms)

    def _resume(
        self, checkpoint_dir: Path | None, resume: bool, optimizer: Any, scheduler: Any
    ) -> State:
        if checkpoint_dir is None or not resume:
            return State()
        body = agree(self.env, lambda: load_checkpoint(checkpoint_dir, self.identity))
        if body is None:
            if self.run.show:
                info(f"No checkpoint in {checkpoint_dir}: starting at step 0")
            return State()
        state = restore(body, self.kd, optimizer, scheduler)
        if self.run.show:
            info(f"Resuming from step {state.step} of {self.settings.steps} ({checkpoint_dir})")
        return state

    def _checkpoint(self, folder: Path, optimizer: Any, scheduler: Any, state: State) -> None:
        if self.env.is_main:
            save_checkpoint(folder, self.kd, optimizer, scheduler, state, self.identity)

    @contextmanager
    def _progress(self, start: int) -> Iterator[Callable[[State], None]]:
        if not self.run.show:
            yield lambda _state: None
            return
        with progress() as bar:
            task = bar.add_task("Distilling", total=self.settings.steps, completed=start)

            def tick(state: State) -> None:
                last = state.curve[-1] if state.curve else None
                speed = state.sentences / state.train_s if state.train_s else 0.0
                label = (
                    f"Distilling · loss {last.loss:.4f} · {speed:.1f} sent/s"
                    if last
                    else "Distilling"
                )
                bar.update(task, completed=state.step, description=label)

            yield tick

    def evaluate(self, limit: int) -> dict[str, float]:
        """Losses on the first ``limit`` sentences, eval mode: the run's final numbers."""
        indices = np.arange(min(limit, len(self.cache)))
        indices = indices[np.argsort(self.cache.lengths[indices], kind="stable")]
        batches = [
            indices[i : i + self.settings.batch_size]
            for i in range(0, len(indices), self.settings.batch_size)
        ]
        tokens = float(self.cache.lengths[indices].sum())
        self.kd.eval()
        totals: dict[str, float] = {}
        with torch.no_grad():
            for chunk in batches:
                parallel = self._parallel(chunk, 0)
                terms = self.kd(self._batch(chunk), tokens, float(len(indices)), parallel)
                for name, value in terms.items():
                    totals[name] = totals.get(name, 0.0) + float(value)
        return totals
