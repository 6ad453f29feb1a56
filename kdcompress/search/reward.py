"""The KD-NAS reward: distillation quality traded against latency on the target hardware.

    reward = (1 - L) * (lat(S) / (beta * lat(T))) ** alpha

``L`` is the student's proxy loss after its short distillation: ``1 - quality`` with quality in
[0, 1] (``kdcompress.search.proxy``: cross-lingual retrieval top-1 on held-out proxy verses;
the paper uses the normalised hidden-state loss L_HS in this place), ``lat(S)`` and
``lat(T)`` the student's and teacher's latency, ``beta * lat(T)`` the latency target and
``alpha < 0`` how much being faster than the target is worth (MnasNet-style soft constraint).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_ALPHA = -0.06
DEFAULT_BETA = 0.6


@dataclass(frozen=True)
class RewardSettings:
    alpha: float = DEFAULT_ALPHA
    beta: float = DEFAULT_BETA

    def __post_init__(self) -> None:
        if self.beta <= 0:
            raise ValueError("beta must be positive")


def reward(
    *, proxy_loss: float, latency_ms: float, teacher_latency_ms: float, settings: RewardSettings
) -> float:
    """The reward of a student; higher is better."""
    if latency_ms <= 0 or teacher_latency_ms <= 0:
        raise ValueError("latencies must be positive")
    quality = 1.0 - min(max(proxy_loss, 0.0), 1.0)
    target = settings.beta * teacher_latency_ms
    return quality * (latency_ms / target) ** settings.alpha
