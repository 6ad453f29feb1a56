"""What a hardware profile covers: which block shapes, input shapes and encoders it measured.

A latency is only predicted for an architecture whose every block was measured at the asked
input shape; anything else is refused with what is missing and how to measure it, never
extrapolated. The teacher's latency is the profile's own timing of a teacher-shaped encoder
where it has one, else a prediction from covered blocks.
"""

from __future__ import annotations

import dataclasses

from kdcompress.artifacts import StudentArch
from kdcompress.console import warn
from kdcompress.errors import ArtifactError
from kdcompress.latency.schema import HardwareProfile, best_rounds, block_key
from kdcompress.space import SearchSpace, teacher_space


def arch_blocks(arch: StudentArch, seq_len: int, batch: int) -> tuple[str, ...]:
    """The block keys a prediction for ``arch`` looks up."""
    return (
        block_key("embedding", arch.hidden, 0, 0, seq_len, batch),
        block_key("attention", arch.hidden, arch.heads, 0, seq_len, batch),
        block_key("ffn", arch.hidden, 0, arch.ffn, seq_len, batch),
    )


@dataclasses.dataclass(frozen=True)
class Coverage:
    """The measured grid of one profile."""

    name: str
    space: SearchSpace
    blocks: frozenset[str]
    seq_lens: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    max_layers: int  # the deepest encoder the correction was fitted on
    encoders_ms: dict[tuple[StudentArch, int, int], float]  # measured whole encoders

    @classmethod
    def of(cls, profile: HardwareProfile) -> Coverage:
        fitted = [m.arch.layers for m in profile.models if m.role == "fit"]
        return cls(
            name=profile.name,
            space=profile.settings.space,
            blocks=frozenset(b.key for b in profile.blocks),
            seq_lens=profile.settings.seq_lens,
            batch_sizes=profile.settings.batch_sizes,
            max_layers=max(fitted, default=0),
            encoders_ms={
                (_plain(m.arch), m.seq_len, m.batch): m.latency.p50_ms
                for m in best_rounds(profile.models)
            },
        )

    def missing(self, arch: StudentArch, *, seq_len: int, batch: int = 1) -> list[str]:
        """Block keys ``arch`` needs that the profile lacks (empty: covered)."""
        return [key for key in arch_blocks(arch, seq_len, batch) if key not in self.blocks]

    def covers(self, arch: StudentArch, *, seq_len: int, batch: int = 1) -> bool:
        return not self.missing(arch, seq_len=seq_len, batch=batch)

    def measured_ms(self, arch: StudentArch, *, seq_len: int, batch: int = 1) -> float | None:
        """The profile's own timing of an encoder of this shape (a teacher's), if any."""
        return self.encoders_ms.get((_plain(arch), seq_len, batch))

    def describe(self) -> str:
        """One line: the grid measured, e.g. for an error message."""
        seqs = "/".join(map(str, self.seq_lens))
        depth = f"encoders fitted up to {self.max_layers} layers"
        return f"{self.space.describe()}; seq {seqs}; {depth}"

    def uncovered(
        self, archs: list[StudentArch], *, seq_len: int, batch: int = 1
    ) -> list[StudentArch]:
        return [a for a in archs if not self.covers(a, seq_len=seq_len, batch=batch)]

    def require(self, arch: StudentArch, *, seq_len: int, what: str, fix: str) -> None:
        """Raise one line naming what ``arch`` lacks in this profile and how to measure it."""
        lacking = self.missing(arch, seq_len=seq_len)
        if lacking:
            raise ArtifactError(
                f"profile '{self.name}' does not cover {what} ({arch.describe()}, seq "
                f"{seq_len}: no {lacking[0]}); it covers {self.describe()}: {fix}"
            )

    def narrow(self, space: SearchSpace, *, seq_len: int) -> SearchSpace:
        """``space`` without the widths this profile cannot predict: a width with any
        unmeasured block is dropped whole. Depth needs no measuring of its own: the prediction
        is per layer."""
        shapes = space.attention_shapes()
        widths = tuple(
            h
            for h in space.hidden
            if any(hh == h for hh, _ in shapes)
            and all(
                self.covers(StudentArch(1, h, a, r * h), seq_len=seq_len)
                for hh, a in shapes
                if hh == h
                for r in space.ffn_ratio
            )
        )
        return dataclasses.replace(space, hidden=widths)


def _plain(arch: StudentArch) -> StudentArch:
    """Activation does not change a block's latency class here: keys compare shapes only."""
    return dataclasses.replace(arch, activation="gelu")


def search_space_for(
    teacher: StudentArch, profile: HardwareProfile, *, seq_len: int, name: str
) -> SearchSpace:
    """The default search space: the teacher's (:func:`teacher_space`), less the widths the
    profile has not measured, said in one warning line. A profile that covers none of it
    leaves the space whole, for the search to refuse with what is missing."""
    wanted = teacher_space(teacher)
    space = Coverage.of(profile).narrow(wanted, seq_len=seq_len)
    if not space.hidden:
        return wanted
    dropped = [h for h in wanted.hidden if h not in space.hidden]
    if dropped:
        warn(
            f"profile '{profile.name}' has not measured widths {', '.join(map(str, dropped))} of "
            f"{name}'s search space: searching the other widths; `kdcompress profile --teacher "
            f"{name}` measures them all"
        )
    return space
