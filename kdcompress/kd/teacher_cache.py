"""Teacher targets computed once, stored on disk, and read back batch by batch.

The teacher's forward pass costs about as much as the student's forward and backward together
(MISSION, "Distillation budget"), so it is run once per sentence, not once per epoch or per
search candidate. A cache holds, for a fixed list of sentences:

- ``input_ids.npy`` / ``offsets.npy``: the teacher's token ids, unpadded, one run per sentence;
- ``hidden-LL.npy``: teacher hidden state ``LL`` (0 = embeddings) of every token, float16,
  memory-mapped, one file per layer, so a cache built with every layer serves students of any
  depth (each reads only the layers its map needs);
- ``pooled.npy``: the teacher's sentence embedding (float32);
- ``meta.json``: what it was built from (teacher fingerprint, sentences hash, max length, text
  prefix) and corpus-wide per-layer variances, the normalisers of the hidden-state loss.

The teacher pass goes through the sentences sorted by length (little padding) and records its
progress per shard, so a killed build resumes, and the local processes of a ``torchrun`` job
split the pass between them (each node builds its own copy).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from kdcompress.artifacts import Artifact
from kdcompress.console import progress
from kdcompress.errors import ArtifactError, UsageError

_FLUSH_EVERY = 20  # batches between progress records: at most this many are redone after a kill


@dataclass(frozen=True)
class CacheMeta(Artifact):
    """``meta.json`` of a teacher cache."""

    kind = "teacher-cache"

    teacher_fingerprint: str
    teacher_layers: int
    hidden: int
    layers: tuple[int, ...]
    max_length: int
    text_prefix: str
    pooling: str
    pad_token_id: int
    sentences: int
    tokens: int
    sentences_hash: str
    batch_size: int
    variances: tuple[float, ...] = ()  # per stored layer, aligned with ``layers``
    pooled_variance: float = 0.0
    complete: bool = False


@dataclass
class TeacherBatch:
    """Padded student inputs and the teacher's targets for a list of sentences."""

    input_ids: Tensor  # teacher token ids, padded with the pad id
    attention_mask: Tensor
    hidden: dict[int, Tensor]  # teacher layer -> (batch, tokens, hidden), float32
    pooled: Tensor  # (batch, hidden), float32

    def to(self, device: torch.device) -> TeacherBatch:
        return TeacherBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            {k: v.to(device) for k, v in self.hidden.items()},
            self.pooled.to(device),
        )


def corpus_hash(sentences: Sequence[str]) -> str:
    """A stable id of an ordered list of sentences (16 hex digits)."""
    digest = hashlib.sha256()
    for sentence in sentences:
        data = sentence.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()[:16]


def teacher_fingerprint(teacher_dir: Path) -> str:
    """A content hash of a model folder's config, tokenizer and weights (16 hex digits)."""
    files = sorted(
        p
        for p in Path(teacher_dir).iterdir()
        if p.name in ("config.json", "tokenizer.json") or p.suffix in (".safetensors", ".bin")
    )
    stamp = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _hash_files(stamp)


@lru_cache(maxsize=16)
def _hash_files(stamp: tuple[tuple[str, int, int], ...]) -> str:
    # Keyed on (path, size, mtime) so that the search's many proxy runs hash the weights once.
    digest = hashlib.sha256()
    for name, _size, _mtime in stamp:
        digest.update(Path(name).name.encode())
        with open(name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _barrier(shards: int) -> None:
    if shards > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


class TeacherCache:
    """A built teacher cache, opened read-only. Make one with :meth:`build`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.meta = CacheMeta.load(self.path / "meta.json")
        if not self.meta.complete:
            raise ArtifactError(f"{self.path}: teacher cache is incomplete (interrupted build)")
        self.input_ids = np.load(self.path / "input_ids.npy", mmap_mode="r")
        self.offsets = np.load(self.path / "offsets.npy")
        self.lengths = np.diff(self.offsets)
        self.pooled = np.load(self.path / "pooled.npy", mmap_mode="r")
        self.hidden = {
            layer: np.load(self.path / _layer_file(layer), mmap_mode="r")
            for layer in self.meta.layers
        }

    # ------------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        teacher_dir: Path,
        sentences: Sequence[str],
        max_length: int,
        cache_path: Path,
        *,
        layers: Sequence[int] | None = None,
        batch_size: int = 32,
        text_prefix: str | None = None,
        shard: tuple[int, int] = (0, 1),
        show_progress: bool = False,
    ) -> TeacherCache:
        """Run the teacher over ``sentences`` once and store its targets in ``cache_path``.

        ``layers`` defaults to every hidden state (embeddings and all layers), which serves
        any student depth. ``text_prefix`` defaults to the teacher's (``kdcompress_model.json``,
        e.g. ``"query: "``). An existing complete cache built from the same teacher, sentences
        and settings with at least these layers is opened instead; an interrupted one resumes.
        ``shard=(i, k)``: this is process ``i`` of ``k`` sharing ``cache_path`` (torch.distributed
        must be initialised when ``k > 1``); each runs a ``1/k`` share of the teacher pass.
        """
        from kdcompress.assets import read_embedding_info
        from kdcompress.encoding import load_tokenizer

        teacher_dir, cache_path = Path(teacher_dir), Path(cache_path)
        info = read_embedding_info(teacher_dir)
        prefix = info.text_prefix if text_prefix is None else text_prefix
        tokenizer = load_tokenizer(teacher_dir)
        texts = [prefix + s for s in sentences]
        ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
        meta = _new_meta(
            teacher_dir,
            sentences,
            ids,
            layers,
            max_length,
            prefix,
            info.pooling,
            tokenizer.pad_token_id,
            batch_size,
        )
        state = _existing_state(cache_path, meta)
        _barrier(shard[1])
        if state == "complete":
            return cls(cache_path)
        if state == "absent" and shard[0] == 0:
            _create(cache_path, meta, ids)
        _barrier(shard[1])
        _TeacherPass(teacher_dir, cache_path, meta, shard).run(show_progress)
        _barrier(shard[1])
        if shard[0] == 0:
            _finalise(cache_path, meta, shard[1])
        _barrier(shard[1])
        return cls(cache_path)

    # ------------------------------------------------------------------ reading

    def __len__(self) -> int:
        return self.meta.sentences

    def covers(self, layers: Sequence[int]) -> bool:
        return set(layers) <= set(self.meta.layers)

    def variance(self, layer: int) -> float:
        """Corpus-wide variance of teacher hidden state ``layer`` (mean over features)."""
        return self.meta.variances[self.meta.layers.index(layer)]

    def token_ids(self) -> npt.NDArray[np.int32]:
        """Every teacher token id in the cache (with repeats), for vocabulary trimming."""
        return np.asarray(self.input_ids)

    def batch(
        self, indices: Sequence[int] | npt.NDArray[np.int64], layers: Sequence[int]
    ) -> TeacherBatch:
        """Sentences ``indices`` padded to their longest, with the targets of ``layers``."""
        missing = set(layers) - set(self.meta.layers)
        if missing:
            raise UsageError(f"{self.path}: teacher cache lacks layers {sorted(missing)}")
        idx = np.asarray(indices, dtype=np.int64)
        lengths = self.lengths[idx]
        rows = np.repeat(np.arange(len(idx)), lengths)
        cols = np.concatenate([np.arange(n) for n in lengths])
        positions = np.repeat(self.offsets[idx], lengths) + cols
        width = int(lengths.max())
        ids = np.full((len(idx), width), self.meta.pad_token_id, dtype=np.int64)
        ids[rows, cols] = self.input_ids[positions]
        mask = np.zeros((len(idx), width), dtype=np.int64)
        mask[rows, cols] = 1
        hidden = {}
        for layer in layers:
            padded = np.zeros((len(idx), width, self.meta.hidden), dtype=np.float32)
            padded[rows, cols] = self.hidden[layer][positions]
            hidden[layer] = torch.from_numpy(padded)
        pooled = torch.from_numpy(np.asarray(self.pooled[idx], dtype=np.float32))
        return TeacherBatch(torch.from_numpy(ids), torch.from_numpy(mask), hidden, pooled)


def _layer_file(layer: int) -> str:
    return f"hidden-{layer:02d}.npy"


def _shard_file(index: int, count: int) -> str:
    return f"shard-{index}-of-{count}.npz"


def _new_meta(
    teacher_dir: Path,
    sentences: Sequence[str],
    ids: list[list[int]],
    layers: Sequence[int] | None,
    max_length: int,
    prefix: str,
    pooling: str,
    pad_token_id: int | None,
    batch_size: int,
) -> CacheMeta:
    from transformers import AutoConfig

    if not sentences:
        raise UsageError("cannot build a teacher cache from zero sentences")
    if pooling not in ("mean", "cls"):
        raise UsageError(f"{teacher_dir}: unsupported pooling '{pooling}' (mean or cls)")
    config = AutoConfig.from_pretrained(teacher_dir)
    every = tuple(range(config.num_hidden_layers + 1))
    chosen = tuple(sorted(set(layers))) if layers is not None else every
    if not set(chosen) <= set(every):
        raise UsageError(f"teacher has hidden states 0..{every[-1]}, not {sorted(chosen)}")
    return CacheMeta(
        teacher_fingerprint=teacher_fingerprint(teacher_dir),
        teacher_layers=config.num_hidden_layers,
        hidden=config.hidden_size,
        layers=chosen,
        max_length=max_length,
        text_prefix=prefix,
        pooling=pooling,
        pad_token_id=int(pad_token_id if pad_token_id is not None else 0),
        sentences=len(sentences),
        tokens=sum(len(x) for x in ids),
        sentences_hash=corpus_hash(sentences),
        batch_size=batch_size,
    )


def _same_source(a: CacheMeta, b: CacheMeta) -> list[str]:
    keys = ("teacher_fingerprint", "sentences_hash", "max_length", "text_prefix", "sentences")
    return [k for k in keys if getattr(a, k) != getattr(b, k)]


def _existing_state(path: Path, wanted: CacheMeta) -> str:
    """``absent`` (build from scratch), ``partial`` (resume) or ``complete`` (just open)."""
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        return "absent"
    found = CacheMeta.load(meta_path)
    differs = _same_source(found, wanted)
    if differs:
        raise UsageError(
            f"{path} holds a teacher cache of other inputs ({', '.join(differs)} differ); "
            "choose another cache path or delete it"
        )
    if found.complete and set(wanted.layers) <= set(found.layers):
        return "complete"
    if not found.complete and (found.layers, found.batch_size) == (
        wanted.layers,
        wanted.batch_size,
    ):
        return "partial"
    return "absent"  # complete but with too few layers, or settings changed: rebuild


def cache_bytes(meta: CacheMeta) -> int:
    """Disk space a cache takes: float16 hidden states dominate."""
    return meta.tokens * (len(meta.layers) * meta.hidden * 2 + 4) + meta.sentences * meta.hidden * 4


def _create(path: Path, meta: CacheMeta, ids: list[list[int]]) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    free, needed = shutil.disk_usage(path).free, cache_bytes(meta)
    if needed > 0.9 * free:
        shutil.rmtree(path)
        raise UsageError(
            f"the teacher cache needs {needed / 1e9:.1f} GB but {path.parent} has "
            f"{free / 1e9:.1f} GB free: use fewer sentences or layers, or another --cache"
        )
    lengths = np.asarray([len(x) for x in ids], dtype=np.int64)
    np.save(path / "offsets.npy", np.concatenate([[0], np.cumsum(lengths)]))
    np.save(path / "input_ids.npy", np.fromiter((t for x in ids for t in x), dtype=np.int32))
    for layer in meta.layers:
        np.lib.format.open_memmap(
            path / _layer_file(layer), mode="w+", dtype=np.float16, shape=(meta.tokens, meta.hidden)
        ).flush()
    np.lib.format.open_memmap(
        path / "pooled.npy", mode="w+", dtype=np.float32, shape=(meta.sentences, meta.hidden)
    ).flush()
    meta.save(path / "meta.json")  # written last: its presence means the files are allocated


@dataclass
class _Stats:
    """Running sums for per-feature variances (float64: millions of tokens)."""

    done: int
    sums: npt.NDArray[np.float64]  # (layers, hidden)
    squares: npt.NDArray[np.float64]
    count: int
    pooled_sum: npt.NDArray[np.float64]
    pooled_squares: npt.NDArray[np.float64]
    pooled_count: int

    @classmethod
    def load_or_new(cls, path: Path, layers: int, hidden: int) -> _Stats:
        if path.is_file():
            with np.load(path) as data:
                return cls(
                    int(data["done"]),
                    data["sums"],
                    data["squares"],
                    int(data["count"]),
                    data["pooled_sum"],
                    data["pooled_squares"],
                    int(data["pooled_count"]),
                )
        zeros = np.zeros((layers, hidden))
        return cls(0, zeros, zeros.copy(), 0, np.zeros(hidden), np.zeros(hidden), 0)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
        os.replace(tmp, path)


class _TeacherPass:
    """One process's share of the teacher forward passes, writing into the cache files."""

    def __init__(self, teacher_dir: Path, path: Path, meta: CacheMeta, shard: tuple[int, int]):
        self.path, self.meta, self.shard = path, meta, shard
        self.offsets = np.load(path / "offsets.npy")
        self.input_ids = np.load(path / "input_ids.npy")
        lengths = np.diff(self.offsets)
        order = np.argsort(-lengths, kind="stable")
        batches = [order[i : i + meta.batch_size] for i in range(0, len(order), meta.batch_size)]
        self.batches = batches[shard[0] :: shard[1]]
        self.teacher_dir = teacher_dir
        cuda = torch.cuda.is_available()
        self.device = torch.device("cuda", torch.cuda.current_device()) if cuda else None

    def run(self, show_progress: bool) -> None:
        stats_path = self.path / _shard_file(*self.shard)
        stats = _Stats.load_or_new(stats_path, len(self.meta.layers), self.meta.hidden)
        if stats.done >= len(self.batches):
            return
        teacher = load_teacher(self.teacher_dir).to(self.device)
        hidden = {k: np.load(self.path / _layer_file(k), mmap_mode="r+") for k in self.meta.layers}
        pooled = np.load(self.path / "pooled.npy", mmap_mode="r+")
        for index in self._progress(stats.done, show_progress):
            self._one_batch(teacher, self.batches[index], hidden, pooled, stats)
            stats.done = index + 1
            if stats.done % _FLUSH_EVERY == 0 or stats.done == len(self.batches):
                for array in (*hidden.values(), pooled):
                    array.flush()
                stats.save(stats_path)

    def _progress(self, start: int, show: bool) -> Iterator[int]:
        if not show:
            yield from range(start, len(self.batches))
            return
        with progress() as bar:
            total = sum(len(b) for b in self.batches)
            done = sum(len(b) for b in self.batches[:start])
            task = bar.add_task("Caching teacher targets (sentences)", total=total, completed=done)
            for index in range(start, len(self.batches)):
                yield index
                bar.advance(task, len(self.batches[index]))

    def _one_batch(
        self,
        teacher: Any,
        batch: npt.NDArray[np.int64],
        hidden: dict[int, np.memmap[Any, Any]],
        pooled: np.memmap[Any, Any],
        stats: _Stats,
    ) -> None:
        lengths = np.diff(self.offsets)[batch]
        width = int(lengths.max())
        ids = np.full((len(batch), width), self.meta.pad_token_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, (sentence, n) in enumerate(zip(batch, lengths, strict=True)):
            ids[row, :n] = self.input_ids[self.offsets[sentence] : self.offsets[sentence] + n]
            mask[row, :n] = 1
        with torch.inference_mode():
            out = teacher(
                input_ids=torch.from_numpy(ids).to(self.device),
                attention_mask=torch.from_numpy(mask).to(self.device),
                output_hidden_states=True,
            )
        keep = torch.from_numpy(mask).bool().to(self.device)
        positions = np.concatenate(
            [
                np.arange(self.offsets[s], self.offsets[s] + n)
                for s, n in zip(batch, lengths, strict=True)
            ]
        )
        for k, layer in enumerate(self.meta.layers):
            tokens = out.hidden_states[layer][keep].float().cpu()
            hidden[layer][positions] = tokens.numpy().astype(np.float16)
            values = tokens.double().numpy()
            stats.sums[k] += values.sum(axis=0)
            stats.squares[k] += (values**2).sum(axis=0)
        stats.count += int(mask.sum())
        sentence_vectors = pool(out.last_hidden_state.float(), keep, self.meta.pooling).cpu()
        pooled[batch] = sentence_vectors.numpy()
        vectors = sentence_vectors.double().numpy()
        stats.pooled_sum += vectors.sum(axis=0)
        stats.pooled_squares += (vectors**2).sum(axis=0)
        stats.pooled_count += len(batch)


def pool(hidden: Tensor, mask: Tensor, pooling: str) -> Tensor:
    """Sentence embeddings by the model's pooling recipe (``mean`` or ``cls``)."""
    from kdcompress.kd.losses import masked_mean_pool

    return hidden[:, 0] if pooling == "cls" else masked_mean_pool(hidden, mask)


def _finalise(path: Path, meta: CacheMeta, shards: int) -> None:
    parts = [
        _Stats.load_or_new(path / _shard_file(i, shards), len(meta.layers), meta.hidden)
        for i in range(shards)
    ]
    count = sum(p.count for p in parts)
    sums, squares = (
        np.sum([p.sums for p in parts], axis=0),
        np.sum([p.squares for p in parts], axis=0),
    )
    variances = (squares / count - (sums / count) ** 2).mean(axis=1)
    n = sum(p.pooled_count for p in parts)
    psum = np.sum([p.pooled_sum for p in parts], axis=0)
    psq = np.sum([p.pooled_squares for p in parts], axis=0)
    pooled_variance = float((psq / n - (psum / n) ** 2).mean())
    if count != meta.tokens or n != meta.sentences:
        raise ArtifactError(f"{path}: teacher pass covered {n} of {meta.sentences} sentences")
    done = dataclasses.replace(
        meta,
        variances=tuple(float(v) for v in variances),
        pooled_variance=pooled_variance,
        complete=True,
    )
    done.save(path / "meta.json")


def load_teacher(teacher_dir: Path) -> Any:
    """The teacher encoder in eval mode, without a pooler (only hidden states are used)."""
    import inspect

    from transformers import AutoConfig, AutoModel
    from transformers.models.auto.modeling_auto import MODEL_MAPPING
    from transformers.utils import logging as hf_logging

    # Not every encoder class has a pooler to leave out (DistilBERT has none).
    model_class: Any = MODEL_MAPPING[type(AutoConfig.from_pretrained(teacher_dir))]
    pooler = "add_pooling_layer" in inspect.signature(model_class).parameters
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "unused pooler weights" is expected, not news
    try:
        extra = {"add_pooling_layer": False} if pooler else {}
        model = AutoModel.from_pretrained(teacher_dir, **extra)
    finally:
        hf_logging.set_verbosity(previous)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model
