from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from kdcompress.artifacts import StudentArch
from kdcompress.errors import ArtifactError, UsageError
from kdcompress.space import load_space


def test_default_space_respects_its_constraints() -> None:
    space = load_space(None)
    archs = list(space.architectures())
    assert len(archs) == len(set(archs)) > 100
    for arch in archs:
        assert space.allows(arch)
        assert arch.hidden % arch.heads == 0 and arch.hidden // arch.heads >= 32
    rng = random.Random(0)
    assert all(space.allows(space.sample(rng)) for _ in range(200))
    assert not space.allows(StudentArch(2, 384, 5, 768))  # 384 is not divisible by 5


def test_arch_id_is_stable_and_distinct() -> None:
    a, b = StudentArch(4, 384, 12, 1536), StudentArch(4, 384, 12, 1536)
    assert a.arch_id == b.arch_id and len(a.arch_id) == 12
    assert a.arch_id != StudentArch(4, 384, 6, 1536).arch_id


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"hidden": []}, "'hidden' has no choices"),
        ({"layers": [0, 2]}, "must be positive"),
        ({"hidden": [100], "heads": [3, 7]}, "impossible"),
        ({"hidden": [64], "heads": [4]}, "head size >= 32"),
    ],
)
def test_impossible_spaces_are_clear_errors(
    tmp_path: Path, space: dict[str, object], message: str
) -> None:
    path = tmp_path / "space.json"
    path.write_text(json.dumps(space))
    with pytest.raises(UsageError, match=message):
        load_space(path)


def test_space_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="cannot read"):
        load_space(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"hidden": "wide"}))
    with pytest.raises(ArtifactError, match="expected a list"):
        load_space(tmp_path / "bad.json")
    custom = tmp_path / "custom.json"
    custom.write_text(json.dumps({"layers": [2], "hidden": [256], "heads": [4], "ffn_ratio": [2]}))
    assert list(load_space(custom).architectures()) == [StudentArch(2, 256, 4, 512)]
