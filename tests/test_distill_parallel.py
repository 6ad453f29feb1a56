"""Cross-lingual targets: seeded pairing, learning, and exact resume on a tiny teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from kdcompress.artifacts import LossPoint, StudentArch
from kdcompress.kd import LossKind, distill_student
from kdcompress.kd.losses import contrastive_loss, cosine_distance
from kdcompress.kd.parallel import Translations
from kdcompress.kd.student import InitMode

SOURCES = [f"the {w} student number {i}" for i in range(4) for w in ("small", "fast", "good")]
TRANSLATED = [(f"der {s}", "" if i % 5 == 0 else f"le {s}") for i, s in enumerate(SOURCES)]
ARCH = StudentArch(layers=1, hidden=16, heads=2, ffn=32)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Killed(Exception):
    """Stands in for a kill -9 in the middle of a run."""


def _translations(teacher: Path) -> Translations:
    return Translations(TRANSLATED, ("de", "fr"), teacher_dir=teacher, max_length=32, prefix="")


def test_pairing_is_seeded_and_skips_missing_translations(tiny_xlmr: Path) -> None:
    translations = _translations(tiny_xlmr)
    rows = np.arange(len(SOURCES))
    chosen = translations.choose(rows, seed=3, step=5)
    assert chosen == translations.choose(rows, seed=3, step=5)
    assert chosen != translations.choose(rows, seed=3, step=6)
    for position, language in chosen:
        assert TRANSLATED[position][language]  # never an empty translation
    batch = translations.batch(rows, chosen, pad_token_id=1)
    assert batch is not None and batch.rows.tolist() == [p for p, _ in chosen]
    assert batch.input_ids.shape == batch.attention_mask.shape


def test_processes_of_a_job_pair_their_shares_as_one_process_would(tiny_xlmr: Path) -> None:
    translations = _translations(tiny_xlmr)
    whole = np.arange(len(SOURCES))[::-1].copy()
    alone = translations.choose(whole, seed=1, step=3)
    pairs = {}
    for rank in range(3):
        sources, chosen = translations.share(whole, seed=1, step=3, rank=rank, world=3)
        pairs.update({int(sources[p]): k for p, k in chosen})
    assert pairs == {int(whole[p]): k for p, k in alone}


def _run(teacher: Path, **overrides: Any) -> Any:
    options: dict[str, Any] = {
        "teacher_dir": teacher,
        "arch": ARCH,
        "sentences": SOURCES,
        "steps": 12,
        "batch_size": 4,
        "lr": 3e-3,
        "seed": 7,
        "max_length": 32,
        "init": InitMode.RANDOM,
        "loss": LossKind.POOLED,
        "log_every": 2,
        "translations": _translations(teacher),
    }
    return distill_student(**{**options, **overrides})


def test_cross_lingual_distillation_learns_and_resumes_exactly(
    tiny_xlmr: Path, tmp_path: Path
) -> None:
    common = {"checkpoint_every": 4, "contrastive_weight": 0.5}
    full = _run(tiny_xlmr, checkpoint_dir=tmp_path / "a", **common)
    assert full.hidden_loss is None and full.cosine is not None
    assert full.translations == ("de", "fr")
    assert full.curve[-1].loss < full.curve[0].loss
    assert all(p.hidden is None for p in full.curve)

    def kill_at_7(step: int, _point: LossPoint) -> None:
        if step == 7:
            raise Killed

    with pytest.raises(Killed):
        _run(tiny_xlmr, checkpoint_dir=tmp_path / "b", on_step=kill_at_7, **common)
    resumed = _run(tiny_xlmr, checkpoint_dir=tmp_path / "b", resume=True, **common)
    for a, b in zip(full.curve, resumed.curve, strict=True):
        assert b.loss == pytest.approx(a.loss, rel=1e-6, abs=1e-9)


def test_sentence_embedding_losses() -> None:
    teacher = torch.randn(6, 8)
    assert float(cosine_distance(teacher * 3, teacher)) == pytest.approx(0.0, abs=1e-6)
    assert float(cosine_distance(-teacher, teacher)) == pytest.approx(2.0)
    rows = torch.arange(6)
    aligned = contrastive_loss(teacher, teacher, rows, temperature=0.05)
    shuffled = contrastive_loss(teacher[torch.randperm(6)], teacher, rows, temperature=0.05)
    assert float(aligned) < 0.1 < float(shuffled)
