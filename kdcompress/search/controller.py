"""Controllers choose which architectures of an episode's pool get proxy-distilled.

All three share one interface, so the benefit of the learned controller is measured against
baselines rather than assumed:

- ``lstm``: the KD-NAS reward predictor. An LSTM reads the sequence (previous episode's best,
  global best, candidate), each architecture embedded from its normalised dimensions; a linear
  head predicts the candidate's reward. Candidates are ranked by predicted reward with
  epsilon-greedy exploration (epsilon decays from 1.0 by 0.05 per episode to 0.05); after each
  episode the predictor is trained (MSE, RMSprop) on every reward observed so far.
- ``random``: random choice from the pool.
- ``evolution``: regularised evolution: mutate the best observed architectures.

Every random choice (exploration, the random controller, evolution's fill) is uniform over
the hidden sizes first, then over that size's architectures. Uniform over architectures would
favour narrow students: within a latency budget far more (layers, FFN) combinations of a
narrow width fit than of a wide one (a quick run's 7x pool: 5 of 82 at the teacher's width
384), so a short search could end without trying a single wide student, though those keep
most of the teacher (BENCHMARKS.md, "Search proxy vs final result").
"""

from __future__ import annotations

import io
import random
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from kdcompress.artifacts import StudentArch
from kdcompress.errors import parse_choice
from kdcompress.space import SearchSpace


class ControllerName(StrEnum):
    LSTM = "lstm"
    RANDOM = "random"
    EVOLUTION = "evolution"


@dataclass(frozen=True)
class Observation:
    arch: StudentArch
    reward: float
    episode: int


def explore(archs: Sequence[StudentArch], k: int, rng: random.Random) -> list[StudentArch]:
    """``k`` distinct random architectures of ``archs`` (all when fewer), each drawn with every
    hidden size present equally likely, then uniformly within that size."""
    left = list(archs)
    chosen: list[StudentArch] = []
    while left and len(chosen) < k:
        hidden = rng.choice(sorted({a.hidden for a in left}))
        pick = rng.choice([a for a in left if a.hidden == hidden])
        left.remove(pick)
        chosen.append(pick)
    return chosen


class Controller(ABC):
    """Picks ``k`` architectures to evaluate from a pool, and learns from observed rewards."""

    def __init__(self, space: SearchSpace, seed: int) -> None:
        self.space = space
        self.seed = seed
        self.history: list[Observation] = []

    @abstractmethod
    def select(
        self, pool: Sequence[StudentArch], k: int, episode: int, rng: random.Random
    ) -> list[StudentArch]:
        """The ``k`` candidates of ``pool`` to distil in ``episode``."""

    def observe(self, observations: Sequence[Observation]) -> None:
        """Record an episode's measured rewards (and learn from them)."""
        self.history.extend(observations)

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore what :meth:`state` returned (the history is replayed by the runner)."""


class RandomController(Controller):
    def select(
        self, pool: Sequence[StudentArch], k: int, episode: int, rng: random.Random
    ) -> list[StudentArch]:
        return explore(pool, k, rng)


class EvolutionController(Controller):
    """Regularised evolution: tournament among recent observations, then one mutation."""

    population = 16
    tournament = 4

    def select(
        self, pool: Sequence[StudentArch], k: int, episode: int, rng: random.Random
    ) -> list[StudentArch]:
        if not self.history:
            return explore(pool, k, rng)
        recent = self.history[-self.population :]
        seen = {o.arch for o in self.history}
        chosen: list[StudentArch] = []
        for _ in range(50 * k):
            if len(chosen) == k:
                break
            contenders = rng.sample(recent, min(self.tournament, len(recent)))
            child = mutate(max(contenders, key=lambda o: o.reward).arch, self.space, rng)
            if child not in seen and child not in chosen:
                chosen.append(child)
        fill = [a for a in pool if a not in seen and a not in chosen]
        return chosen + explore(fill, k - len(chosen), rng)


def mutate(arch: StudentArch, space: SearchSpace, rng: random.Random) -> StudentArch:
    """Change one dimension of ``arch`` to another allowed value (keeping it valid)."""
    for _ in range(100):
        field = rng.choice(("layers", "hidden", "heads", "ffn"))
        if field == "layers":
            child = replace(arch, layers=rng.choice(space.layers))
        elif field == "ffn":
            child = replace(arch, ffn=rng.choice(space.ffn_ratio) * arch.hidden)
        else:
            hidden, heads = rng.choice(space.attention_shapes())
            ratio = max(1, arch.ffn // arch.hidden)
            ffn = ratio * hidden if ratio in space.ffn_ratio else space.ffn_ratio[0] * hidden
            child = replace(arch, hidden=hidden, heads=heads, ffn=ffn)
        if child != arch and space.allows(child):
            return child
    return space.sample(rng)


class LstmController(Controller):
    """The KD-NAS reward predictor with epsilon-greedy selection."""

    def __init__(
        self,
        space: SearchSpace,
        seed: int,
        *,
        lr: float = 1e-4,
        train_epochs: int = 50,
        epsilon_start: float = 1.0,
        epsilon_step: float = 0.05,
        epsilon_min: float = 0.05,
    ) -> None:
        import torch

        super().__init__(space, seed)
        torch.manual_seed(seed)
        self.net = _RewardPredictor()
        self.optimizer = torch.optim.RMSprop(self.net.parameters(), lr=lr)
        self.train_epochs = train_epochs
        self.epsilon_start, self.epsilon_step, self.epsilon_min = (
            epsilon_start,
            epsilon_step,
            epsilon_min,
        )
        self._context: tuple[StudentArch, StudentArch] | None = None

    def epsilon(self, episode: int) -> float:
        return max(self.epsilon_min, self.epsilon_start - self.epsilon_step * episode)

    def _encode(self, arch: StudentArch) -> list[float]:
        s = self.space
        return [
            arch.layers / max(s.layers),
            arch.hidden / max(s.hidden),
            arch.heads / max(s.heads),
            arch.ffn / (max(s.ffn_ratio) * max(s.hidden)),
        ]

    def _context_for(self, episode: int) -> tuple[StudentArch, StudentArch]:
        """(previous episode's best, global best); the smallest architecture before any data."""
        if not self.history:
            smallest = min(self.space.architectures(), key=lambda a: (a.layers, a.hidden, a.ffn))
            return smallest, smallest
        best = max(self.history, key=lambda o: o.reward).arch
        previous = [o for o in self.history if o.episode == episode - 1] or self.history
        return max(previous, key=lambda o: o.reward).arch, best

    def predict(self, candidates: Sequence[StudentArch], episode: int) -> list[float]:
        import torch

        last, best = self._context_for(episode)
        sequences = [[self._encode(last), self._encode(best), self._encode(c)] for c in candidates]
        with torch.no_grad(), _one_thread():
            return self.net(torch.tensor(sequences, dtype=torch.float32)).tolist()

    def select(
        self, pool: Sequence[StudentArch], k: int, episode: int, rng: random.Random
    ) -> list[StudentArch]:
        scores = self.predict(pool, episode)
        ranked = [a for _, a in sorted(zip(scores, pool, strict=True), key=lambda t: -t[0])]
        chosen: list[StudentArch] = []
        rest = list(ranked)
        for _ in range(min(k, len(pool))):
            pick = explore(rest, 1, rng)[0] if rng.random() < self.epsilon(episode) else rest[0]
            rest.remove(pick)
            chosen.append(pick)
        return chosen

    def observe(self, observations: Sequence[Observation]) -> None:
        super().observe(observations)
        self._train()

    def _train(self) -> None:
        """Fit the predictor to every observed reward, each with the context it had."""
        import torch

        rows, targets = [], []
        for obs in self.history:
            last, best = self._context_for(obs.episode)
            rows.append([self._encode(last), self._encode(best), self._encode(obs.arch)])
            targets.append(obs.reward)
        x = torch.tensor(rows, dtype=torch.float32)
        y = torch.tensor(targets, dtype=torch.float32)
        self.net.train()
        with _one_thread():
            for _ in range(self.train_epochs):
                self.optimizer.zero_grad()
                loss = torch.nn.functional.mse_loss(self.net(x), y)
                loss.backward()
                self.optimizer.step()
        self.net.eval()

    def state(self) -> dict[str, Any]:
        import torch

        buffer = io.BytesIO()
        torch.save({"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict()}, buffer)
        return {"torch": buffer.getvalue().hex()}

    def load_state(self, state: dict[str, Any]) -> None:
        import torch

        blob = torch.load(io.BytesIO(bytes.fromhex(state["torch"])), weights_only=True)
        self.net.load_state_dict(blob["net"])
        self.optimizer.load_state_dict(blob["optimizer"])


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run the tiny predictor on one thread: more only add synchronisation, and on a busy
    machine spinning threads make it many times slower."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _RewardPredictor() -> Any:
    import torch

    class RewardPredictor(torch.nn.Module):
        def __init__(self, features: int = 4, embed: int = 32, hidden: int = 64) -> None:
            super().__init__()
            self.embed = torch.nn.Linear(features, embed)
            self.lstm = torch.nn.LSTM(embed, hidden, batch_first=True)
            self.head = torch.nn.Linear(hidden, 1)

        def forward(self, sequences: torch.Tensor) -> torch.Tensor:
            output, _ = self.lstm(torch.tanh(self.embed(sequences)))
            return self.head(output[:, -1]).squeeze(-1)

    return RewardPredictor()


def parse_controller(name: str) -> ControllerName:
    return parse_choice(ControllerName, name, what="controller")


def make_controller(name: str, space: SearchSpace, seed: int) -> Controller:
    kind = parse_controller(name)
    if kind is ControllerName.LSTM:
        return LstmController(space, seed)
    if kind is ControllerName.EVOLUTION:
        return EvolutionController(space, seed)
    return RandomController(space, seed)
