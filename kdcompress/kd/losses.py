"""Distillation losses: pure functions of tensors, no modules and no state.

Shapes: hidden states are ``(batch, tokens, features)``, ``mask`` is the ``(batch, tokens)``
attention mask (1 = real token, 0 = padding), pooled embeddings are ``(batch, features)``.

Every loss is a sum divided by a count. The count defaults to this batch's, but can be given:
under DDP each process sees part of a batch, and dividing its partial sum by the count of the
*whole* batch makes the averaged gradients equal to the single-process gradient exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

# A count for the denominator of a loss: a number, a 0-d tensor, or None for "this batch's".
Count = Tensor | float | None


def _count(given: Count, default: Tensor | float) -> Tensor | float:
    return default if given is None else given


def masked_mean_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    """Average of ``hidden`` over the real tokens of each sentence: ``(batch, features)``."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1e-9)


def hidden_mse(student: Tensor, teacher: Tensor, mask: Tensor, *, tokens: Count = None) -> Tensor:
    """Mean squared error per feature over real tokens: ``sum / (tokens * features)``."""
    weights = mask.unsqueeze(-1).to(student.dtype)
    squared = ((student - teacher) ** 2 * weights).sum()
    return squared / (_count(tokens, mask.sum()) * student.shape[-1])


def pooled_mse(student: Tensor, teacher: Tensor, *, sentences: Count = None) -> Tensor:
    """Mean squared error per feature of sentence embeddings: ``sum / (sentences * features)``."""
    squared = ((student - teacher) ** 2).sum()
    return squared / (_count(sentences, float(student.shape[0])) * student.shape[-1])


def cosine_distance(student: Tensor, teacher: Tensor, *, sentences: Count = None) -> Tensor:
    """Mean ``1 - cos`` of sentence embeddings and their targets: ``sum / sentences``.

    The MSE alone lets a student trade direction for length; cosine is what retrieval and
    most uses of an embedding compare, so the direction gets a term of its own.
    """
    cosine = torch.nn.functional.cosine_similarity(student, teacher, dim=-1)
    return (1.0 - cosine).sum() / _count(sentences, float(student.shape[0]))


def whitening(targets: Tensor, *, floor: float = 1e-2) -> Tensor:
    """The ``(features, features)`` map that whitens the teacher's sentence embeddings:
    ``(x - y) @ W`` measures a difference in units of each principal direction's spread.

    Variances below ``floor`` times their mean are raised to it, so directions that are noise
    in the teacher's embeddings are not blown up.
    """
    centred = targets.to(torch.float64) - targets.to(torch.float64).mean(dim=0)
    covariance = centred.T @ centred / max(1, len(targets) - 1)
    variances, directions = torch.linalg.eigh(covariance)
    variances = variances.clamp_min(floor * float(variances.mean()))
    return (directions / variances.sqrt()).to(targets.dtype)


def whitened_mse(
    student: Tensor, teacher: Tensor, whiten: Tensor, *, sentences: Count = None
) -> Tensor:
    """Mean squared error per feature of sentence embeddings in the teacher's whitened space.

    The plain MSE is dominated by the few directions along which the teacher's embeddings vary
    most, which is what cosine similarity and retrieval compare; a linear classifier on
    standardised features reads the quiet directions too. Here every direction counts alike:
    predicting the teacher's mean scores about 1, a perfect copy 0.
    """
    squared = (((student - teacher) @ whiten) ** 2).sum()
    return squared / (_count(sentences, float(student.shape[0])) * student.shape[-1])


def contrastive_loss(
    queries: Tensor,
    keys: Tensor,
    rows: Tensor,
    *,
    temperature: float,
    sentences: Count = None,
) -> Tensor:
    """In-batch InfoNCE: query ``i`` should be closer (cosine) to ``keys[rows[i]]`` than to
    every other key of the batch. Keys are fixed teacher targets, so this only pushes the
    student's embeddings apart where the teacher's are apart."""
    normal_q = torch.nn.functional.normalize(queries, dim=-1)
    normal_k = torch.nn.functional.normalize(keys, dim=-1)
    logits = normal_q @ normal_k.T / temperature
    loss = torch.nn.functional.cross_entropy(logits, rows, reduction="sum")
    return loss / _count(sentences, float(queries.shape[0]))


def feature_variance(values: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-feature variance over tokens (or rows), averaged over features.

    This is the MSE of the best constant predictor (the per-feature mean), which is why it is
    the normaliser of :func:`normalised_hidden_loss`.
    """
    flat = values[mask.bool()] if mask is not None else values.reshape(-1, values.shape[-1])
    flat = flat.to(torch.float64)
    return flat.var(dim=0, unbiased=False).mean().to(values.dtype)


def normalised_hidden_loss(
    students: Sequence[Tensor],
    teachers: Sequence[Tensor],
    mask: Tensor,
    *,
    variances: Sequence[Tensor | float] | None = None,
    tokens: Count = None,
) -> Tensor:
    """Multi-layer hidden-state loss L_HS: mean over layer pairs of MSE / teacher variance.

    ``students[k]`` (already projected to the teacher's width) regresses ``teachers[k]``.
    Dividing each pair's MSE by the variance of that teacher layer makes layers of different
    scale count alike and fixes the scale: a student that only predicts the per-feature mean
    scores 1, a perfect one 0, so ``1 - L_HS`` is a quality in [0, 1] for the search's reward.
    ``variances`` defaults to this batch's; pass corpus-wide ones for a stable objective.
    """
    if len(students) != len(teachers) or not students:
        raise ValueError("normalised_hidden_loss needs one teacher target per student state")
    total = students[0].new_zeros(())
    for k, (student, teacher) in enumerate(zip(students, teachers, strict=True)):
        variance = variances[k] if variances is not None else feature_variance(teacher, mask)
        total = total + hidden_mse(student, teacher, mask, tokens=tokens) / variance
    return total / len(students)


def _relation_log_probs(states: Tensor, key_mask: Tensor, heads: int) -> Tensor:
    """Log of the scaled dot-product self-relation ``softmax(X X^T / sqrt(d))`` per head."""
    batch, length, width = states.shape
    split = states.view(batch, length, heads, width // heads).transpose(1, 2)
    scores = split @ split.transpose(-1, -2) / math.sqrt(width // heads)
    blocked = ~key_mask.bool()[:, None, None, :]
    # finfo.min rather than -inf: a fully masked row stays finite instead of becoming NaN.
    scores = scores.masked_fill(blocked, torch.finfo(scores.dtype).min)
    return torch.log_softmax(scores, dim=-1)


def relation_kl(
    student: Tensor, teacher: Tensor, mask: Tensor, *, heads: int, tokens: Count = None
) -> Tensor:
    """KL(teacher relation || student relation) of one of Q-Q, K-K or V-V (MiniLMv2).

    Both sides are split into the same number of relation ``heads`` regardless of their widths,
    so students narrower than the teacher compare token-by-token relation maps of equal shape.
    Averaged over relation heads and real query tokens.
    """
    if student.shape[-1] % heads or teacher.shape[-1] % heads:
        raise ValueError(f"{heads} relation heads do not divide widths {student.shape[-1]}")
    log_s = _relation_log_probs(student, mask, heads)
    log_t = _relation_log_probs(teacher, mask, heads)
    per_key = log_t.exp() * (log_t - log_s)
    per_key = per_key.masked_fill(~mask.bool()[:, None, None, :], 0.0)
    per_query = per_key.sum(dim=-1) * mask[:, None, :].to(per_key.dtype)
    return per_query.sum() / (_count(tokens, mask.sum()) * heads)


def attention_relation_loss(
    student_qkv: Sequence[Tensor],
    teacher_qkv: Sequence[Tensor],
    mask: Tensor,
    *,
    heads: int,
    tokens: Count = None,
) -> Tensor:
    """MiniLMv2 self-attention relation transfer: sum of the Q-Q, K-K and V-V relation KLs."""
    if len(student_qkv) != 3 or len(teacher_qkv) != 3:
        raise ValueError("attention_relation_loss needs (query, key, value) on both sides")
    parts = [
        relation_kl(s, t, mask, heads=heads, tokens=tokens)
        for s, t in zip(student_qkv, teacher_qkv, strict=True)
    ]
    return parts[0] + parts[1] + parts[2]


def relation_heads_for(student_width: int, teacher_width: int, preferred: int) -> int:
    """The largest head count <= ``preferred`` that divides both widths."""
    for heads in range(max(preferred, 1), 0, -1):
        if student_width % heads == 0 and teacher_width % heads == 0:
            return heads
    return 1
