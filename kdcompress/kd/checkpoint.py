"""Checkpoints that make a resumed run compute exactly the steps of an uninterrupted one."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdcompress.artifacts import (
    LossPoint,
    StudentArch,
)
from kdcompress.errors import UsageError
from kdcompress.kd.module import KDModule
from kdcompress.kd.parallel import Translations
from kdcompress.kd.settings import DistillSettings
from kdcompress.kd.teacher_cache import (
    TeacherCache,
)

CHECKPOINT = "checkpoint.pt"


@dataclass
class State:
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


def run_identity(
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


def save_checkpoint(
    path: Path,
    kd: KDModule,
    optimizer: Any,
    scheduler: Any,
    state: State,
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


def load_checkpoint(path: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
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


def restore(body: dict[str, Any], kd: KDModule, optimizer: Any, scheduler: Any) -> State:
    kd.student.load_state_dict(body["student"])
    kd.projection.load_state_dict(body["projection"])
    optimizer.load_state_dict(body["optimizer"])
    scheduler.load_state_dict(body["scheduler"])
    curve = [LossPoint(**p) for p in body["curve"]]
    return State(body["step"], curve, [], float(body["train_s"]), int(body["sentences"]))
