"""The student search space: which (layers, hidden, heads, FFN, activation) are allowed.

The same grid drives the hardware profile (every block shape the search can propose is
measured) and the search itself (every proposal is a valid point of the grid). By default the
grid follows the teacher (:func:`teacher_space`): widths and depths up to its own.
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
    max_head_size: int = 0  # 0: no upper bound

    def _head_size_ok(self, hidden: int, heads: int) -> bool:
        size, rest = divmod(hidden, heads)
        return (
            not rest
            and size >= self.min_head_size
            and (not self.max_head_size or size <= self.max_head_size)
        )

    def allows(self, arch: StudentArch) -> bool:
        return (
            arch.layers in self.layers
            and arch.hidden in self.hidden
            and arch.heads in self.heads
            and arch.ffn in {r * arch.hidden for r in self.ffn_ratio}
            and arch.activation in self.activations
            and self._head_size_ok(arch.hidden, arch.heads)
        )

    def attention_shapes(self) -> list[tuple[int, int]]:
        """Every (hidden, heads) pair the constraints allow."""
        return [(h, a) for h in self.hidden for a in self.heads if self._head_size_ok(h, a)]

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

    def describe(self) -> str:
        """One line, e.g. ``1-6 layers, hidden 128-384 (5 sizes), 16 (hidden, heads), FFN x1-4``."""
        widths = sorted({h for h, _ in self.attention_shapes()})
        return (
            f"{_span(self.layers)} layers, hidden {_span(widths)} ({len(widths)} sizes), "
            f"{len(self.attention_shapes())} (hidden, heads), FFN x{_span(self.ffn_ratio)}"
        )


def _span(values: tuple[int, ...] | list[int]) -> str:
    low, high = min(values), max(values)
    return f"{low}" if low == high else f"{low}-{high}"


# How many widths a teacher-derived space offers: enough to trade width for depth, few enough
# that a quick profile measures every block shape in minutes.
WIDTHS = 6


def teacher_space(teacher: StudentArch) -> SearchSpace:
    """The search space a teacher calls for: widths from a third of the teacher's up to its
    own in steps of whole heads, each with the teacher's head size; 1 to the teacher's layers;
    FFN ratios 1 to the teacher's. The teacher itself is a point of the space, so a profile of
    the space also covers the teacher's latency.
    """
    head_size = teacher.hidden // teacher.heads
    if head_size < 1 or teacher.hidden % teacher.heads:
        raise UsageError(
            f"teacher hidden size {teacher.hidden} is not divisible by its {teacher.heads} heads"
        )
    step = head_size * max(1, round(teacher.hidden / WIDTHS / head_size))
    widths = {h for h in range(step, teacher.hidden + 1, step) if 3 * h >= teacher.hidden}
    widths.add(teacher.hidden)
    hidden = tuple(sorted(widths))
    ratio = max(1, teacher.ffn // teacher.hidden)
    return SearchSpace(
        layers=tuple(range(1, teacher.layers + 1)),
        hidden=hidden,
        heads=tuple(sorted({h // head_size for h in hidden})),
        ffn_ratio=tuple(range(1, max(ratio, 1) + 1)),
        activations=("gelu",),
        min_head_size=head_size,
        max_head_size=head_size,
    ).validate()


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
