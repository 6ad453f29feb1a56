"""The student search space: which (layers, hidden, heads, FFN, activation) are allowed.

The same grid drives the hardware profile (every block shape the search can propose is
measured) and the search itself (every proposal is a valid point of the grid).
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Iterator
from pathlib import Path

from kdcompress.artifacts import Artifact, StudentArch
from kdcompress.errors import ArtifactError, UsageError


@dataclasses.dataclass(frozen=True)
class SearchSpace(Artifact):
    """Choices per dimension plus the constraints every architecture must satisfy."""

    kind = "search-space"

    layers: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    hidden: tuple[int, ...] = (128, 192, 256, 320, 384)
    heads: tuple[int, ...] = (2, 4, 6, 8, 12)
    ffn_ratio: tuple[int, ...] = (1, 2, 3, 4)  # FFN size = ratio x hidden
    activations: tuple[str, ...] = ("gelu",)
    min_head_size: int = 32

    def allows(self, arch: StudentArch) -> bool:
        return (
            arch.layers in self.layers
            and arch.hidden in self.hidden
            and arch.heads in self.heads
            and arch.ffn in {r * arch.hidden for r in self.ffn_ratio}
            and arch.activation in self.activations
            and arch.hidden % arch.heads == 0
            and arch.hidden // arch.heads >= self.min_head_size
        )

    def attention_shapes(self) -> list[tuple[int, int]]:
        """Every (hidden, heads) pair the constraints allow."""
        return [
            (h, a)
            for h in self.hidden
            for a in self.heads
            if h % a == 0 and h // a >= self.min_head_size
        ]

    def ffn_shapes(self) -> list[tuple[int, int]]:
        """Every (hidden, ffn) pair, for hidden sizes that have at least one valid head count."""
        valid_hidden = sorted({h for h, _ in self.attention_shapes()})
        return [(h, r * h) for h in valid_hidden for r in self.ffn_ratio]

    def architectures(self) -> Iterator[StudentArch]:
        """Every valid architecture, in a fixed order."""
        for layers in self.layers:
            for hidden, heads in self.attention_shapes():
                for _, ffn in (s for s in self.ffn_shapes() if s[0] == hidden):
                    for activation in self.activations:
                        yield StudentArch(layers, hidden, heads, ffn, activation)

    def sample(self, rng: random.Random) -> StudentArch:
        """A uniformly random valid architecture."""
        hidden, heads = rng.choice(self.attention_shapes())
        return StudentArch(
            layers=rng.choice(self.layers),
            hidden=hidden,
            heads=heads,
            ffn=rng.choice(self.ffn_ratio) * hidden,
            activation=rng.choice(self.activations),
        )

    def validate(self) -> SearchSpace:
        """Return self, or raise a clear error for an empty or impossible space."""
        for name in ("layers", "hidden", "heads", "ffn_ratio", "activations"):
            values = getattr(self, name)
            if not values:
                raise UsageError(f"search space: '{name}' has no choices")
            if name != "activations" and min(values) < 1:
                raise UsageError(f"search space: '{name}' must be positive, got {list(values)}")
        if not self.attention_shapes():
            raise UsageError(
                "search space is impossible: no hidden size is divisible by a head count with "
                f"head size >= {self.min_head_size} (hidden {list(self.hidden)}, "
                f"heads {list(self.heads)})"
            )
        return self


def load_space(path: Path | None) -> SearchSpace:
    """The default space, or one read from a JSON file (``kind`` may be omitted there)."""
    if path is None:
        return SearchSpace().validate()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: cannot read search space ({exc})") from exc
    if isinstance(data, dict):
        data.setdefault("kind", SearchSpace.kind)
        data.setdefault("schema_version", SearchSpace.schema_version)
    return SearchSpace.from_json(data, source=str(path)).validate()
