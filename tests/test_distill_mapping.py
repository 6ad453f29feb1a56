"""The Uniform+Last layer map, the projection, and students initialised from the teacher."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdcompress.artifacts import StudentArch
from kdcompress.errors import UsageError
from kdcompress.kd.mapping import (
    HiddenProjection,
    init_source_layers,
    teacher_layers_needed,
    uniform_last_pairs,
)
from kdcompress.kd.student import InitMode, build_student, parse_arch_json, validate_arch
from kdcompress.kd.teacher_cache import load_teacher
from kdcompress.render import mapping_table

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pairs(teacher: int, student: int) -> list[tuple[int, int]]:
    return [(p.student, p.teacher) for p in uniform_last_pairs(teacher, student)]


@pytest.mark.parametrize(
    ("teacher", "student", "expected"),
    [
        (12, 4, [(0, 0), (1, 3), (1, 9), (2, 6), (2, 10), (3, 9), (3, 11), (4, 12)]),
        (12, 3, [(0, 0), (1, 4), (1, 10), (2, 8), (2, 11), (3, 12)]),
        (12, 12, [(i, i) for i in range(13)]),
        (2, 1, [(0, 0), (1, 2)]),
        (6, 4, [(0, 0), (1, 1), (1, 3), (2, 3), (2, 4), (3, 4), (3, 5), (4, 6)]),
    ],
)
def test_uniform_last_pairs(teacher: int, student: int, expected: list[tuple[int, int]]) -> None:
    assert _pairs(teacher, student) == expected


def test_rules_are_named_and_coinciding_targets_merge() -> None:
    pairs = uniform_last_pairs(12, 4)
    assert pairs[0].rule == "embeddings"
    assert [p.rule for p in pairs if p.student == 1] == ["uniform", "last"]
    assert [p.rule for p in pairs if p.student == 4] == ["uniform+last"]
    assert {p.rule for p in uniform_last_pairs(12, 12)[1:]} == {"uniform+last"}


def test_init_layers_match_the_measured_recipes() -> None:
    # MISSION: 4 x 384 from teacher layers {2,5,8,11} (0-based), 2 x 384 from {5,11}.
    assert init_source_layers(12, 4) == (3, 6, 9, 12)
    assert init_source_layers(12, 2) == (6, 12)
    assert init_source_layers(2, 1) == (2,)


def test_teacher_layers_needed() -> None:
    assert teacher_layers_needed(uniform_last_pairs(12, 4)) == (0, 3, 6, 9, 10, 11, 12)
    assert teacher_layers_needed(uniform_last_pairs(2, 1), 1) == (0, 1, 2)


def test_student_deeper_than_teacher_is_refused() -> None:
    with pytest.raises(UsageError, match="at most as many layers"):
        uniform_last_pairs(4, 6)


def test_projection_starts_as_the_embedding_of_kept_features() -> None:
    identity = HiddenProjection(4, 4, range(4))
    x = torch.randn(2, 3, 4)
    assert torch.equal(identity(x), x)
    sliced = HiddenProjection(2, 4, (3, 1))
    out = sliced(torch.tensor([[5.0, 7.0]]))
    assert out.tolist() == [[0.0, 7.0, 0.0, 5.0]]


def test_mapping_table_lists_every_student_layer() -> None:
    table = mapping_table(uniform_last_pairs(12, 4), init_source_layers(12, 4), 12)
    assert table.row_count == 5


def test_parse_arch_json_and_validation() -> None:
    arch = parse_arch_json('{"layers":4,"hidden":384,"heads":12,"ffn":1536}')
    assert arch == StudentArch(4, 384, 12, 1536)
    with pytest.raises(UsageError, match="not valid JSON"):
        parse_arch_json("{layers: 4")
    with pytest.raises(UsageError, match="not divisible by 5 heads"):
        parse_arch_json('{"layers":4,"hidden":384,"heads":5,"ffn":1536}')
    with pytest.raises(UsageError, match="missing"):
        parse_arch_json('{"layers":4,"hidden":384}')
    with pytest.raises(UsageError, match="must be an integer"):
        parse_arch_json('{"layers":"4","hidden":384,"heads":12,"ffn":1536}')
    with pytest.raises(UsageError, match="activation"):
        validate_arch(StudentArch(2, 32, 4, 64, activation="swooshy"))


def _hidden_states(model: torch.nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True)
    return tuple(out.hidden_states)


def test_full_size_student_from_teacher_reproduces_the_teacher(tiny_bert: Path) -> None:
    teacher = load_teacher(tiny_bert)
    student, report = build_student(teacher, StudentArch(2, 32, 4, 64), init=InitMode.TEACHER)
    ids = torch.tensor([[2, 5, 9, 30, 3]])
    for mine, theirs in zip(
        _hidden_states(student, ids), _hidden_states(teacher, ids), strict=True
    ):
        assert torch.allclose(mine, theirs, atol=1e-6)
    assert report.source_layers == (1, 2)
    assert "all 4 attention heads copied" in report.details


def test_narrow_student_takes_slices_of_the_mapped_layers(tiny_bert: Path) -> None:
    teacher = load_teacher(tiny_bert)
    student, report = build_student(teacher, StudentArch(1, 16, 2, 32), init=InitMode.TEACHER)
    dims = torch.tensor(report.hidden_dims)
    assert len(dims) == 16
    src, dst = teacher.encoder.layer[1], student.encoder.layer[0]  # layer 2 of 2 teaches 1 of 1
    assert torch.equal(dst.output.LayerNorm.weight, src.output.LayerNorm.weight[dims])
    assert dst.intermediate.dense.weight.shape == (32, 16)
    assert torch.equal(
        student.embeddings.word_embeddings.weight,
        teacher.embeddings.word_embeddings.weight[:, dims],
    )
    assert any("2 of 4 attention heads kept" in d for d in report.details)


def test_random_init_keeps_teacher_word_embeddings_and_depends_on_seed(tiny_bert: Path) -> None:
    teacher = load_teacher(tiny_bert)
    a, report = build_student(teacher, StudentArch(1, 32, 4, 64), init=InitMode.RANDOM, seed=1)
    b, _ = build_student(teacher, StudentArch(1, 32, 4, 64), init=InitMode.RANDOM, seed=1)
    c, _ = build_student(teacher, StudentArch(1, 32, 4, 64), init=InitMode.RANDOM, seed=2)
    assert report.mode == "random" and report.source_layers is None
    assert torch.equal(a.get_input_embeddings().weight, teacher.get_input_embeddings().weight)
    query = "encoder.layer.0.attention.self.query.weight"
    assert torch.equal(a.state_dict()[query], b.state_dict()[query])
    assert not torch.equal(a.state_dict()[query], c.state_dict()[query])


def test_teacher_init_refuses_a_wider_student(tiny_bert: Path) -> None:
    teacher = load_teacher(tiny_bert)
    with pytest.raises(UsageError, match="use --init random"):
        build_student(teacher, StudentArch(1, 64, 4, 64), init=InitMode.TEACHER)
    with pytest.raises(UsageError, match="only 2"):
        build_student(teacher, StudentArch(3, 32, 4, 64), init=InitMode.TEACHER)


def _calibration() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(5, 30, (12, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[::2, 6:] = 0
    return ids, mask


def test_activation_importance_scores_every_part_and_keeps_the_last_layer(
    tiny_bert: Path,
) -> None:
    from kdcompress.kd.importance import measure_importance

    teacher = load_teacher(tiny_bert)
    found = measure_importance(teacher, *_calibration(), batch_size=5)
    assert found.layers.shape == (2,) and bool((found.layers > 0).all())
    assert found.hidden.shape == (32,) and [h.shape for h in found.heads] == [(4,), (4,)]
    assert [f.shape for f in found.ffn] == [(64,), (64,)]
    assert found.source_layers(1) == (2,) and found.source_layers(2) == (1, 2)
    again = measure_importance(teacher, *_calibration(), batch_size=12)  # batching-independent
    assert torch.allclose(again.ffn[0], found.ffn[0], atol=1e-5)


def test_activation_init_keeps_the_most_active_parts(tiny_bert: Path) -> None:
    from kdcompress.kd.importance import measure_importance

    teacher = load_teacher(tiny_bert)
    arch = StudentArch(1, 16, 2, 32)
    with pytest.raises(UsageError, match="calibration"):
        build_student(teacher, arch, init=InitMode.ACTIVATIONS)
    student, report = build_student(
        teacher, arch, init=InitMode.ACTIVATIONS, calibration=_calibration()
    )
    found = measure_importance(teacher, *_calibration())
    assert report.mode == "activations" and report.source_layers == (2,)
    dims = torch.tensor(report.hidden_dims)
    assert torch.equal(dims, torch.topk(found.hidden, 16).indices.sort().values)
    neurons = torch.topk(found.ffn[1], 32).indices.sort().values
    source = teacher.encoder.layer[1].intermediate.dense.weight[neurons][:, dims]
    assert torch.equal(student.encoder.layer[0].intermediate.dense.weight, source)
    assert any("(largest activations)" in d for d in report.details)
