"""Distillation losses against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from kdcompress.kd.losses import (
    attention_relation_loss,
    feature_variance,
    hidden_mse,
    masked_mean_pool,
    normalised_hidden_loss,
    pooled_mse,
    relation_heads_for,
    relation_kl,
    whitened_mse,
    whitening,
)

# One sentence of two real tokens and one padding token whose values must never count.
STUDENT = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [99.0, -99.0]]])
MASK = torch.tensor([[1, 1, 0]])


def test_hidden_mse_counts_real_tokens_and_features_only() -> None:
    teacher = torch.zeros_like(STUDENT)
    # (1 + 4 + 9 + 16) / (2 tokens x 2 features)
    assert hidden_mse(STUDENT, teacher, MASK).item() == pytest.approx(7.5)
    # A given token count (the whole batch's, under DDP) replaces this batch's.
    assert hidden_mse(STUDENT, teacher, MASK, tokens=4).item() == pytest.approx(3.75)


def test_pooled_mse_and_masked_mean_pool() -> None:
    assert masked_mean_pool(STUDENT, MASK).tolist() == [[2.0, 3.0]]
    student = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    assert pooled_mse(student, torch.zeros(2, 2)).item() == pytest.approx(6 / 4)
    assert pooled_mse(student, torch.zeros(2, 2), sentences=4).item() == pytest.approx(6 / 8)


def test_feature_variance_is_per_feature_over_real_tokens() -> None:
    # feature 0: values 1, 3 -> variance 1; feature 1: 2, 4 -> variance 1
    assert feature_variance(STUDENT, MASK).item() == pytest.approx(1.0)


def _teacher_states(seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(3, 5, 8, generator=generator) * (k + 1) + k for k in range(3)]


def test_normalised_loss_is_zero_for_a_perfect_student() -> None:
    teachers = _teacher_states()
    mask = torch.ones(3, 5, dtype=torch.long)
    assert normalised_hidden_loss(teachers, teachers, mask).item() == pytest.approx(0.0)


def test_normalised_loss_is_one_for_a_constant_student() -> None:
    teachers = _teacher_states()
    mask = torch.ones(3, 5, dtype=torch.long)
    mask[0, 3:] = 0
    keep = mask.bool()
    # The best constant: each teacher layer's per-feature mean over real tokens.
    constants = [t[keep].mean(dim=0).expand_as(t) for t in teachers]
    loss = normalised_hidden_loss(constants, teachers, mask)
    assert loss.item() == pytest.approx(1.0, abs=1e-5)


def test_normalised_loss_with_given_variances() -> None:
    teacher = torch.zeros(1, 3, 2)
    loss = normalised_hidden_loss([STUDENT], [teacher], MASK, variances=[2.5])
    assert loss.item() == pytest.approx(7.5 / 2.5)


def test_relation_kl_by_hand() -> None:
    # width 1, one head: relation[i, j] = softmax_j(x_i * x_j).
    student = torch.zeros(1, 2, 1)  # every relation row uniform
    teacher = torch.tensor([[[1.0], [0.0]]])  # row 0: softmax(1, 0); row 1: uniform
    mask = torch.ones(1, 2, dtype=torch.long)
    p = math.e / (math.e + 1)
    row0 = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)
    expected = row0 / 2  # mean over the two query tokens
    assert relation_kl(student, teacher, mask, heads=1).item() == pytest.approx(expected)


def test_relation_kl_ignores_padding_and_is_zero_for_identical_states() -> None:
    generator = torch.Generator().manual_seed(1)
    teacher = torch.randn(2, 4, 12, generator=generator)
    student = torch.randn(2, 4, 6, generator=generator)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    base = relation_kl(student, teacher, mask, heads=3)
    noisy = student.clone()
    noisy[0, 3] = 1e4  # padding: must not change anything
    assert relation_kl(noisy, teacher, mask, heads=3).item() == pytest.approx(base.item())
    assert relation_kl(teacher, teacher, mask, heads=3).item() == pytest.approx(0.0, abs=1e-6)
    assert base.item() > 0


def test_attention_relation_loss_sums_q_k_v() -> None:
    generator = torch.Generator().manual_seed(2)
    s = [torch.randn(1, 3, 4, generator=generator) for _ in range(3)]
    t = [torch.randn(1, 3, 8, generator=generator) for _ in range(3)]
    mask = torch.ones(1, 3, dtype=torch.long)
    parts = sum(relation_kl(a, b, mask, heads=2).item() for a, b in zip(s, t, strict=True))
    assert attention_relation_loss(s, t, mask, heads=2).item() == pytest.approx(parts)


def test_relation_heads_divide_both_widths() -> None:
    assert relation_heads_for(384, 384, 12) == 12
    assert relation_heads_for(256, 384, 12) == 8
    assert relation_heads_for(7, 384, 12) == 1


def test_split_batch_with_global_counts_sums_to_the_whole_batch_loss() -> None:
    """The DDP contract: per-process partial losses over global counts add up exactly."""
    generator = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(4, 6, 8, generator=generator), torch.randn(4, 6, 8)
    mask = torch.ones(4, 6, dtype=torch.long)
    mask[1, 4:] = 0
    mask[3, 2:] = 0
    whole = hidden_mse(student, teacher, mask)
    tokens = mask.sum()
    halves = hidden_mse(student[:2], teacher[:2], mask[:2], tokens=tokens) + hidden_mse(
        student[2:], teacher[2:], mask[2:], tokens=tokens
    )
    assert halves.item() == pytest.approx(whole.item())
    whole_rel = relation_kl(student, teacher, mask, heads=2)
    split_rel = relation_kl(student[:2], teacher[:2], mask[:2], heads=2, tokens=tokens)
    split_rel = split_rel + relation_kl(student[2:], teacher[2:], mask[2:], heads=2, tokens=tokens)
    assert split_rel.item() == pytest.approx(whole_rel.item())


def test_whitened_mse_counts_a_quiet_direction_like_a_loud_one() -> None:
    torch.manual_seed(0)
    # teacher embeddings: one loud direction (std 10) and one quiet one (std 0.1)
    targets = torch.randn(4000, 2) * torch.tensor([10.0, 0.1])
    whiten = whitening(targets, floor=1e-6)
    white = (targets - targets.mean(dim=0)) @ whiten
    assert torch.allclose(white.T @ white / (len(white) - 1), torch.eye(2), atol=1e-3)
    teacher = targets[:8]
    loud_miss = teacher + torch.tensor([0.1, 0.0])  # 1% of the loud spread
    quiet_miss = teacher + torch.tensor([0.0, 0.1])  # all of the quiet spread
    assert float(pooled_mse(loud_miss, teacher)) == pytest.approx(
        float(pooled_mse(quiet_miss, teacher)), rel=1e-4
    )
    assert whitened_mse(quiet_miss, teacher, whiten) == pytest.approx(0.5, rel=0.05)
    assert whitened_mse(loud_miss, teacher, whiten) == pytest.approx(0.5e-4, rel=0.05)
    # the floor keeps a direction of noise from being blown up
    floored = whitening(targets, floor=0.1)
    assert whitened_mse(quiet_miss, teacher, floored) < 0.5
