"""int8 quantization of an fp32 export: settings per CPU, fallbacks on lost parity, speed check.

One generic flow for both runtimes, NNCF's shape: what each runtime must provide is
:class:`kdcompress.backends.int8.Int8Backend`, implemented in
:mod:`kdcompress.backends.onnxruntime_int8` and :mod:`kdcompress.backends.openvino_int8` and
imported here in the runtime's own branch (:func:`int8_backend`):

1. **settings from the CPU** -- :func:`cpu_preset` reads the ISA flags. Without VNNI, the int8
   kernels multiply uint8 activations by int8 weights with ``VPMADDUBSW``, which adds two
   products into a *saturating* int16: 255 * 127 * 2 = 64,770 > 32,767, so large activations
   meeting large weights are silently clipped. 7-bit weights (ONNX Runtime's ``reduce_range``,
   NNCF's overflow fix) keep the sum below 255 * 63 * 2 = 32,130 and cannot saturate. VNNI's
   ``VPDPBUSD`` accumulates in int32 and needs no such trick.
2. **plans, most aggressive first** -- :func:`plans_for`: static falls back to static with the
   embeddings and the first and last encoder layers in fp32, then to dynamic (weight-only on
   OpenVINO), then to dynamic with those parts in fp32. Each plan is run, loaded and compared
   with PyTorch; the first whose minimum pooled-embedding cosine reaches ``min_int8_cosine`` is
   kept. Every attempt and the reason for a fallback are recorded in ``export.json``.
3. **speed check** -- fp32 and int8 timed side by side on the same runtime (batch 1, seq 128 or
   the model's maximum): on CPUs without VNNI int8 can be *slower* than fp32 (OpenVINO on AVX2),
   and the user is told so loudly rather than shipped a slower model unknowingly.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
from rich.markup import escape

from kdcompress.artifacts import (
    Int8Attempt,
    Int8Settings,
    Int8SpeedCheck,
    ParityReport,
    QualityDrop,
    QuantizationReport,
    int8_file_name,
)
from kdcompress.backends import Backend, BackendName, LoadedModel
from kdcompress.backends.int8 import Int8Backend, Int8Setup
from kdcompress.console import info, status, warn
from kdcompress.encoding import read_longest_input
from kdcompress.errors import (
    ArtifactError,
    KDCompressError,
    UsageError,
    first_line,
    parse_choice,
)
from kdcompress.hardware import isa_flags
from kdcompress.parity import check_parity, model_bytes

DEFAULT_CALIBRATION_SIZE = 128
DEFAULT_MIN_INT8_COSINE = 0.98
SPEED_CHECK_SEQ_LEN = 128
CALIBRATION_MAX_LENGTH = 128
_WORK_DIR = ".int8-work"


class Quantization(StrEnum):
    NONE = "none"
    DYNAMIC = "dynamic"
    STATIC = "static"


class Int8ParityError(KDCompressError):
    """Every int8 plan, fallbacks included, lost too much parity: nothing was written."""

    exit_code = 4


def parse_quantization(name: str) -> Quantization:
    return parse_choice(Quantization, name, what="quantization")


# ----------------------------------------------------------------------------- CPU presets


@dataclass(frozen=True)
class CpuPreset:
    """int8 settings that depend on the CPU's instruction set."""

    name: str
    isa: tuple[str, ...]
    vnni: bool  # int8 dot products accumulate in int32: no saturation, full 8-bit weights

    @property
    def reduce_range(self) -> bool:
        """7-bit weights, against the saturation of non-VNNI uint8 x int8 kernels."""
        return not self.vnni


def avx2(isa: Sequence[str] = ("avx2",)) -> CpuPreset:
    return CpuPreset("avx2", tuple(isa), vnni=False)


def avx512(isa: Sequence[str] = ("avx2", "avx512f")) -> CpuPreset:
    return CpuPreset("avx512", tuple(isa), vnni=False)


def avx512_vnni(isa: Sequence[str] = ("avx2", "avx512f", "avx512_vnni")) -> CpuPreset:
    return CpuPreset("avx512-vnni", tuple(isa), vnni=True)


def avx_vnni(isa: Sequence[str] = ("avx2", "avx_vnni")) -> CpuPreset:
    return CpuPreset("avx-vnni", tuple(isa), vnni=True)


def cpu_preset(flags: Sequence[str] | None = None) -> CpuPreset:
    """The preset for this CPU (or for ``flags``, as :func:`kdcompress.hardware.isa_flags`)."""
    isa = tuple(isa_flags() if flags is None else flags)
    if "avx512_vnni" in isa:
        return avx512_vnni(isa)
    if "avx_vnni" in isa:
        return avx_vnni(isa)
    if "avx512f" in isa:
        return avx512(isa)
    return avx2(isa)


# ----------------------------------------------------------------------------- plans


@dataclass(frozen=True)
class Int8Plan:
    """One way to quantize: the mode, and whether the most sensitive parts stay fp32."""

    mode: Quantization
    keep_edges: bool = False  # embeddings and the first and last encoder layers stay fp32

    def describe(self) -> str:
        return f"{self.mode}" + (" (embeddings, first and last layer in fp32)" * self.keep_edges)


def plans_for(mode: Quantization) -> tuple[Int8Plan, ...]:
    """The plans tried for ``mode``, from the most to the least aggressive."""
    dynamic = (Int8Plan(Quantization.DYNAMIC), Int8Plan(Quantization.DYNAMIC, keep_edges=True))
    if mode is Quantization.STATIC:
        return (Int8Plan(mode), Int8Plan(mode, keep_edges=True), *dynamic)
    if mode is Quantization.DYNAMIC:
        return dynamic
    raise ValueError(f"no int8 plans for quantization '{mode}'")


@dataclass(frozen=True)
class QuantizeOptions:
    """What the user asked for; everything else is chosen from the CPU and the model."""

    mode: Quantization
    calibration_size: int = DEFAULT_CALIBRATION_SIZE
    calibration_languages: tuple[str, ...] = ()  # corpus languages; () = all of them
    per_channel: bool = True
    min_int8_cosine: float = DEFAULT_MIN_INT8_COSINE
    seed: int = 0
    speed_check: bool = True
    speed_runs: int = 30
    speed_rounds: int = 3
    # Accuracy control: an int8 plan whose mean evaluation score falls more than this many
    # percent below the fp32 export's is rejected like one that lost parity (None: no check).
    max_quality_drop: float | None = None
    quality_suite: str = "quick"  # quick | full evaluation suite for that check


class QualityGate:
    """Scores int8 candidates on the evaluation suite against the fp32 export (scored once)."""

    def __init__(
        self, *, backend: Backend, model_dir: Path, fp32_file: Path, options: QuantizeOptions
    ) -> None:
        from kdcompress.quality import full_settings, quick_settings

        assert options.max_quality_drop is not None
        self.max_drop = options.max_quality_drop
        self.settings = quick_settings() if options.quality_suite == "quick" else full_settings()
        self.backend, self.model_dir, self.fp32_file = backend, model_dir, fp32_file
        self._fp32: dict[str, float] | None = None

    def _scores(self, artifact: Path, threads: int) -> dict[str, float]:
        from kdcompress.quality import score_model_file

        return score_model_file(
            model_dir=self.model_dir,
            backend=self.backend.name.value,
            artifact=artifact,
            settings=self.settings,
            threads=threads,
        )

    def check(self, int8_file: Path, threads: int) -> QualityDrop:
        if self._fp32 is None:
            with status("Scoring the fp32 export on the evaluation suite"):
                self._fp32 = self._scores(self.fp32_file, threads)
        with status("Scoring the int8 candidate on the evaluation suite"):
            int8 = self._scores(int8_file, threads)
        return QualityDrop(fp32_scores=self._fp32, int8_scores=int8, max_drop_pct=self.max_drop)


@dataclass(frozen=True)
class Calibration:
    """Calibration sentences (text prefix applied) and the tokenizer to encode them."""

    texts: tuple[str, ...]
    tokenizer: Any
    max_length: int

    def batches(self, model: LoadedModel) -> list[dict[str, np.ndarray]]:
        """One sentence per batch, unpadded: padding would widen the calibrated ranges."""
        from kdcompress.encoding import tokenize

        return [
            model.prepare(tokenize(self.tokenizer, [text], max_length=self.max_length))
            for text in self.texts
        ]


def load_calibration(model_dir: Path, options: QuantizeOptions) -> Calibration:
    """Sentences of the corpus' train split, prefixed like the model expects, and the tokenizer.

    Called before exporting, so a missing corpus or tokenizer fails in seconds, not minutes.
    """
    from kdcompress import corpus
    from kdcompress.assets import read_embedding_info
    from kdcompress.encoding import load_tokenizer

    if options.calibration_size < 1:
        raise UsageError("--calibration-size must be at least 1")
    try:
        tokenizer = load_tokenizer(model_dir)
    except Exception as exc:  # transformers raises OSError, ValueError, TypeError...
        raise UsageError(
            f"static quantization needs the model's tokenizer, and {model_dir} has none that "
            f"loads ({first_line(exc)})"
        ) from exc
    languages = options.calibration_languages or tuple(corpus.LANGUAGES)
    try:
        sentences = list(
            corpus.iter_sentences(
                "train", languages, seed=options.seed, limit=options.calibration_size
            )
        )
    except KDCompressError as exc:
        raise UsageError(
            f"static quantization needs calibration text from the Bible corpus: {exc}"
        ) from exc
    if not sentences:
        raise UsageError("static quantization needs calibration text: the corpus yielded none")
    prefix = read_embedding_info(model_dir).text_prefix
    max_length = min(CALIBRATION_MAX_LENGTH, read_longest_input(model_dir))
    return Calibration(tuple(prefix + s for s in sentences), tokenizer, max_length)


# ----------------------------------------------------------------------------- the flow


def int8_backend(backend: Backend, setup: Int8Setup) -> Int8Backend:
    """``backend``'s int8 specifics, its module imported only in its own branch."""
    if backend.name is BackendName.ONNXRUNTIME:
        from kdcompress.backends.onnxruntime_int8 import OnnxRuntimeInt8

        return OnnxRuntimeInt8(setup)
    if backend.name is BackendName.OPENVINO:
        from kdcompress.backends.openvino_int8 import OpenVinoInt8

        return OpenVinoInt8(setup)
    raise UsageError(f"backend '{backend.name}' has no int8 quantization")


@dataclass(frozen=True)
class Int8Result:
    model_file: Path  # the deployable int8 model, inside the export directory
    parity: ParityReport
    report: QuantizationReport


def quantize_export(
    *,
    backend: Backend,
    model_dir: Path,
    fp32_file: Path,
    output_dir: Path,
    options: QuantizeOptions,
    calibration: Calibration | None,
    threads: int,
) -> Int8Result:
    """int8 version of the fp32 export ``fp32_file``, written next to it (``output_dir`` holds
    the attempts while they run).

    Raises :class:`Int8ParityError` when no plan reaches ``options.min_int8_cosine``.
    """
    preset = cpu_preset()
    work = output_dir / _WORK_DIR
    work.mkdir(exist_ok=True)
    runtime = int8_backend(
        backend,
        Int8Setup(
            fp32_file=fp32_file,
            model_dir=model_dir,
            work=work,
            preset=preset.name,
            reduce_range=preset.reduce_range,
            per_channel=options.per_channel,
        ),
    )
    try:
        fp32 = backend.load(model_path=fp32_file, threads=threads)
        batches = calibration.batches(fp32) if calibration is not None else []
        gate = None
        if options.max_quality_drop is not None:
            gate = QualityGate(
                backend=backend, model_dir=model_dir, fp32_file=fp32_file, options=options
            )
        accepted, attempts = _try_plans(
            runtime, backend, model_dir, batches, options, threads, gate
        )
        chosen = next(a for a in attempts if a.accepted)
        model_file = runtime.move(accepted, _int8_target(fp32_file, chosen.settings))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert chosen.parity is not None
    report = QuantizationReport(
        requested=options.mode.value,
        settings=chosen.settings,
        attempts=tuple(attempts),
        isa=preset.isa,
        fp32_bytes=model_bytes(fp32_file),
        int8_bytes=model_bytes(model_file),
        fallback=_fallback_reason(attempts),
    )
    report = _checked_speed(report, backend, fp32, model_file, model_dir, options, threads)
    return Int8Result(model_file=model_file, parity=chosen.parity, report=report)


def _int8_target(fp32_file: Path, settings: Int8Settings) -> Path:
    """Where the int8 file goes: next to the fp32 one, named by weight type and CPU target."""
    name = int8_file_name(fp32_file.name, weight_type=settings.weight_type, preset=settings.preset)
    return fp32_file.parent / name


def _checked_speed(
    report: QuantizationReport,
    backend: Backend,
    fp32: LoadedModel,
    model_file: Path,
    model_dir: Path,
    options: QuantizeOptions,
    threads: int,
) -> QuantizationReport:
    """``report`` after warning about a fallback, with the speed check when it is asked for."""
    if report.fallback:
        warn(f"int8 fallback: {escape(report.fallback)}")
    if options.speed_check:
        int8 = backend.load(model_path=model_file, threads=threads)
        report = replace(report, speed=speed_check(fp32, int8, model_dir, options))
        where = f"{fp32.path.parent.name}/{fp32.path.name}"  # the subfolder: onnx/, openvino/
        _warn_if_not_faster(report.speed, backend.name.value, where)
    return report


def _try_plans(
    runtime: Int8Backend,
    backend: Backend,
    model_dir: Path,
    batches: Sequence[Mapping[str, np.ndarray]],
    options: QuantizeOptions,
    threads: int,
    gate: QualityGate | None = None,
) -> tuple[Path, list[Int8Attempt]]:
    """Run the plans in order until one keeps parity (and, with ``gate``, quality); the
    accepted file and every attempt."""
    layers = _num_layers(model_dir)
    attempts: list[Int8Attempt] = []
    for index, plan in enumerate(plans_for(options.mode)):
        label = f"int8 {plan.describe()}"
        target = runtime.work / f"attempt{index}{runtime.suffix}"
        with status(f"Quantizing to {label}"):
            settings, exclude, skip = _plan_settings(runtime, plan, layers, len(batches))
            if skip:
                attempts.append(Int8Attempt(settings, None, False, f"skipped: {skip}"))
                continue
            candidate, note = _quantize_and_load(
                runtime, backend, plan, target, batches, exclude, threads
            )
        if candidate is None:
            attempts.append(Int8Attempt(settings, None, False, note))
            warn(f"{label} ({settings.method}) {escape(note)}")
            continue
        attempt = _judge(candidate, target, settings, label, model_dir, options, threads, gate)
        attempts.append(attempt)
        if attempt.accepted:
            return target, attempts
    raise Int8ParityError(_no_plan_message(attempts, options.min_int8_cosine))


def _plan_settings(
    runtime: Int8Backend, plan: Int8Plan, layers: int, calibrated: int
) -> tuple[Int8Settings, list[str], str]:
    """The settings ``plan`` runs with, the operations it keeps fp32, and why it is skipped
    (empty when it is not)."""
    static = plan.mode is Quantization.STATIC
    settings = runtime.settings(static, calibrated)
    if not plan.keep_edges:
        return settings, [], ""
    exclude, found = runtime.exclusions(static, {0, layers - 1})
    settings = replace(settings, keep_fp32=tuple(sorted(found)))
    return settings, exclude, _skip_reason(layers, found)


def _quantize_and_load(
    runtime: Int8Backend,
    backend: Backend,
    plan: Int8Plan,
    target: Path,
    batches: Sequence[Mapping[str, np.ndarray]],
    exclude: Sequence[str],
    threads: int,
) -> tuple[LoadedModel | None, str]:
    """The int8 model of ``plan`` loaded, or None and why it failed."""
    try:
        runtime.quantize(plan.mode is Quantization.STATIC, target, batches, exclude)
        return backend.load(model_path=target, threads=threads), ""
    except KDCompressError as exc:
        if not (isinstance(exc, ArtifactError) and target.exists()):
            raise  # a bad input, not this plan's fault
        return None, f"failed: {exc}"
    except Exception as exc:  # a quantizer that cannot handle this graph: try the next
        return None, f"failed: {type(exc).__name__}: {first_line(exc)}"


def _judge(
    candidate: LoadedModel,
    target: Path,
    settings: Int8Settings,
    label: str,
    model_dir: Path,
    options: QuantizeOptions,
    threads: int,
    gate: QualityGate | None,
) -> Int8Attempt:
    """The attempt with its parity (and, with ``gate``, quality) and whether it is kept."""
    with status("Checking int8 parity against PyTorch"):
        parity = check_parity(
            source_dir=model_dir, candidate=candidate, min_cosine=options.min_int8_cosine
        )
    quality = gate.check(target, threads) if gate is not None and parity.passed else None
    accepted = parity.passed and (quality is None or quality.passed)
    note = quality.describe() if quality is not None and not quality.passed else ""
    verdict = "[green]kept[/]" if accepted else "[yellow]rejected[/]"
    info(
        f"{label} ({settings.method}): min cosine {parity.min_cosine:.4f} vs PyTorch "
        f"(gate {options.min_int8_cosine})"
        + (f", {quality.describe()}" if quality is not None else "")
        + f" -> {verdict}"
    )
    return Int8Attempt(settings, parity, accepted, note, quality)


def _skip_reason(layers: int, found: set[str]) -> str:
    if layers <= 2:
        return f"the model has {layers} layer(s): keeping the first and last in fp32 leaves none"
    if not any(part.startswith("layer") for part in found):
        return "no encoder layer names recognised in the graph"
    return ""


def _no_plan_message(attempts: Sequence[Int8Attempt], gate: float) -> str:
    tried = "; ".join(_attempt_summary(a) for a in attempts)
    gates = f"--min-int8-cosine {gate}"
    if any(a.quality for a in attempts):
        gates += (
            f", --max-quality-drop {next(a.quality for a in attempts if a.quality).max_drop_pct:g}%"
        )
    return f"int8 lost too much ({gates}) even after falling back: {tried}; nothing was written"


def _attempt_summary(attempt: Int8Attempt) -> str:
    what = attempt.settings.mode + (" keeping fp32 edges" if attempt.settings.keep_fp32 else "")
    if attempt.parity is None:
        return f"{what} {attempt.note}"
    summary = f"{what} min cosine {attempt.parity.min_cosine:.4f}"
    return summary + (f", {attempt.quality.describe()}" if attempt.quality else "")


def _fallback_reason(attempts: Sequence[Int8Attempt]) -> str | None:
    rejected = [a for a in attempts if not a.accepted]
    if not rejected:
        return None
    chosen = next(a for a in attempts if a.accepted)
    gate = chosen.parity.min_cosine_required if chosen.parity else 0.0
    why = "; ".join(_attempt_summary(a) for a in rejected)
    return f"{why} (gate {gate}); deployed {_attempt_summary(chosen)}"


def speed_check(
    fp32: LoadedModel, int8: LoadedModel, model_dir: Path, options: QuantizeOptions
) -> Int8SpeedCheck:
    """fp32 and int8 timed in turns on the same synthetic full-length batch."""
    from kdcompress.backends.base import compare_latency
    from kdcompress.encoding import synthetic_batch

    config = json.loads((model_dir / "config.json").read_text())
    seq_len = min(SPEED_CHECK_SEQ_LEN, read_longest_input(model_dir))
    batch = synthetic_batch(vocab_size=int(config["vocab_size"]), batch=1, seq_len=seq_len)
    with status(f"Timing fp32 vs int8 side by side (batch 1, seq {seq_len})"):
        stats = compare_latency(
            {"fp32": fp32, "int8": int8},
            batch,
            runs=options.speed_runs,
            rounds=options.speed_rounds,
        )
    return Int8SpeedCheck(batch=1, seq_len=seq_len, fp32=stats["fp32"], int8=stats["int8"])


def _warn_if_not_faster(speed: Int8SpeedCheck | None, runtime: str, fp32_name: str) -> None:
    if speed is None:
        return
    line = (
        f"fp32 {speed.fp32.p50_ms:.2f} ms, int8 {speed.int8.p50_ms:.2f} ms p50 at batch "
        f"{speed.batch}, seq {speed.seq_len} ({speed.speedup:.2f}x)"
    )
    if speed.fp32.disturbed or speed.int8.disturbed:
        line += "; other processes used the CPU while timing, so re-check with `validate`"
    if speed.speedup <= 1.0:
        warn(
            f"[bold red]int8 is NOT faster than fp32 on this CPU with {runtime}[/]: {line}. "
            f"Deploy {fp32_name} instead, or try another runtime."
        )
    else:
        info(f"[green]int8 is {speed.speedup:.2f}x faster[/] than fp32 with {runtime}: {line}")


def _num_layers(model_dir: Path) -> int:
    config = json.loads((model_dir / "config.json").read_text())
    return int(config.get("num_hidden_layers") or config.get("n_layers") or 0)
