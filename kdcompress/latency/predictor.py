"""The latency model: a lookup table of block latencies plus a fitted linear correction.

Summing per-block latencies misses what happens between blocks (graph fusion across block
borders, per-call overhead that a whole model pays once, memory traffic), so the prediction is

    latency = c0 + c1 * embedding + c2 * L * attention + c3 * L * ffn + c4 * L

with the block latencies looked up for the architecture's shapes and non-negative coefficients
fitted on whole encoders, minimising *relative* error. Its error is then measured on held-out
architectures it never saw.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kdcompress.artifacts import StudentArch
from kdcompress.errors import ArtifactError
from kdcompress.latency.schema import (
    BlockTiming,
    HardwareProfile,
    HeldOutPoint,
    LatencyFit,
    ModelTiming,
    PredictorError,
    best_rounds,
    block_key,
)

FEATURES = ("overhead", "embedding", "attention_x_layers", "ffn_x_layers", "layers")


class BlockTable:
    """Block latencies (p50 of the fastest quiet round, ms) by shape."""

    def __init__(self, blocks: tuple[BlockTiming, ...]) -> None:
        self._ms = {b.key: b.latency.p50_ms for b in best_rounds(blocks)}

    def _get(
        self, block: str, hidden: int, heads: int, ffn: int, seq_len: int, batch: int
    ) -> float:
        key = block_key(block, hidden, heads, ffn, seq_len, batch)
        if key not in self._ms:
            raise ArtifactError(
                f"the profile has no measurement for {key}: the architecture or input shape is "
                "outside the profiled grid; measure a profile that covers it with `kdcompress "
                "profile --teacher TEACHER` (or --space / --seq-len), or let `kdcompress run` do it"
            )
        return self._ms[key]

    def features(self, arch: StudentArch, seq_len: int, batch: int) -> np.ndarray:
        """Raw (unscaled) feature vector in the order of :data:`FEATURES`."""
        embedding = self._get("embedding", arch.hidden, 0, 0, seq_len, batch)
        attention = self._get("attention", arch.hidden, arch.heads, 0, seq_len, batch)
        ffn = self._get("ffn", arch.hidden, 0, arch.ffn, seq_len, batch)
        layers = float(arch.layers)
        return np.array([1.0, embedding, layers * attention, layers * ffn, layers])


def fit_latency_model(table: BlockTable, models: list[ModelTiming]) -> LatencyFit:
    """Least squares on relative error over whole-model measurements.

    Block coefficients are kept non-negative; the constant and the per-layer term may be
    negative, because each separately timed block pays a call overhead that a whole model
    pays once.
    """
    from scipy.optimize import lsq_linear

    models = best_rounds(models)
    if len(models) < len(FEATURES):
        raise ValueError(f"need at least {len(FEATURES)} whole-model measurements to fit")
    raw = np.stack([table.features(m.arch, m.seq_len, m.batch) for m in models])
    measured = np.array([m.latency.p50_ms for m in models])
    scale = np.abs(raw).max(axis=0)
    scale[scale == 0] = 1.0
    # Dividing each row by its measured latency turns squared error into squared relative error,
    # so small and large models count alike.
    design = (raw / scale) / measured[:, None]
    lower = [-np.inf if name in ("overhead", "layers") else 0.0 for name in FEATURES]
    coefficients = lsq_linear(design, np.ones(len(models)), bounds=(lower, np.inf)).x
    return LatencyFit(
        FEATURES, tuple(float(s) for s in scale), tuple(float(c) for c in coefficients)
    )


class LatencyModel:
    """Predicts whole-encoder latency (ms) for an architecture from a hardware profile.

    The fitted line's constant and per-layer terms may be negative, so for shapes smaller than
    any it was fitted on it can run towards zero and below: no encoder is predicted faster,
    relative to the sum of its blocks, than the fastest of ``fitted`` (the whole encoders the
    line was fitted on) was measured to be.
    """

    def __init__(
        self, table: BlockTable, fit: LatencyFit, fitted: Sequence[ModelTiming] = ()
    ) -> None:
        if fit.features != FEATURES:
            raise ArtifactError(
                f"profile latency model uses features {fit.features}, expected {FEATURES}"
            )
        self._table = table
        self._weights = np.array(fit.coefficients) / np.array(fit.scale)
        ratios = [
            m.latency.p50_ms / self._blocks_ms(m.arch, m.seq_len, m.batch)
            for m in best_rounds(list(fitted))
        ]
        self._floor = min(ratios, default=0.0)

    @classmethod
    def from_profile(cls, profile: HardwareProfile) -> LatencyModel:
        if profile.fit is None:
            raise ArtifactError(
                f"profile '{profile.name}' is incomplete: it has no fitted latency model"
            )
        fitted = [m for m in profile.models if m.role == "fit"]
        return cls(BlockTable(profile.blocks), profile.fit, fitted)

    def _blocks_ms(self, arch: StudentArch, seq_len: int, batch: int) -> float:
        """The architecture's blocks timed one by one, summed."""
        return float(self._table.features(arch, seq_len, batch)[1:4].sum())

    def predict_ms(self, arch: StudentArch, *, seq_len: int, batch: int = 1) -> float:
        line = float(self._table.features(arch, seq_len, batch) @ self._weights)
        return max(line, self._floor * self._blocks_ms(arch, seq_len, batch))


def percentage_errors(model: LatencyModel, timings: list[ModelTiming]) -> np.ndarray:
    timings = best_rounds(timings)
    predicted = np.array(
        [model.predict_ms(t.arch, seq_len=t.seq_len, batch=t.batch) for t in timings]
    )
    measured = np.array([t.latency.p50_ms for t in timings])
    return np.abs(predicted - measured) / measured * 100.0


def evaluate(
    model: LatencyModel, fit_set: list[ModelTiming], heldout: list[ModelTiming]
) -> PredictorError:
    """MAPE and worst error on held-out architectures, plus the in-sample MAPE for contrast."""
    heldout = best_rounds(heldout)
    errors = percentage_errors(model, heldout)
    points = tuple(
        HeldOutPoint(
            t.arch,
            t.seq_len,
            t.batch,
            t.latency.p50_ms,
            model.predict_ms(t.arch, seq_len=t.seq_len, batch=t.batch),
        )
        for t in heldout
    )
    return PredictorError(
        heldout_architectures=len({t.arch for t in heldout}),
        mape=float(errors.mean()),
        worst_ape=float(errors.max()),
        fit_mape=float(percentage_errors(model, fit_set).mean()),
        points=points,
    )
