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

import copy
import datetime
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from kdcompress.artifacts import (
    DistillResult,
    LossPoint,
    StudentArch,
    VocabTrimStats,
    atomic_output_dir,
    check_output_dir,
)
from kdcompress.console import console, info, progress
from kdcompress.distill.losses import (
    attention_relation_loss,
    contrastive_loss,
    cosine_distance,
    normalised_hidden_loss,
    pooled_mse,
    relation_heads_for,
)
from kdcompress.distill.mapping import (
    HiddenProjection,
    LayerPair,
    show_mapping,
    teacher_layers_needed,
    uniform_last_pairs,
)
from kdcompress.distill.parallel import ParallelBatch, Translations
from kdcompress.distill.student import (
    BERT_FAMILY,
    InitReport,
    build_student,
    count_parameters,
    validate_arch,
    write_student_folder,
)
from kdcompress.distill.teacher_cache import (
    TeacherBatch,
    TeacherCache,
    corpus_hash,
    load_teacher,
    pool,
    teacher_fingerprint,
)
from kdcompress.distill.vocab import (
    VocabTrim,
    check_trimmed_tokenizer,
    plan_trim,
    read_tokenizer_json,
    tokenizer_bytes,
)
from kdcompress.errors import KDCompressError, UsageError, parse_choice
from kdcompress.model_card import write_model_card

CHECKPOINT = "checkpoint.pt"
_BUCKET = 50  # batches per length bucket: sorted within, shuffled across


class LossKind(StrEnum):
    """What the student learns. The pooled sentence embedding (cosine + normalised MSE) is
    always part of it: it is what users of an embedding model consume."""

    POOLED = "pooled"
    HIDDEN = "hidden"  # + the paper's multi-layer hidden-state loss L_HS (Uniform+Last)
    HIDDEN_RELATION = "hidden+attn-relation"  # + MiniLMv2 attention relations


class Targets(StrEnum):
    """Whose teacher embedding a sentence learns."""

    CROSS_LINGUAL = "cross-lingual"  # a translation learns its (English) source's
    OWN = "own"  # every sentence its own


def parse_loss(name: str) -> LossKind:
    return parse_choice(LossKind, name, what="--loss")


def parse_targets(name: str) -> Targets:
    return parse_choice(Targets, name, what="--targets")


def uses_hidden(loss: str) -> bool:
    return parse_loss(loss) is not LossKind.POOLED


@dataclass(frozen=True)
class DistillSettings:
    """Everything that determines a distillation run's numbers (and must match on resume)."""

    steps: int
    batch_size: int
    lr: float
    seed: int
    max_length: int
    init: str = "teacher"
    loss: str = LossKind.POOLED.value
    targets: str = Targets.OWN.value
    pooled_weight: float = 1.0  # normalised MSE of the sentence embedding
    cosine_weight: float = 1.0  # 1 - cosine of the sentence embedding
    contrastive_weight: float = 0.0  # in-batch InfoNCE of translations vs sources' targets
    temperature: float = 0.05
    relation_weight: float = 1.0
    relation_heads: int = 12
    freeze_embeddings: bool = True  # MISSION: frozen word embeddings help at these budgets
    trim_vocab: bool = False
    # One pass over plenty of text leaves no overfitting to fight, and dropout noise would
    # dominate a regression loss; None keeps the teacher's dropout.
    dropout: float | None = 0.0
    warmup: float = 0.06  # share of steps with a linear LR warm-up, then linear decay to 0
    weight_decay: float = 0.01
    log_every: int = 10

    def check(self, world: int) -> None:
        for name in ("steps", "batch_size", "max_length", "log_every"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name.replace('_', ' ')} must be >= 1")
        if self.lr <= 0:
            raise UsageError(f"learning rate must be > 0, got {self.lr}")
        if self.batch_size < world:
            raise UsageError(f"batch size {self.batch_size} is smaller than {world} processes")
        parse_loss(self.loss)
        parse_targets(self.targets)
        for name in ("pooled_weight", "cosine_weight", "contrastive_weight"):
            if getattr(self, name) < 0:
                raise UsageError(f"{name.replace('_', ' ')} must be >= 0")
        if self.temperature <= 0:
            raise UsageError(f"temperature must be > 0, got {self.temperature}")


@dataclass
class DistillOutcome:
    """A distilled student in memory, with its final losses and loss curve."""

    student: Any  # a transformers PreTrainedModel
    projection: HiddenProjection
    arch: StudentArch
    init: InitReport
    pairs: tuple[LayerPair, ...]
    hidden_loss: float | None  # final normalised L_HS on the evaluation sentences (eval mode)
    pooled_loss: float
    relation_loss: float | None
    curve: tuple[LossPoint, ...]
    steps: int
    sentences_seen: int
    train_s: float  # training-loop time, summed over resumed sessions
    sentences_per_s: float
    world_size: int
    corpus_hash: str
    vocab_trim: VocabTrim | None = None
    # L_HS without the embedding pair (eval mode), comparable across depths
    layer_loss: float | None = None
    cosine: float | None = None  # mean cosine of student and teacher embeddings (eval mode)
    translations: tuple[str, ...] | None = None  # languages of cross-lingual targets


# ----------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in a ``torchrun`` job (all zeros and ones when alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    node: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_env() -> DistEnv:
    """Read the ``torchrun`` environment variables."""

    def read(name: str, default: int) -> int:
        return int(os.environ.get(name, default))

    world = read("WORLD_SIZE", 1)
    return DistEnv(
        rank=read("RANK", 0),
        world=world,
        local_rank=read("LOCAL_RANK", 0),
        local_world=read("LOCAL_WORLD_SIZE", world),
        node=read("GROUP_RANK", 0),
    )


@contextmanager
def process_group(env: DistEnv) -> Iterator[None]:
    """Join the ``torchrun`` job (gloo on CPU, NCCL on GPU) if there is one and we are not in."""
    dist = torch.distributed
    created = env.world > 1 and not dist.is_initialized()
    if created:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(env.local_rank)
        # Long timeout: rank 0 may spend minutes writing outputs while the others wait.
        dist.init_process_group(backend, timeout=datetime.timedelta(hours=2))
    try:
        yield
    finally:
        if created:
            dist.destroy_process_group()


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def device_for(env: DistEnv) -> torch.device:
    return (
        torch.device("cuda", env.local_rank) if torch.cuda.is_available() else torch.device("cpu")
    )


def _all_reduce(values: Tensor) -> Tensor:
    if _distributed():
        torch.distributed.all_reduce(values)
    return values


def agree(env: DistEnv, check: Callable[[], Any]) -> Any:
    """Run ``check`` on rank 0 only and give every rank its result, or its error.

    For decisions about files that may exist only on rank 0's node (checkpoints, outputs):
    all ranks then raise the same error instead of some waiting forever for the others.
    """
    outcome: list[Any] = [None, None]
    if env.is_main:
        try:
            outcome[0] = check()
        except KDCompressError as exc:
            outcome[1] = exc
    if _distributed():
        torch.distributed.broadcast_object_list(outcome, src=0)
    if outcome[1] is not None:
        raise outcome[1]
    return outcome[0]


# ----------------------------------------------------------------------------- batches


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


# ----------------------------------------------------------------------------- the KD module


class KDModule(nn.Module):
    """Student + projection computing the distillation losses against cached targets."""

    def __init__(
        self,
        student: nn.Module,
        projection: HiddenProjection,
        pairs: Sequence[LayerPair],
        cache: TeacherCache,
        settings: DistillSettings,
        teacher_qkv: Sequence[nn.Linear] | None,
        relation_heads: int,
    ) -> None:
        super().__init__()
        self.student, self.projection = student, projection
        self.pairs = tuple(pairs)
        self.settings = settings
        self.hidden = uses_hidden(settings.loss)
        self.variances = (
            {p.teacher: cache.variance(p.teacher) for p in pairs} if self.hidden else {}
        )
        self.pooled_variance = cache.meta.pooled_variance
        self.pooling = cache.meta.pooling
        # The deployed model's embedding is the student's own pooled output: it learns the
        # teacher's directly where the widths agree, through the projection where they do not.
        self.project_pooled = projection.student_width != projection.teacher_width
        self.relation_source = cache.meta.teacher_layers - 1  # input of the teacher's last layer
        self.teacher_qkv = nn.ModuleList(teacher_qkv or [])
        self.relation_heads = relation_heads
        self._captured: dict[str, Tensor] = {}
        if teacher_qkv:
            last = student.encoder.layer[-1].attention.self  # type: ignore[union-attr,index]
            for name in ("query", "key", "value"):
                getattr(last, name).register_forward_hook(self._capture(name))

    def _capture(self, name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
            self._captured[name] = output

        return hook

    def embed(self, hidden: Tensor, mask: Tensor) -> Tensor:
        """The student's sentence embedding in the teacher's space."""
        pooled = pool(hidden, mask, self.pooling)
        return self.projection(pooled) if self.project_pooled else pooled

    def _match(self, student: Tensor, teacher: Tensor, sentences: Tensor | float) -> Tensor:
        """Cosine + normalised MSE of sentence embeddings against their teacher targets."""
        mse = pooled_mse(student, teacher, sentences=sentences) / self.pooled_variance
        cosine = cosine_distance(student, teacher, sentences=sentences)
        return self.settings.pooled_weight * mse + self.settings.cosine_weight * cosine

    def forward(
        self,
        batch: TeacherBatch,
        tokens: Tensor | float,
        sentences: Tensor | float,
        parallel: ParallelBatch | None = None,
    ) -> dict[str, Tensor]:
        mask = batch.attention_mask
        out = self.student(
            input_ids=batch.input_ids, attention_mask=mask, output_hidden_states=self.hidden
        )
        source = self.embed(out.last_hidden_state, mask)
        pooled = self._match(source, batch.pooled, sentences)
        terms = {"cosine": cosine_distance(source, batch.pooled, sentences=sentences)}
        if parallel is not None:
            translated = self.student(
                input_ids=parallel.input_ids, attention_mask=parallel.attention_mask
            ).last_hidden_state
            translated = self.embed(translated, parallel.attention_mask)
            targets = batch.pooled[parallel.rows]
            pooled = pooled + self._match(translated, targets, sentences)
            if self.settings.contrastive_weight > 0:
                contrast = contrastive_loss(
                    translated,
                    batch.pooled,
                    parallel.rows,
                    temperature=self.settings.temperature,
                    sentences=sentences,
                )
                terms["contrastive"] = contrast
                pooled = pooled + self.settings.contrastive_weight * contrast
        terms["pooled"] = pooled
        total = pooled
        if self.hidden:
            projected = {
                p.student: self.projection(out.hidden_states[p.student]) for p in self.pairs
            }
            hidden = normalised_hidden_loss(
                [projected[p.student] for p in self.pairs],
                [batch.hidden[p.teacher] for p in self.pairs],
                mask,
                variances=[self.variances[p.teacher] for p in self.pairs],
                tokens=tokens,
            )
            terms["hidden"] = hidden
            total = total + hidden
            if not self.training:
                terms["layers"] = self._layer_loss(projected, batch, tokens)
        if len(self.teacher_qkv):
            relation = self._relation(batch, tokens)
            terms["relation"] = relation
            total = total + self.settings.relation_weight * relation
        terms["loss"] = total
        return terms

    def _layer_loss(
        self, projected: dict[int, Tensor], batch: TeacherBatch, tokens: Tensor | float
    ) -> Tensor:
        """L_HS over the transformer layers' pairs only, leaving out the embedding pair.

        The embedding pair is all but solved from the teacher-initialised start, and it weighs
        1/2 in a 1-layer student's L_HS but 1/7 in a 6-layer one's: with it, the search would
        read shallow students as better than they are. Without it the loss compares depths.
        """
        layers = [p for p in self.pairs if p.student > 0]
        return normalised_hidden_loss(
            [projected[p.student] for p in layers],
            [batch.hidden[p.teacher] for p in layers],
            batch.attention_mask,
            variances=[self.variances[p.teacher] for p in layers],
            tokens=tokens,
        )

    def _relation(self, batch: TeacherBatch, tokens: Tensor | float) -> Tensor:
        source = batch.hidden[self.relation_source]
        teacher = [linear(source) for linear in self.teacher_qkv]
        student = [self._captured[name] for name in ("query", "key", "value")]
        return attention_relation_loss(
            student, teacher, batch.attention_mask, heads=self.relation_heads, tokens=tokens
        )


def _teacher_qkv(teacher: Any) -> list[nn.Linear]:
    """Frozen copies of the teacher's last-layer Q/K/V projections (targets for relations)."""
    attention = teacher.encoder.layer[-1].attention.self
    copies = [copy.deepcopy(getattr(attention, n)) for n in ("query", "key", "value")]
    for linear in copies:
        linear.requires_grad_(False)
    return copies


# ----------------------------------------------------------------------------- state


@dataclass
class _State:
    """Progress that a checkpoint must carry (besides the model and optimizer)."""

    step: int = 0
    curve: list[LossPoint] = field(default_factory=list)
    window: list[list[float]] = field(default_factory=list)  # per-step terms since last log
    train_s: float = 0.0
    sentences: int = 0

    def record(
        self, step: int, terms: dict[str, float], lr: float, log_every: int, last: int
    ) -> None:
        self.window.append(
            [terms["loss"], terms.get("hidden", -1.0), terms["pooled"], terms.get("relation", -1.0)]
        )
        if step % log_every == 0 or step == last:
            mean = np.mean(np.asarray(self.window), axis=0)
            hidden = float(mean[1]) if "hidden" in terms else None
            relation = float(mean[3]) if "relation" in terms else None
            self.curve.append(LossPoint(step, float(mean[0]), hidden, float(mean[2]), relation, lr))
            self.window = []


def _run_identity(
    settings: DistillSettings,
    arch: StudentArch,
    cache: TeacherCache,
    translations: Translations | None,
) -> dict[str, Any]:
    return {
        **asdict(settings),
        "arch": asdict(arch),
        "teacher": cache.meta.teacher_fingerprint,
        "sentences": cache.meta.sentences_hash,
        "translations": translations.hash if translations is not None else None,
    }


def _save_checkpoint(
    path: Path,
    kd: KDModule,
    optimizer: Any,
    scheduler: Any,
    state: _State,
    identity: dict[str, Any],
) -> None:
    body = {
        "identity": json.dumps(identity, sort_keys=True),
        "student": kd.student.state_dict(),
        "projection": kd.projection.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": state.step,
        "curve": [asdict(p) for p in state.curve],
        "train_s": state.train_s,
        "sentences": state.sentences,
    }
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / f".{CHECKPOINT}.tmp"
    torch.save(body, tmp)
    os.replace(tmp, path / CHECKPOINT)  # a kill mid-write leaves the previous checkpoint


def _load_checkpoint(path: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    file = path / CHECKPOINT
    if not file.is_file():
        return None
    body: dict[str, Any] = torch.load(file, map_location="cpu", weights_only=True)
    saved = json.loads(body["identity"])
    differs = sorted(k for k in set(saved) | set(identity) if saved.get(k) != identity.get(k))
    if differs:
        raise UsageError(
            f"the checkpoint in {path} was made with other settings ({', '.join(differs)} "
            "differ); rerun with the same options, or with --overwrite to start over"
        )
    return body


def _restore(body: dict[str, Any], kd: KDModule, optimizer: Any, scheduler: Any) -> _State:
    kd.student.load_state_dict(body["student"])
    kd.projection.load_state_dict(body["projection"])
    optimizer.load_state_dict(body["optimizer"])
    scheduler.load_state_dict(body["scheduler"])
    curve = [LossPoint(**p) for p in body["curve"]]
    return _State(body["step"], curve, [], float(body["train_s"]), int(body["sentences"]))


# ----------------------------------------------------------------------------- optimisation


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
    total = _all_reduce(local)
    return total[0].float(), total[1].float()


def _detach_terms(terms: dict[str, Tensor]) -> dict[str, float]:
    names = sorted(terms)
    stacked = torch.stack([terms[n].detach().double() for n in names])
    reduced = _all_reduce(stacked).tolist()
    return dict(zip(names, reduced, strict=True))


# ----------------------------------------------------------------------------- public API


def teacher_layers_for(teacher_config: Any, arch: StudentArch, loss: str) -> tuple[int, ...]:
    """Teacher hidden states a run reads: the layer map's, plus the relation loss's input."""
    if not uses_hidden(loss):
        return ()
    layers = teacher_config.num_hidden_layers
    pairs = uniform_last_pairs(layers, arch.layers)
    extra = (layers - 1,) if parse_loss(loss) is LossKind.HIDDEN_RELATION else ()
    return teacher_layers_needed(pairs, *extra)


def distill_student(
    *,
    teacher_dir: Path,
    arch: StudentArch,
    sentences: Sequence[str],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    max_length: int,
    init: str = "teacher",
    cache: TeacherCache | None = None,
    loss: str = "hidden",
    translations: Translations | None = None,
    contrastive_weight: float = 0.0,
    trim_vocab: bool = False,
    freeze_embeddings: bool = True,
    pooled_weight: float = 1.0,
    cosine_weight: float = 1.0,
    relation_weight: float = 1.0,
    relation_heads: int = 12,
    dropout: float | None = 0.0,
    log_every: int = 10,
    checkpoint_dir: Path | None = None,
    checkpoint_every: int = 200,
    resume: bool = False,
    eval_sentences: int = 256,
    show_progress: bool = False,
    on_step: Callable[[int, LossPoint], None] | None = None,
) -> DistillOutcome:
    """Distil ``arch`` from the teacher in ``teacher_dir`` on ``sentences``, in memory.

    ``cache``: teacher targets for exactly these ``sentences`` and ``max_length`` (see
    :meth:`TeacherCache.build`), built once and shared by many calls; without one a private
    cache is built in a temporary folder and removed. ``translations`` (aligned with
    ``sentences``) makes the targets cross-lingual: at every step each sentence is also paired
    with one of its translations, which learns the sentence's teacher embedding. Nothing is
    written unless ``checkpoint_dir`` is given: then a checkpoint is saved every
    ``checkpoint_every`` steps (rounded to a multiple of ``log_every``) and ``resume=True``
    continues from it.
    ``on_step(step, losses)`` is called after every optimizer step (it may raise to stop).
    The outcome's final losses are measured in eval mode on the first ``eval_sentences`` of
    ``sentences``.
    Under ``torchrun`` every process calls this with the same arguments.
    """
    settings = DistillSettings(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        max_length=max_length,
        init=init,
        loss=loss,
        targets=(Targets.OWN if translations is None else Targets.CROSS_LINGUAL).value,
        pooled_weight=pooled_weight,
        cosine_weight=cosine_weight,
        contrastive_weight=contrastive_weight,
        relation_weight=relation_weight,
        relation_heads=relation_heads,
        freeze_embeddings=freeze_embeddings,
        trim_vocab=trim_vocab,
        dropout=dropout,
        log_every=log_every,
    )
    env = dist_env()
    with process_group(env):
        settings.check(env.world)
        run = _Run(teacher_dir, arch, settings, env, show_progress)
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
    ) -> None:
        self.teacher_dir, self.arch = Path(teacher_dir), arch
        self.settings, self.env = settings, env
        self.show = show and env.is_main
        self.device = device_for(env)
        self.teacher = load_teacher(self.teacher_dir)
        config = self.teacher.config
        validate_arch(arch, teacher_config=config, init=settings.init)
        self.relation = parse_loss(settings.loss) is LossKind.HIDDEN_RELATION
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
            trim = plan_trim(read_tokenizer_json(self.teacher_dir), used, vocab_size=vocab)
        student, report = build_student(
            self.teacher,
            self.arch,
            init=self.settings.init,
            seed=self.settings.seed,
            keep_tokens=trim.keep_ids if trim else None,
            dropout=self.settings.dropout,
            calibration=_calibration(cache) if self.settings.init == "activations" else None,
        )
        if self.settings.freeze_embeddings:
            student.get_input_embeddings().weight.requires_grad_(False)
        dims = report.hidden_dims if len(report.hidden_dims) == self.arch.hidden else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.settings.seed)
            projection = HiddenProjection(self.arch.hidden, self.teacher.config.hidden_size, dims)
        qkv = _teacher_qkv(self.teacher) if self.relation else None
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
            show_mapping(self.pairs, report.source_layers, self.teacher.config.num_hidden_layers)
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
        self.identity = _run_identity(self.settings, run.arch, cache, translations)

    def _batch(self, indices: npt.NDArray[np.int64]) -> TeacherBatch:
        batch = self.cache.batch(indices, self.run.needed).to(self.device)
        if self.token_map is not None:
            batch.input_ids = self.token_map[batch.input_ids]
        return batch

    def _parallel(self, indices: npt.NDArray[np.int64], step: int) -> ParallelBatch | None:
        """This step's translations of the source sentences ``indices`` (None without any)."""
        if self.translations is None:
            return None
        chosen = self.translations.choose(indices, seed=self.settings.seed, step=step)
        found = self.translations.batch(indices, chosen, self.cache.meta.pad_token_id)
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
    ) -> _State:
        optimizer, scheduler = _optimizer(self.kd, self.settings)
        state = self._resume(checkpoint_dir, resume, optimizer, scheduler)
        model: nn.Module = self.kd
        if _distributed():
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(self.kd)  # after restoring: it broadcasts rank 0's
        self.kd.train()
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), self._progress(state.step) as tick:
            for step in range(state.step + 1, self.settings.steps + 1):
                started = time.perf_counter()
                terms = self._one_step(model, optimizer, scheduler, step)
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
        terms = model(batch, tokens, sentences, self._parallel(indices, step))
        # Partial sums over the whole batch's counts; DDP averages, so scale back by the world.
        (terms["loss"] * self.env.world).backward()
        torch.nn.utils.clip_grad_norm_([p for p in self.kd.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return _detach_terms(terms)

    def _resume(
        self, checkpoint_dir: Path | None, resume: bool, optimizer: Any, scheduler: Any
    ) -> _State:
        if checkpoint_dir is None or not resume:
            return _State()
        body = agree(self.env, lambda: _load_checkpoint(checkpoint_dir, self.identity))
        if body is None:
            if self.run.show:
                info(f"No checkpoint in {checkpoint_dir}: starting at step 0")
            return _State()
        state = _restore(body, self.kd, optimizer, scheduler)
        if self.run.show:
            info(f"Resuming from step {state.step} of {self.settings.steps} ({checkpoint_dir})")
        return state

    def _checkpoint(self, folder: Path, optimizer: Any, scheduler: Any, state: _State) -> None:
        if self.env.is_main:
            _save_checkpoint(folder, self.kd, optimizer, scheduler, state, self.identity)

    @contextmanager
    def _progress(self, start: int) -> Iterator[Callable[[_State], None]]:
        if not self.run.show:
            yield lambda _state: None
            return
        with progress() as bar:
            task = bar.add_task("Distilling", total=self.settings.steps, completed=start)

            def tick(state: _State) -> None:
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


# ----------------------------------------------------------------------------- the CLI stage

DEFAULT_EPOCH_SENTENCES = 20_000  # --epochs without --sentences: a cache of a few GB, not 100s


def checkpoint_dir_for(output: Path) -> Path:
    """Where a run writing ``output`` keeps checkpoints (and its teacher cache) until done."""
    return output.with_name(output.name + ".partial-ckpt")


def _prepare_output(output: Path, checkpoints: Path, *, resume: bool, overwrite: bool) -> None:
    check_output_dir(output, overwrite=overwrite)
    if not checkpoints.exists() or resume:
        return
    if overwrite:
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


def resolve_targets(targets: str | None, corpus_file: Path | None) -> Targets:
    """Cross-lingual targets on the aligned Bible, each sentence's own on a plain corpus."""
    if targets is None:
        return Targets.OWN if corpus_file is not None else Targets.CROSS_LINGUAL
    chosen = parse_targets(targets)
    if chosen is Targets.CROSS_LINGUAL and corpus_file is not None:
        raise UsageError("--targets cross-lingual needs the aligned Bible corpus, not --corpus")
    return chosen


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


def run_distill(
    *,
    teacher: str,
    arch: StudentArch,
    output: Path,
    steps: int | None = None,
    epochs: float | None = None,
    sentences: int | None = None,
    corpus_file: Path | None = None,
    languages: Sequence[str] = (),  # Bible languages; empty: all of them
    batch_size: int = 32,
    lr: float = 1e-4,
    max_length: int = 64,
    loss: str = LossKind.POOLED.value,
    targets: str | None = None,  # default: cross-lingual on the Bible, own with corpus_file
    contrastive_weight: float = 0.0,
    passages: float = 0.0,  # share of multi-verse passages (cross-lingual targets)
    init: str = "teacher",
    trim_vocab: bool = False,
    seed: int = 0,
    dropout: float = 0.0,
    cache_dir: Path | None = None,
    log_every: int = 10,
    checkpoint_every: int = 200,
    resume: bool = False,
    overwrite: bool = False,
) -> DistillResult | None:
    """The ``distill`` stage: corpus -> teacher cache -> distillation -> student folder.

    Writes ``output`` (a Hugging Face folder plus ``distill.json``) atomically at the end;
    until then checkpoints and the teacher cache live in ``OUTPUT.partial-ckpt/``, which
    ``resume=True`` continues from. Returns the result on rank 0, None on other ranks.
    With cross-lingual targets ``sentences`` counts English verses: every step pairs each with
    one of its translations, so a step reads twice ``batch_size`` sentences.
    """
    from transformers import AutoConfig

    from kdcompress.assets import read_embedding_info
    from kdcompress.models import resolve_model

    env = dist_env()
    with process_group(env):
        started = time.perf_counter()
        checkpoints = checkpoint_dir_for(output)
        agree(env, lambda: _prepare_output(output, checkpoints, resume=resume, overwrite=overwrite))
        teacher_dir = resolve_model(teacher)
        config = AutoConfig.from_pretrained(teacher_dir)
        validate_arch(arch, teacher_config=config, init=init)
        limit = _plan_size(steps, epochs, sentences, batch_size)
        chosen_targets = resolve_targets(targets, corpus_file)
        if corpus_file is None and not languages:
            languages = parse_languages("all")
        translations = None
        if chosen_targets is Targets.CROSS_LINGUAL:
            texts, aligned, translated = _parallel_text(languages, seed, limit, passages)
            info_prefix = read_embedding_info(teacher_dir).text_prefix
            translations = Translations(
                aligned,
                translated,
                teacher_dir=teacher_dir,
                max_length=max_length,
                prefix=info_prefix,
            )
        else:
            if passages:
                raise UsageError("--passages needs cross-lingual targets on the Bible")
            texts = _training_text(corpus_file, languages, seed, limit)
        if len(texts) < env.world:
            raise UsageError(f"only {len(texts)} training sentences for {env.world} processes")
        cache = TeacherCache.build(
            teacher_dir,
            texts,
            max_length,
            _cache_path(cache_dir, checkpoints, env),
            layers=teacher_layers_for(config, arch, loss),
            shard=(env.local_rank, env.local_world),
            show_progress=env.is_main,
        )
        cache_s = time.perf_counter() - started
        outcome = distill_student(
            teacher_dir=teacher_dir,
            arch=arch,
            sentences=texts,
            steps=_steps(steps, epochs, len(texts), batch_size),
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            max_length=max_length,
            init=init,
            cache=cache,
            loss=loss,
            translations=translations,
            contrastive_weight=contrastive_weight,
            trim_vocab=trim_vocab,
            dropout=dropout,
            log_every=log_every,
            checkpoint_dir=checkpoints,
            checkpoint_every=checkpoint_every,
            resume=resume,
            show_progress=True,
        )
        run = _RunFacts(
            teacher,
            teacher_dir,
            texts,
            languages,
            corpus_file,
            cache,
            cache_s,
            batch_size,
            passages,
        )
        result = agree(
            env,
            lambda: _write_output(
                outcome, run, output, overwrite=overwrite, lr=lr, seed=seed, loss=loss
            ),
        )
        if env.local_rank == 0:  # every node removes its own teacher cache (and rank 0 the rest)
            shutil.rmtree(checkpoints, ignore_errors=True)
        return result if env.is_main else None


def _cache_path(cache_dir: Path | None, checkpoints: Path, env: DistEnv) -> Path:
    if cache_dir is not None:
        return cache_dir
    # Several nodes on one shared filesystem must not write the same cache files at once.
    suffix = f"-node{env.node}" if env.world > env.local_world else ""
    return checkpoints / f"teacher-cache{suffix}"


@dataclass(frozen=True)
class _RunFacts:
    teacher: str
    teacher_dir: Path
    texts: list[str]
    languages: Sequence[str]
    corpus_file: Path | None
    cache: TeacherCache
    cache_s: float
    batch_size: int
    passages: float


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
        tokenizer_bytes_before=tokenizer_bytes(run.teacher_dir),
        tokenizer_bytes_after=tokenizer_bytes(folder),
    )


def _write_output(
    outcome: DistillOutcome,
    run: _RunFacts,
    output: Path,
    *,
    overwrite: bool,
    lr: float,
    seed: int,
    loss: str,
) -> DistillResult:
    meta = run.cache.meta
    with atomic_output_dir(output, overwrite=overwrite) as staging:
        # The sentence-transformers config keeps the model's own input limit, not the
        # distillation's (64 by default): students are evaluated, and used, on longer texts.
        write_student_folder(outcome.student, run.teacher_dir, staging, trim=outcome.vocab_trim)
        if outcome.vocab_trim is not None:
            sample = [meta.text_prefix + t for t in run.texts[:200]]
            check_trimmed_tokenizer(
                run.teacher_dir, staging, outcome.vocab_trim, sample, max_length=meta.max_length
            )
        result = DistillResult(
            arch=outcome.arch,
            arch_id=outcome.arch.arch_id,
            teacher=run.teacher,
            init=outcome.init.mode,
            init_details=outcome.init.details,
            loss=loss,
            layer_map=tuple((p.student, p.teacher) for p in outcome.pairs),
            steps=outcome.steps,
            batch_size=run.batch_size,
            lr=lr,
            seed=seed,
            max_length=meta.max_length,
            languages=tuple(run.languages) if run.corpus_file is None else (),
            sentences=len(run.texts),
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
            targets=Targets.OWN.value if outcome.translations is None else Targets.CROSS_LINGUAL,
            final_cosine=outcome.cosine,
            passages=run.passages,
        )
        result.save(staging / "distill.json")
        write_model_card(staging, result, model_path=output)
    return result


def show_result(result: DistillResult, output: Path) -> None:
    """The run's summary as a table on the kdcompress console."""
    from rich.table import Table

    table = Table(title=f"Distilled {result.arch.describe()} -> {output}")
    table.add_column("")
    table.add_column("value", justify="right")
    rows = [
        ("init", result.init),
        ("steps x batch", f"{result.steps} x {result.batch_size}"),
        ("training sentences", f"{result.sentences:,}"),
        ("objective", f"{result.loss}, {result.targets} targets"),
        ("final sentence-embedding loss", f"{result.final_pooled_loss:.4f}"),
        ("training time", f"{result.wall_s:.0f} s ({result.sentences_per_s:.1f} sentences/s)"),
        ("teacher cache", f"{result.teacher_cache_s:.0f} s"),
        ("parameters", f"{result.parameters:,}"),
    ]
    if result.final_cosine is not None:
        rows.insert(5, ("final cosine to the teacher", f"{result.final_cosine:.4f}"))
    if result.final_hidden_loss is not None:
        rows.insert(4, ("final hidden loss L_HS (normalised)", f"{result.final_hidden_loss:.4f}"))
    if result.final_relation_loss is not None:
        rows.insert(5, ("final attention-relation loss", f"{result.final_relation_loss:.4f}"))
    if result.vocab is not None:
        v = result.vocab
        rows += [
            ("vocabulary", f"{v.vocab_before:,} -> {v.vocab_after:,}"),
            ("parameters before trimming", f"{v.params_before:,}"),
            ("weights (fp32)", _mb(v.weights_bytes_before, v.weights_bytes_after)),
            ("tokenizer files", _mb(v.tokenizer_bytes_before, v.tokenizer_bytes_after)),
        ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


def _mb(before: int, after: int) -> str:
    return f"{before / 1e6:.1f} MB -> {after / 1e6:.1f} MB"
