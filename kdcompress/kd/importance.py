"""Activation-based importance of a teacher's layers, heads, FFN neurons and hidden features.

Minitron (NVIDIA, 2024) prunes by what a model *does* on real text rather than by weight norms:
one forward pass over a few hundred calibration sentences scores

- each layer by its block influence, ``1 - cos(input, output)`` averaged over tokens (a layer
  that barely changes its input is the cheapest to drop);
- each attention head by the mean L2 norm of its context output;
- each FFN neuron by its mean absolute activation;
- each residual feature by its mean absolute value over every hidden state.

The student keeps the highest-scoring parts (:func:`kdcompress.kd.student.build_student`
with ``init="activations"``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class Importance:
    layers: Tensor  # (L,) block influence of teacher layers 1..L
    hidden: Tensor  # (H,) residual features
    heads: tuple[Tensor, ...]  # per layer, (A,)
    ffn: tuple[Tensor, ...]  # per layer, (F,)

    def source_layers(self, count: int) -> tuple[int, ...]:
        """``count`` teacher layers (1-based, ascending): the last one, whose output space the
        student's embedding must reproduce, and the most influential others."""
        last = len(self.layers)
        ranked = torch.argsort(self.layers[:-1], descending=True).tolist()
        return tuple(sorted([i + 1 for i in ranked[: count - 1]] + [last]))


class _Sums:
    """Running sums over real tokens, filled by forward hooks."""

    def __init__(self, layers: int) -> None:
        self.heads: list[Tensor | float] = [0.0] * layers
        self.ffn: list[Tensor | float] = [0.0] * layers
        self.mask: Tensor | None = None

    def hook(
        self, store: list[Tensor | float], index: int, score: Callable[[Tensor], Tensor]
    ) -> Callable[..., None]:
        def record(_module: Any, _inputs: Any, output: Any) -> None:
            value = output[0] if isinstance(output, tuple) else output
            assert self.mask is not None
            store[index] = store[index] + (score(value) * self.mask[..., None]).sum(dim=(0, 1))

        return record


def measure_importance(
    teacher: Any, input_ids: Tensor, attention_mask: Tensor, *, batch_size: int = 32
) -> Importance:
    """Scores of a BERT-family ``teacher`` from a forward pass over the calibration batch."""
    config = teacher.config
    layers, heads = config.num_hidden_layers, config.num_attention_heads
    head_dim = config.hidden_size // heads
    sums = _Sums(layers)
    handles = []
    for index, layer in enumerate(teacher.encoder.layer):
        handles.append(
            layer.attention.self.register_forward_hook(
                sums.hook(
                    sums.heads,
                    index,
                    lambda x: x.view(*x.shape[:-1], heads, head_dim).norm(dim=-1),
                )
            )
        )
        handles.append(
            layer.intermediate.register_forward_hook(sums.hook(sums.ffn, index, torch.abs))
        )
    influence = torch.zeros(layers, dtype=torch.float64)
    hidden = torch.zeros(config.hidden_size, dtype=torch.float64)
    tokens = 0.0
    try:
        with torch.inference_mode():
            for start in range(0, len(input_ids), batch_size):
                ids = input_ids[start : start + batch_size]
                mask = attention_mask[start : start + batch_size].to(torch.float32)
                sums.mask = mask
                out = teacher(input_ids=ids, attention_mask=mask, output_hidden_states=True)
                states = out.hidden_states
                for index in range(layers):
                    cosine = torch.nn.functional.cosine_similarity(
                        states[index], states[index + 1], dim=-1
                    )
                    influence[index] += float(((1.0 - cosine) * mask).sum())
                for state in states:
                    hidden += (state.abs() * mask[..., None]).sum(dim=(0, 1)).double()
                tokens += float(mask.sum())
    finally:
        for handle in handles:
            handle.remove()
    return Importance(
        layers=influence / tokens,
        hidden=hidden / (tokens * len(out.hidden_states)),
        heads=tuple(torch.as_tensor(s) / tokens for s in sums.heads),
        ffn=tuple(torch.as_tensor(s) / tokens for s in sums.ffn),
    )
