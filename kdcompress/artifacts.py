"""Typed artifacts passed between stages and their JSON form.

Each stage reads and writes small frozen dataclasses. On disk an artifact is JSON with a
``kind`` and a ``schema_version`` so a foreign or outdated file is refused with a clear message
instead of half-parsed. Artifacts are saved atomically (:mod:`kdcompress.outputs`, whose
writers and locks are re-exported here).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import statistics
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

from kdcompress.errors import ArtifactError, OutputExistsError
from kdcompress.outputs import atomic_write_text

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Artifact:
    """Base of every artifact: subclasses set ``kind`` and bump ``schema_version`` on change."""

    kind: ClassVar[str] = "artifact"
    schema_version: ClassVar[int] = 1

    def to_json(self) -> dict[str, Any]:
        body = _to_jsonable(self)
        assert isinstance(body, dict)
        return {"kind": self.kind, "schema_version": self.schema_version, **body}

    @classmethod
    def from_json(cls, data: Any, *, source: str = "artifact") -> Self:
        if not isinstance(data, dict):
            raise ArtifactError(f"{source}: expected a JSON object, got {type(data).__name__}")
        kind, version = data.get("kind"), data.get("schema_version")
        if kind != cls.kind:
            raise ArtifactError(f"{source}: holds a '{kind}' artifact, not '{cls.kind}'")
        if version != cls.schema_version:
            raise ArtifactError(
                f"{source}: schema version {version} is not supported "
                f"(this kdcompress reads version {cls.schema_version} of '{cls.kind}')"
            )
        body = {k: v for k, v in data.items() if k not in ("kind", "schema_version")}
        try:
            return _from_jsonable(cls, body, source)
        except (TypeError, ValueError) as exc:
            raise ArtifactError(f"{source}: malformed '{cls.kind}' file: {exc}") from exc

    def save(self, path: Path, *, overwrite: bool = True) -> Path:
        if path.exists() and not overwrite:
            raise OutputExistsError(f"{path} already exists; pass --overwrite to replace it")
        atomic_write_text(path, json.dumps(self.to_json(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> Self:
        if not path.is_file():
            raise ArtifactError(f"{path}: no such file")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ArtifactError(f"{path}: not valid JSON ({exc})") from exc
        return cls.from_json(data, source=str(path))


# A small hand-written (de)serialiser: the artifacts are plain dataclasses of primitives, lists,
# dicts, enums and paths, which does not justify adding pydantic to the dependency set.
def _to_jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_jsonable(v) for v in value]
    return value


def _from_jsonable(tp: Any, value: Any, where: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _from_jsonable(inner[0], value, where)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise TypeError(f"{where}: expected an object for {tp.__name__}")
        hints = typing.get_type_hints(tp)
        fields = {f.name: f for f in dataclasses.fields(tp) if f.init}
        unknown = set(value) - set(fields)
        if unknown:
            raise TypeError(f"unknown field(s) {sorted(unknown)} in {tp.__name__}")
        kwargs = {
            name: _from_jsonable(hints[name], value[name], f"{where}.{name}")
            for name in fields
            if name in value
        }
        return tp(**kwargs)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise TypeError(f"{where}: expected a list")
        item_type = args[0] if args else Any
        items = [_from_jsonable(item_type, v, f"{where}[]") for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError(f"{where}: expected an object")
        return {k: _from_jsonable(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if tp is Path:
        return Path(value)
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and not isinstance(value, tp):
        raise TypeError(f"{where}: expected {tp.__name__}, got {type(value).__name__}")
    return value


# Above this share of the machine's CPU time used by other processes, a measurement is
# considered disturbed (a second busy core on a 2-core machine is 0.5).
FOREIGN_LOAD_LIMIT = 0.15
# A latency prediction further than this from the measurement is flagged in every report.
PREDICTION_ERROR_LIMIT = 0.10
# Interference no process list shows: above this share of CPU time stolen by the hypervisor for
# other virtual machines, or with the reference kernel (the machine's current speed, timed
# before and after each block) slower than the fastest seen by more than this, a measurement is
# considered disturbed too.
STEAL_LIMIT = 0.05
REFERENCE_DRIFT_LIMIT = 0.10


@dataclasses.dataclass(frozen=True)
class LatencyStats(Artifact):
    """Latency of one configuration, in milliseconds, with how it was measured."""

    kind = "latency"

    p50_ms: float
    p90_ms: float
    min_ms: float
    trimmed_mean_ms: float
    runs: int
    warmup: int
    threads: int
    foreign_load: float | None = None  # share of CPU used by other processes while timing
    # Added later; older files load with these missing (None / no samples).
    std_ms: float | None = None  # sample standard deviation of the timed calls
    p95_ms: float | None = None
    p99_ms: float | None = None
    samples_ms: tuple[float, ...] = ()  # every timed call in the order run (empty: not kept)
    steal: float | None = None  # share of CPU time the hypervisor gave to other machines
    reference_ms: tuple[float, ...] = ()  # the reference kernel before and after the block
    reference_baseline_ms: float | None = None  # the fastest reference kernel of the session
    flags: tuple[str, ...] = ()  # why the timing is disturbed, see :meth:`flagged`
    round_p50_ms: tuple[float, ...] = ()  # p50 of every side-by-side round, in order

    @property
    def spread(self) -> float:
        """Relative spread (p90 - p50) / p50: the noise of this measurement."""
        return (self.p90_ms - self.p50_ms) / self.p50_ms if self.p50_ms > 0 else 0.0

    @property
    def reference_drift(self) -> float | None:
        """How much slower the machine ran the reference kernel around this block than at its
        fastest in the session (0.1: 10% slower); None where it was not timed."""
        if not self.reference_ms:
            return None
        baseline = self.reference_baseline_ms or min(self.reference_ms)
        return max(self.reference_ms) / baseline - 1.0 if baseline > 0 else None

    def flagged(self) -> LatencyStats:
        """These statistics with ``flags`` set from what was observed while timing:
        ``other-processes`` (their CPU use), ``steal`` (the hypervisor's) and
        ``reference-drift`` (the machine ran slower, whatever the cause)."""
        flags = []
        if self.foreign_load is not None and self.foreign_load > FOREIGN_LOAD_LIMIT:
            flags.append("other-processes")
        if self.steal is not None and self.steal > STEAL_LIMIT:
            flags.append("steal")
        drift = self.reference_drift
        if drift is not None and drift > REFERENCE_DRIFT_LIMIT:
            flags.append("reference-drift")
        return dataclasses.replace(self, flags=tuple(flags))

    @property
    def disturbed(self) -> bool:
        # Files written before ``flags`` existed hold only the foreign-load reading.
        legacy = self.foreign_load is not None and self.foreign_load > FOREIGN_LOAD_LIMIT
        return bool(self.flags) or legacy

    def without_samples(self) -> LatencyStats:
        """These statistics without the raw samples (for files that keep thousands of them)."""
        return dataclasses.replace(self, samples_ms=())


@dataclasses.dataclass(frozen=True)
class ParityReport:
    """How closely an exported model reproduces the PyTorch model it came from."""

    sentences: int
    max_abs_diff: float  # over the last hidden state at non-padding positions
    min_cosine: float  # of mean-pooled sentence embeddings
    mean_cosine: float
    min_cosine_required: float

    @property
    def passed(self) -> bool:
        return self.min_cosine >= self.min_cosine_required


@dataclasses.dataclass(frozen=True)
class Int8Settings:
    """How an int8 model was made: enough to reproduce it, and to see what the CPU chose."""

    mode: str  # dynamic | static (as requested on the command line)
    method: str  # the library call, e.g. onnxruntime.quantize_static, nncf.compress_weights
    preset: str  # CPU preset the settings came from: avx2, avx512, avx512-vnni
    quant_format: str  # QDQ / QOperator (ONNX) or OpenVINO IR
    weight_type: str  # int8 / uint8
    activation_type: str  # uint8 (static), uint8, per batch (dynamic), fp32 (weight-only)
    per_channel: bool
    weight_range: str  # 8-bit, or 7-bit where non-VNNI int8 kernels could saturate
    graph_fusion: str  # transformer fusions applied before quantizing, or why none
    calibration_sentences: int = 0
    calibration_method: str = ""
    keep_fp32: tuple[str, ...] = ()  # parts left in fp32, e.g. embeddings, layer 0, layer 11


@dataclasses.dataclass(frozen=True)
class QualityDrop:
    """The evaluation suite on an int8 model vs its fp32 export: what quantization cost."""

    fp32_scores: dict[str, float]  # task -> score
    int8_scores: dict[str, float]
    max_drop_pct: float  # the gate: relative drop of the mean score, in percent

    @staticmethod
    def _mean(scores: dict[str, float]) -> float:
        return sum(scores.values()) / len(scores) if scores else 0.0

    @property
    def drop_pct(self) -> float:
        """Relative drop of the suite's mean score, in percent (negative: int8 did better)."""
        fp32 = self._mean(self.fp32_scores)
        return (fp32 - self._mean(self.int8_scores)) / fp32 * 100 if fp32 > 0 else 0.0

    @property
    def passed(self) -> bool:
        return self.drop_pct <= self.max_drop_pct

    def describe(self) -> str:
        fp32, int8 = self._mean(self.fp32_scores), self._mean(self.int8_scores)
        return (
            f"quality drop {self.drop_pct:.1f}% (mean score {fp32:.3f} fp32 -> {int8:.3f} int8; "
            f"gate {self.max_drop_pct:g}%)"
        )


@dataclasses.dataclass(frozen=True)
class Int8Attempt:
    """One quantization tried while exporting, with its parity (None if it failed to run)."""

    settings: Int8Settings
    parity: ParityReport | None
    accepted: bool
    note: str = ""
    quality: QualityDrop | None = None  # with --max-quality-drop, for plans that kept parity


@dataclasses.dataclass(frozen=True)
class Int8SpeedCheck:
    """fp32 and int8 of one export timed side by side on the same runtime and threads."""

    batch: int
    seq_len: int
    fp32: LatencyStats
    int8: LatencyStats

    @property
    def speedup(self) -> float:
        return self.fp32.p50_ms / self.int8.p50_ms if self.int8.p50_ms > 0 else 0.0


@dataclasses.dataclass(frozen=True)
class QuantizationReport:
    """The int8 part of an export: what was tried, what is deployed, and whether it pays off."""

    requested: str  # dynamic | static
    settings: Int8Settings  # of the deployed int8 file
    attempts: tuple[Int8Attempt, ...]  # in the order tried, most aggressive first
    isa: tuple[str, ...]  # the CPU's relevant ISA flags when the settings were chosen
    fp32_bytes: int
    int8_bytes: int
    fallback: str | None = None  # why the deployed settings are not the first choice
    speed: Int8SpeedCheck | None = None


@dataclasses.dataclass(frozen=True)
class ExportManifest(Artifact):
    """``export.json``: what an export directory holds and how it was checked."""

    kind = "export"

    format: str
    backend: str
    backend_version: str
    source_model: str
    model_file: str  # relative to the export directory
    quantization: str
    parity: ParityReport
    # Added with int8 export; defaults keep older export.json files readable.
    fp32_file: str | None = None  # the fp32 model, kept next to an int8 ``model_file``
    fp32_parity: ParityReport | None = None  # of ``fp32_file``; ``parity`` is ``model_file``'s
    int8: QuantizationReport | None = None


# Names of the models a validation measures side by side.
TEACHER = "teacher"
STUDENT_FP32 = "student-fp32"
STUDENT_INT8 = "student-int8"
STUDENT_PYTORCH = "student-pytorch"


@dataclasses.dataclass(frozen=True)
class LatencyRow:
    """One latency measurement of one model on one backend at one input shape."""

    model: str
    backend: str
    batch: int
    seq_len: int
    latency: LatencyStats


@dataclasses.dataclass(frozen=True)
class PredictedLatency:
    """The hardware profile's prediction for one model at one input shape, and the p50 then
    measured (None in files written before it was kept, or where the shape was not timed)."""

    batch: int
    seq_len: int
    predicted_ms: float
    model: str = STUDENT_FP32  # files written before the teacher was predicted hold the student
    measured_ms: float | None = None
    # "predicted": by the latency model from measured blocks; "profiled": the profile timed an
    # encoder of this very shape (the teacher's), which the search's budgets were set from
    how: str = "predicted"

    @property
    def error(self) -> float | None:
        """Predicted / measured - 1 (-0.1: predicted 10% low)."""
        return self.predicted_ms / self.measured_ms - 1.0 if self.measured_ms else None

    @property
    def off(self) -> bool:
        """Whether the prediction missed by more than :data:`PREDICTION_ERROR_LIMIT`."""
        return self.error is not None and abs(self.error) > PREDICTION_ERROR_LIMIT


@dataclasses.dataclass(frozen=True)
class MemoryUse:
    """Peak RSS of a process serving one model, and of the same process before loading it."""

    runtime_mib: float  # after importing numpy and the runtime only
    peak_mib: float  # after loading the model and running it at batch 1, ``seq_len`` tokens
    seq_len: int

    @property
    def model_mib(self) -> float:
        return self.peak_mib - self.runtime_mib


@dataclasses.dataclass(frozen=True)
class ModelSummary:
    """One model of a validation: the file measured, its size, memory and quality."""

    name: str  # teacher, student-fp32, student-int8
    backend: str
    file: str
    quantization: str  # none, dynamic, static
    size_bytes: int
    memory: MemoryUse | None = None
    scores: dict[str, float] = dataclasses.field(default_factory=dict)  # task -> score
    retention: float | None = None  # of the teacher's scores, mean of per-task ratios
    eval_report: str | None = None  # the full evaluation report


# File names of the stages' artifacts, one place for every reader and writer.
MANIFEST = "export.json"  # an export folder's manifest

# An export folder is laid out as a sentence-transformers model with a backend: the module
# files, config and tokenizer at the top, the graphs in the backend's subfolder, where
# ``SentenceTransformer(folder, backend=...)`` and Optimum's ``subfolder=`` look for them.
# Exports made before this layout hold ``model.onnx``/``model_int8.onnx`` (or
# ``openvino_model[_int8].xml``) at the top; their export.json names them, so they still load.
EXPORT_SUBFOLDERS = {"onnx": "onnx", "openvino": "openvino"}  # export format -> subfolder


def int8_file_name(fp32_file: str, *, weight_type: str, preset: str) -> str:
    """The int8 file next to ``fp32_file``, named as sentence-transformers names its own: the
    weight type and the CPU target the settings were chosen for, e.g.
    ``onnx/model_qint8_avx512_vnni.onnx``, ``onnx/model_quint8_avx2.onnx``,
    ``openvino/openvino_model_qint8_avx2_quantized.xml``."""
    path = Path(fp32_file)
    dtype = "quint8" if weight_type.startswith("uint8") else "qint8"
    tag = f"{dtype}_{preset.replace('-', '_')}"
    if path.suffix == ".xml":
        tag += "_quantized"  # sentence-transformers' suffix for OpenVINO int8 models
    return path.with_name(f"{path.stem}_{tag}{path.suffix}").as_posix()


VALIDATION_REPORT = "validation.json"
VALIDATION_MARKDOWN = "validation.md"


@dataclasses.dataclass(frozen=True)
class ValidationReport(Artifact):
    """``validation.json``: parity, side-by-side latency, size, memory and quality of an export
    (fp32 and int8 when quantized) and of its teacher on the same runtime."""

    kind = "validation"
    schema_version = 2

    export_dir: str
    parity: ParityReport  # of the deployed file (int8 when quantized)
    latency: tuple[LatencyRow, ...]
    cpu: str
    threads: int
    teacher_export: str | None = None
    predicted: tuple[PredictedLatency, ...] = ()  # student fp32 and teacher, by shape
    models: tuple[ModelSummary, ...] = ()
    fp32_parity: ParityReport | None = None  # of the fp32 file, when the deployed one is int8
    eval_suite: str = "none"  # none, quick or full

    @property
    def deployed(self) -> str:
        """The student model that ships: int8 when the export was quantized."""
        return STUDENT_INT8 if any(r.model == STUDENT_INT8 for r in self.latency) else STUDENT_FP32

    def stats(self, model: str, batch: int, seq_len: int) -> LatencyStats | None:
        for row in self.latency:
            if (row.model, row.batch, row.seq_len) == (model, batch, seq_len):
                return row.latency
        return None

    def p50(self, model: str, batch: int, seq_len: int) -> float | None:
        stats = self.stats(model, batch, seq_len)
        return stats.p50_ms if stats else None

    @property
    def reference(self) -> str:
        """What speedups are relative to: the teacher, else the student's PyTorch source."""
        return TEACHER if self.teacher_export else STUDENT_PYTORCH

    def speedup(self, batch: int, seq_len: int, model: str | None = None) -> float | None:
        """Reference p50 / student p50 on the same runtime and threads: the median over the
        side-by-side rounds of each round's own ratio (the two timed seconds apart, so a drift
        of the machine between rounds cancels, and the figure lies within its spread), else --
        files written before the rounds were kept -- the ratio of the two p50s."""
        rounds = self.speedup_rounds(batch, seq_len, model)
        if rounds:
            return float(statistics.median(rounds))
        reference = self.p50(self.reference, batch, seq_len)
        student = self.p50(model or self.deployed, batch, seq_len)
        return reference / student if reference and student else None

    def speedup_rounds(self, batch: int, seq_len: int, model: str | None = None) -> list[float]:
        """Reference p50 / student p50 of every side-by-side round (empty in files written
        before the rounds were kept): their range is the speedup's spread."""
        reference = self.stats(self.reference, batch, seq_len)
        student = self.stats(model or self.deployed, batch, seq_len)
        if reference is None or student is None:
            return []
        pairs = zip(reference.round_p50_ms, student.round_p50_ms, strict=False)
        return [r / s for r, s in pairs if s > 0]

    def predictions(self) -> list[PredictedLatency]:
        """Every prediction with its measured p50 (looked up for files that did not keep it)."""
        return [
            p
            if p.measured_ms is not None
            else dataclasses.replace(p, measured_ms=self.p50(p.model, p.batch, p.seq_len))
            for p in self.predicted
        ]

    def summary(self, name: str) -> ModelSummary | None:
        return next((m for m in self.models if m.name == name), None)


@dataclasses.dataclass(frozen=True)
class StudentArch:
    """A student encoder's shape: what the search proposes and the distill stage builds."""

    layers: int
    hidden: int
    heads: int
    ffn: int
    activation: str = "gelu"

    @property
    def arch_id(self) -> str:
        """Stable id: a hash of the canonical encoding, for de-duplication and caching."""
        import hashlib

        canonical = f"L{self.layers}-H{self.hidden}-A{self.heads}-F{self.ffn}-{self.activation}"
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def describe(self) -> str:
        shape = f"{self.layers}L x {self.hidden}H"
        return f"{shape}, {self.heads} heads, FFN {self.ffn}, {self.activation}"


@dataclasses.dataclass(frozen=True)
class LossPoint:
    """Distillation losses averaged over the ``log_every`` steps ending at ``step``."""

    step: int
    loss: float  # the optimised total
    hidden: float | None  # normalised multi-layer hidden-state loss L_HS, when used
    pooled: float  # sentence-embedding loss: normalised MSE + (1 - cosine), per side
    relation: float | None = None  # MiniLMv2 attention-relation KL, when used
    lr: float = 0.0


@dataclasses.dataclass(frozen=True)
class VocabTrimStats:
    """Sizes before and after vocabulary trimming (bytes: parameters in fp32)."""

    vocab_before: int
    vocab_after: int
    params_before: int
    params_after: int
    weights_bytes_before: int
    weights_bytes_after: int
    tokenizer_bytes_before: int
    tokenizer_bytes_after: int


@dataclasses.dataclass(frozen=True)
class DistillResult(Artifact):
    """``distill.json``: how a student was distilled and how far its losses got."""

    kind = "distill"

    arch: StudentArch
    arch_id: str
    teacher: str
    init: str
    init_details: tuple[str, ...]
    loss: str
    layer_map: tuple[tuple[int, int], ...]  # (student, teacher) hidden states, 0 = embeddings
    steps: int
    batch_size: int
    lr: float
    seed: int
    max_length: int
    languages: tuple[str, ...]
    sentences: int
    corpus_hash: str
    curve: tuple[LossPoint, ...]
    final_hidden_loss: float | None
    final_pooled_loss: float
    final_relation_loss: float | None
    wall_s: float  # training loop, summed over resumed sessions
    teacher_cache_s: float  # this session's wait for the teacher cache (0 if it existed)
    sentences_per_s: float
    world_size: int
    parameters: int
    vocab: VocabTrimStats | None = None
    targets: str = "own"  # "cross-lingual": translations learn their source's embedding
    final_cosine: float | None = None  # student vs teacher sentence embeddings, eval sentences
    passages: float = 0.0  # share of multi-verse passages among the training items
    general: float = 0.0  # share of general-domain sentences (news, speeches) among them
    words: float = 0.0  # share of single words of the teacher's vocabulary among them
    domain_text: str = ""  # the file the general share came from ("": news and speeches)


@dataclasses.dataclass(frozen=True)
class FrontierPoint:
    name: str
    what: str
    speedup: float  # measured, vs the teacher's fp32 on the same runtime
    retention: float


@dataclasses.dataclass(frozen=True)
class Frontier(Artifact):
    """A quality-vs-speed frontier measured by ``benchmarks/frontier.py`` (reports plot it)."""

    kind = "frontier"

    teacher: str
    cpu: str
    suite: str
    runtime: str
    batch: int
    seq_len: int
    points: tuple[FrontierPoint, ...]
