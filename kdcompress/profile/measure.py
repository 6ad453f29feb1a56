"""Measuring a machine: building blocks and whole encoders, resumable, on one backend.

Blocks are exported and run exactly like a deployed model (same exporter path, same runtime,
same thread count): the embedding lookup per hidden size, the attention block per (hidden,
heads) and the FFN block per (hidden, FFN), each at every (sequence length, batch). Whole
random-init encoders are then measured to fit and to test the latency model.
"""

from __future__ import annotations

import random
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from kdcompress.artifacts import LatencyStats, StudentArch
from kdcompress.backends import Backend, BackendName, LoadedModel
from kdcompress.backends.base import benchmark_stable
from kdcompress.encoding import synthetic_batch
from kdcompress.errors import UsageError
from kdcompress.latency.predictor import FEATURES
from kdcompress.latency.schema import BlockTiming, ModelTiming, ProfileSettings, block_key
from kdcompress.space import SearchSpace


@dataclass(frozen=True)
class BlockGraph:
    """One block graph; measured at every (seq_len, batch) of the profile."""

    block: str
    hidden: int
    heads: int = 0
    ffn: int = 0

    def keys(self, settings: ProfileSettings, round_: int) -> list[str]:
        return [
            f"{block_key(self.block, self.hidden, self.heads, self.ffn, s, b)}#{round_}"
            for s in settings.seq_lens
            for b in settings.batch_sizes
        ]


def block_graphs(space: SearchSpace) -> list[BlockGraph]:
    """Every block shape the search space can produce."""
    hidden_sizes = sorted({h for h, _ in space.attention_shapes()})
    graphs = [BlockGraph("embedding", h) for h in hidden_sizes]
    graphs += [BlockGraph("attention", h, heads=a) for h, a in space.attention_shapes()]
    graphs += [BlockGraph("ffn", h, ffn=f) for h, f in space.ffn_shapes()]
    return graphs


MIN_FIT = len(FEATURES)  # whole encoders the correction needs, at least


def _cost(arch: StudentArch) -> int:
    """Multiply-adds per token: orders architectures from cheap to expensive."""
    return arch.layers * (4 * arch.hidden**2 + 2 * arch.hidden * arch.ffn)


def choose_architectures(settings: ProfileSettings) -> list[tuple[StudentArch, str]]:
    """Fit and held-out architectures, both spread evenly over the cost range of the space
    (its cheapest ``encoder_share``), then the teacher's shape if the settings name one.

    The space is sorted by cost and cut into equal strata, one architecture drawn (seeded) per
    stratum; held-out picks are spaced evenly among them, so neither set clusters at one end.
    A space smaller than asked gives all its architectures, split in the asked proportion.
    """
    ordered = sorted(set(settings.space.architectures()), key=lambda a: (_cost(a), a.arch_id))
    n_fit, n_heldout = settings.fit_architectures, settings.heldout_architectures
    if len(ordered) < n_fit + n_heldout:
        if len(ordered) < MIN_FIT + (1 if n_heldout else 0):
            raise UsageError(
                f"the search space has {len(ordered)} architectures; at least "
                f"{MIN_FIT + 1} are needed to fit and test the latency model"
            )
        n_fit = max(MIN_FIT, round(len(ordered) * n_fit / (n_fit + n_heldout)))
        n_heldout = len(ordered) - n_fit if n_heldout else 0
        n_fit = len(ordered) - n_heldout
    wanted = n_fit + n_heldout
    cheap = [a for a in ordered if _cost(a) <= settings.encoder_share * _cost(ordered[-1])]
    ordered = cheap if len(cheap) >= wanted else ordered[:wanted]
    rng = random.Random(settings.seed)
    step = len(ordered) / wanted
    picks = [ordered[int((i + rng.random()) * step)] for i in range(wanted)]
    heldout = set(np.linspace(1, wanted - 1, n_heldout).round().astype(int)) if n_heldout else set()
    chosen = [(arch, "heldout" if i in heldout else "fit") for i, arch in enumerate(picks)]
    teacher = replace(settings.teacher, activation="gelu") if settings.teacher else None
    if teacher is not None and teacher not in picks:
        chosen.append((teacher, "teacher"))
    return chosen


def _bert_config(
    *,
    hidden: int,
    heads: int,
    ffn: int,
    layers: int,
    settings: ProfileSettings,
    vocab: int | None = None,
) -> Any:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab or settings.vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ffn,
        max_position_embeddings=max(512, max(settings.seq_lens) + 2),
    )


def _block_module(graph: BlockGraph, settings: ProfileSettings) -> tuple[Any, tuple[str, ...]]:
    import torch
    from transformers.models.bert import modeling_bert as bert

    heads = graph.heads or max(a for h, a in settings.space.attention_shapes() if h == graph.hidden)
    ffn = graph.ffn or 4 * graph.hidden
    config = _bert_config(hidden=graph.hidden, heads=heads, ffn=ffn, layers=1, settings=settings)
    # A bare config has no attention implementation chosen; a loaded model gets SDPA.
    config._attn_implementation = "sdpa"

    class Embedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = bert.BertEmbeddings(config)

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.inner(input_ids=input_ids)

    class Attention(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = bert.BertAttention(config)

        def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
            return self.inner(hidden_states)[0]

    class FeedForward(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.intermediate = bert.BertIntermediate(config)
            self.output = bert.BertOutput(config)

        def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
            return self.output(self.intermediate(hidden_states), hidden_states)

    torch.manual_seed(settings.seed)
    if graph.block == "embedding":
        return Embedding().eval(), ("input_ids",)
    module = Attention() if graph.block == "attention" else FeedForward()
    return module.eval(), ("hidden_states",)


def _block_inputs(
    graph: BlockGraph, settings: ProfileSettings, seq_len: int, batch: int
) -> dict[str, np.ndarray]:
    if graph.block == "embedding":
        return {
            "input_ids": synthetic_batch(vocab_size=settings.vocab, batch=batch, seq_len=seq_len)[
                "input_ids"
            ]
        }
    rng = np.random.default_rng(settings.seed)
    return {"hidden_states": rng.standard_normal((batch, seq_len, graph.hidden), dtype=np.float32)}


def load_block(
    backend: Backend, graph: BlockGraph, settings: ProfileSettings, workdir: Path
) -> LoadedModel:
    """The block as the backend will run it: a PyTorch module, or an exported ONNX graph."""
    import torch

    module, input_names = _block_module(graph, settings)
    if backend.name is BackendName.TORCH:
        from kdcompress.backends.torch import TorchModuleModel

        return TorchModuleModel(module, input_names=input_names, threads=settings.threads)
    path = workdir / f"{graph.block}-{graph.hidden}-{graph.heads}-{graph.ffn}.onnx"
    if not path.is_file():  # exported once, loaded afresh in every pass
        example = _block_inputs(graph, settings, 8, 1)
        partial = path.with_suffix(".partial")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                tuple(torch.from_numpy(example[n]) for n in input_names),
                str(partial),
                input_names=list(input_names),
                output_names=["output"],
                dynamic_axes={n: {0: "batch", 1: "sequence"} for n in input_names},
                opset_version=17,
                dynamo=False,
            )
        partial.rename(path)
    return backend.load(model_path=path, threads=settings.threads)


def measure(
    model: LoadedModel, batch: dict[str, np.ndarray], settings: ProfileSettings
) -> LatencyStats:
    """One point of the profile, its statistics without the raw samples: a profile times
    hundreds of points with thousands of calls each (half a million samples, megabytes)."""
    return benchmark_stable(
        model,
        batch,
        warmup=settings.warmup,
        runs=settings.runs,
        max_retries=settings.retries,
        patience_s=settings.patience_s,
    ).without_samples()


def measure_blocks(
    backend: Backend,
    graph: BlockGraph,
    settings: ProfileSettings,
    done: set[str],
    round_: int,
    workdir: Path,
) -> Iterator[BlockTiming]:
    """Timings of ``graph`` in pass ``round_`` at every shape not already in ``done``."""
    model = load_block(backend, graph, settings, workdir)
    for seq_len in settings.seq_lens:
        for batch in settings.batch_sizes:
            key = block_key(graph.block, graph.hidden, graph.heads, graph.ffn, seq_len, batch)
            if f"{key}#{round_}" in done:
                continue
            stats = measure(model, _block_inputs(graph, settings, seq_len, batch), settings)
            yield BlockTiming(
                graph.block, graph.hidden, graph.heads, graph.ffn, seq_len, batch, stats, round_
            )


def model_keys(arch: StudentArch, settings: ProfileSettings, round_: int) -> list[str]:
    return [
        f"model/{arch.arch_id}/s{s}/b{b}#{round_}"
        for s in settings.seq_lens
        for b in settings.batch_sizes
    ]


def encoder_vocab(arch: StudentArch, role: str, settings: ProfileSettings) -> int:
    """The vocabulary size of a profiled encoder: the profile's for the fit; for a held-out one,
    one of ``settings.heldout_vocabs`` chosen by its architecture id (stable across a resume)."""
    choices = settings.heldout_vocabs
    if role != "heldout" or not choices:
        return settings.vocab
    return choices[int(arch.arch_id, 16) % len(choices)]


def exported_encoder(
    backend: Backend, arch: StudentArch, settings: ProfileSettings, workdir: Path, vocab: int
) -> Path:
    """A random-init encoder of shape ``arch`` in the backend's format, exported once per
    profile (``workdir`` keeps it across passes and across an interruption).

    It goes through ``backend.export``, the exporter the export stage runs for a student (which
    only adds the sentence-transformers layout around the same graph), and is loaded the same
    way; a trained student's weights change its outputs, not its graph or its latency.
    """
    import torch
    from transformers import BertModel

    target = workdir / f"encoder-{arch.arch_id}-v{vocab}"
    if not target.is_dir():
        with tempfile.TemporaryDirectory(prefix="encoder-", dir=workdir) as scratch:
            source, exported = Path(scratch) / "hf", Path(scratch) / "exported"
            torch.manual_seed(settings.seed)
            config = _bert_config(
                hidden=arch.hidden,
                heads=arch.heads,
                ffn=arch.ffn,
                layers=arch.layers,
                settings=settings,
                vocab=vocab,
            )
            BertModel(config, add_pooling_layer=False).save_pretrained(source)
            artifact = backend.export(model_dir=source, output_dir=exported)
            (exported / "artifact.txt").write_text(artifact.relative_to(exported).as_posix())
            exported.rename(target)
    return target / (target / "artifact.txt").read_text()


def measure_model(
    backend: Backend,
    arch: StudentArch,
    role: str,
    settings: ProfileSettings,
    done: set[str],
    round_: int,
    workdir: Path,
) -> Iterator[ModelTiming]:
    """Timings of a random-init encoder of shape ``arch``, exported to the backend's format."""
    vocab = encoder_vocab(arch, role, settings)
    artifact = exported_encoder(backend, arch, settings, workdir, vocab)
    model = backend.load(model_path=artifact, threads=settings.threads)
    for seq_len in settings.seq_lens:
        for batch in settings.batch_sizes:
            if f"model/{arch.arch_id}/s{seq_len}/b{batch}#{round_}" in done:
                continue
            inputs = synthetic_batch(vocab_size=vocab, batch=batch, seq_len=seq_len)
            stats = measure(model, inputs, settings)
            yield ModelTiming(arch, seq_len, batch, role, stats, round_)
