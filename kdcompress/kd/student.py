"""Building a student encoder from a :class:`StudentArch`, initialised from its teacher.

The student is the teacher's own model class (``BertModel``, ``XLMRobertaModel``, ...) built
from a config, so it saves, loads with ``AutoModel`` and exports like any Hugging Face encoder.
Teachers outside the BERT family get a ``BertModel`` student that shares their vocabulary.

Initialisation from the teacher (the MISSION's measurements: students that start from teacher
layers recover fast, random ones barely learn): student layer ``i`` takes the weights of teacher
layer ``floor(i * L_T / L_S)``; where the student is narrower the weights are sliced, keeping
the residual features, attention heads and FFN neurons with the largest weight norms, and the
same residual features in every layer so the stream stays aligned. Word embeddings always come
from the teacher (sliced to the kept features).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdcompress.artifacts import StudentArch
from kdcompress.errors import UsageError
from kdcompress.kd.importance import Importance
from kdcompress.kd.mapping import init_source_layers

BERT_FAMILY = frozenset({"bert", "roberta", "xlm-roberta"})
_ARCH_FIELDS = ("layers", "hidden", "heads", "ffn", "activation")


class InitMode(StrEnum):
    TEACHER = "teacher"  # uniform teacher layers, parts kept by weight norms
    ACTIVATIONS = "activations"  # layers, heads, neurons, features kept by activations
    RANDOM = "random"


SLICING = (InitMode.TEACHER, InitMode.ACTIVATIONS)


def parse_init(name: str) -> InitMode:
    try:
        return InitMode(name.lower())
    except ValueError:
        choices = ", ".join(m.value for m in InitMode)
        raise UsageError(f"unknown --init '{name}' (choose {choices})") from None


# ----------------------------------------------------------------------------- architectures


def arch_from_dict(data: Any, *, source: str) -> StudentArch:
    """A :class:`StudentArch` from a JSON object, with a message naming ``source`` if wrong."""
    if not isinstance(data, dict):
        raise UsageError(f"{source}: expected a JSON object with layers, hidden, heads, ffn")
    unknown = set(data) - set(_ARCH_FIELDS)
    missing = {"layers", "hidden", "heads", "ffn"} - set(data)
    if unknown or missing:
        problems = [f"missing {sorted(missing)}"] if missing else []
        problems += [f"unknown {sorted(unknown)}"] if unknown else []
        raise UsageError(f"{source}: {', '.join(problems)} (fields: {', '.join(_ARCH_FIELDS)})")
    for name in ("layers", "hidden", "heads", "ffn"):
        if not isinstance(data[name], int) or isinstance(data[name], bool):
            raise UsageError(f"{source}: '{name}' must be an integer, got {data[name]!r}")
    if not isinstance(data.get("activation", "gelu"), str):
        raise UsageError(f"{source}: 'activation' must be a string")
    return StudentArch(**data)


def parse_arch_json(text: str) -> StudentArch:
    """Parse ``--arch-json '{"layers":4,"hidden":384,"heads":12,"ffn":1536}'``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"--arch-json is not valid JSON ({exc.msg} at column {exc.colno})"
        ) from None
    return validate_arch(arch_from_dict(data, source="--arch-json"))


def load_search_arch(spec: str) -> tuple[StudentArch, str]:
    """The architecture named by ``PATH[#budget]``: a search result's recommendation.

    The file is a JSON object with ``"recommendations": [{"budget": "...", "arch": {...}}]``.
    Without ``#budget`` the first recommendation is used. Returns the arch and its budget.
    """
    path_text, _, budget = spec.partition("#")
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise UsageError(f"--arch {path}: no such file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"--arch {path}: not valid JSON ({exc})") from None
    recommendations = data.get("recommendations") if isinstance(data, dict) else None
    if not isinstance(recommendations, list) or not recommendations:
        raise UsageError(f'--arch {path}: expected a non-empty "recommendations" list')
    for index, entry in enumerate(recommendations):
        if not isinstance(entry, dict) or "arch" not in entry:
            raise UsageError(f'--arch {path}: recommendation {index} has no "arch" object')
    chosen = _pick_budget(recommendations, budget, path)
    arch = arch_from_dict(chosen["arch"], source=f"{path}#{chosen.get('budget', '')}")
    return validate_arch(arch), str(chosen.get("budget", ""))


def _pick_budget(recommendations: list[dict[str, Any]], budget: str, path: Path) -> dict[str, Any]:
    if not budget:
        return recommendations[0]
    for entry in recommendations:
        if str(entry.get("budget", "")) == budget:
            return entry
    known = ", ".join(str(e.get("budget", "?")) for e in recommendations)
    raise UsageError(f"--arch {path}: no recommendation for budget '{budget}' (has: {known})")


def validate_arch(
    arch: StudentArch, *, teacher_config: Any = None, init: InitMode = InitMode.RANDOM
) -> StudentArch:
    """Refuse impossible shapes with a message saying what to change; return ``arch``."""
    from transformers.activations import ACT2FN

    for name in ("layers", "hidden", "heads", "ffn"):
        if getattr(arch, name) < 1:
            raise UsageError(f"student {name} must be >= 1, got {getattr(arch, name)}")
    if arch.hidden % arch.heads:
        raise UsageError(
            f"student hidden size {arch.hidden} is not divisible by {arch.heads} heads"
        )
    if arch.activation not in ACT2FN:
        raise UsageError(f"unknown activation '{arch.activation}' (e.g. gelu, relu, silu)")
    if teacher_config is not None:
        _check_against_teacher(arch, teacher_config, init)
    return arch


def _check_against_teacher(arch: StudentArch, config: Any, init: InitMode) -> None:
    if arch.layers > config.num_hidden_layers:
        raise UsageError(
            f"student has {arch.layers} layers but the teacher only {config.num_hidden_layers}"
        )
    if init not in SLICING or config.model_type not in BERT_FAMILY:
        return
    for name, teacher_value in (("hidden", config.hidden_size), ("ffn", config.intermediate_size)):
        if getattr(arch, name) > teacher_value:
            raise UsageError(
                f"--init {init} slices teacher weights, but student {name} "
                f"{getattr(arch, name)} > teacher {teacher_value}; use --init random"
            )


# ----------------------------------------------------------------------------- building


def student_config(
    teacher_config: Any, arch: StudentArch, *, vocab_size: int, dropout: float | None = None
) -> Any:
    """The student's config: the teacher's (same model type, positions, norms) reshaped."""
    from transformers import BertConfig

    if teacher_config.model_type in BERT_FAMILY:
        config = copy.deepcopy(teacher_config)
    else:
        config = BertConfig(
            max_position_embeddings=teacher_config.max_position_embeddings,
            layer_norm_eps=getattr(teacher_config, "layer_norm_eps", 1e-12),
            pad_token_id=teacher_config.pad_token_id,
        )
    config.num_hidden_layers = arch.layers
    config.hidden_size = arch.hidden
    config.num_attention_heads = arch.heads
    config.intermediate_size = arch.ffn
    config.hidden_act = arch.activation
    config.vocab_size = vocab_size
    if dropout is not None:
        config.hidden_dropout_prob = dropout
        config.attention_probs_dropout_prob = dropout
    config.architectures = None
    config._name_or_path = ""
    return config


@dataclass(frozen=True)
class InitReport:
    """How a student was initialised, in words and in the indices that were kept."""

    mode: str
    source_layers: tuple[int, ...] | None  # teacher layer (1-based) per student layer
    hidden_dims: tuple[int, ...]  # teacher residual features the student's features came from
    details: tuple[str, ...]

    def describe(self) -> str:
        return "; ".join(self.details)


def build_student(
    teacher: Any,
    arch: StudentArch,
    *,
    init: InitMode = InitMode.TEACHER,
    seed: int = 0,
    keep_tokens: Sequence[int] | None = None,
    dropout: float | None = None,
    calibration: tuple[Tensor, Tensor] | None = None,
) -> tuple[Any, InitReport]:
    """A new student model and how it was initialised.

    ``keep_tokens`` (ascending teacher token ids) builds it with a trimmed vocabulary whose
    row ``k`` is teacher token ``keep_tokens[k]`` (see :mod:`kdcompress.kd.vocab`).
    ``calibration`` (teacher token ids and attention mask) is what ``InitMode.ACTIVATIONS``
    runs the teacher on to score its parts.
    """
    from transformers import AutoModel

    validate_arch(arch, teacher_config=teacher.config, init=init)
    teacher_vocab = teacher.get_input_embeddings().weight.shape[0]
    tokens = torch.as_tensor(
        list(keep_tokens) if keep_tokens is not None else range(teacher_vocab), dtype=torch.long
    )
    config = student_config(teacher.config, arch, vocab_size=len(tokens), dropout=dropout)
    _remap_special_ids(config, tokens, teacher_vocab)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the random part of the student depends on the seed only
        student = AutoModel.from_config(config, add_pooling_layer=False)
    same_family = teacher.config.model_type in BERT_FAMILY
    importance = None
    if init is InitMode.ACTIVATIONS and same_family:
        from kdcompress.kd.importance import measure_importance

        if calibration is None:
            raise UsageError("--init activations needs calibration sentences")
        importance = measure_importance(teacher, *calibration)
    norms = teacher.get_input_embeddings().weight.norm(dim=0)
    dims = _top(importance.hidden if importance is not None else norms, arch.hidden)
    with torch.no_grad():
        if init in SLICING and same_family:
            report = _init_from_teacher(teacher, student, arch, tokens, dims, importance)
        else:
            report = _init_random(teacher, student, tokens, dims, same_family)
    return student.eval(), report  # like from_pretrained: training code calls .train()


def _remap_special_ids(config: Any, tokens: Tensor, teacher_vocab: int) -> None:
    position = {int(t): k for k, t in enumerate(tokens.tolist())}
    for name in ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id"):
        value = getattr(config, name, None)
        if isinstance(value, int) and 0 <= value < teacher_vocab:
            setattr(config, name, position.get(value))


def _top(scores: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` largest scores, ascending (all of them when ``k`` is the size)."""
    if k >= scores.numel():
        return torch.arange(scores.numel())
    return torch.topk(scores, k).indices.sort().values


def _init_random(
    teacher: Any, student: Any, tokens: Tensor, dims: Tensor, same_family: bool
) -> InitReport:
    source = teacher.get_input_embeddings().weight
    # A student wider than its teacher keeps random values in its extra features.
    student.get_input_embeddings().weight[:, : dims.numel()] = source[tokens][:, dims]
    note = "" if same_family else f" (teacher type {teacher.config.model_type}: layers not copied)"
    return InitReport(
        mode=InitMode.RANDOM.value,
        source_layers=None,
        hidden_dims=tuple(dims.tolist()),
        details=(f"random layers, word embeddings from the teacher{note}",),
    )


def _init_from_teacher(
    teacher: Any,
    student: Any,
    arch: StudentArch,
    tokens: Tensor,
    dims: Tensor,
    importance: Importance | None,
) -> InitReport:
    if importance is not None:
        sources = importance.source_layers(arch.layers)
    else:
        sources = init_source_layers(teacher.config.num_hidden_layers, arch.layers)
    _copy_embeddings(teacher.embeddings, student.embeddings, tokens, dims)
    head_notes, ffn_notes = set(), set()
    how = "activations" if importance is not None else "weight norms"
    for index, layer in enumerate(sources):
        src, dst = teacher.encoder.layer[layer - 1], student.encoder.layer[index]
        head_scores = importance.heads[layer - 1] if importance is not None else None
        heads, head_note = _head_rows(src, teacher.config, arch, head_scores, how)
        ffn_scores = importance.ffn[layer - 1] if importance is not None else _ffn_scores(src)
        ffn = _top(ffn_scores, arch.ffn)
        _copy_layer(src, dst, dims, heads, ffn)
        head_notes.add(head_note)
        ffn_notes.add(_kept("FFN neurons", len(ffn), teacher.config.intermediate_size, how))
    width = _kept("hidden features", arch.hidden, teacher.config.hidden_size, how)
    details = (
        f"from teacher layers {', '.join(map(str, sources))} and its embeddings",
        width,
        *sorted(head_notes),
        *sorted(ffn_notes),
    )
    mode = InitMode.ACTIVATIONS if importance is not None else InitMode.TEACHER
    return InitReport(mode.value, sources, tuple(dims.tolist()), details)


def _kept(what: str, kept: int, total: int, how: str = "weight norms") -> str:
    if kept == total:
        return f"all {total} {what} copied"
    return f"{kept} of {total} {what} kept (largest {how})"


def _head_rows(
    layer: Any, config: Any, arch: StudentArch, head_scores: Tensor | None, how: str
) -> tuple[Tensor, str]:
    """Rows of the teacher's Q/K/V projections that feed the student's attention heads."""
    heads, width = config.num_attention_heads, config.hidden_size
    head_dim = width // heads
    out_cols = layer.attention.output.dense.weight.norm(dim=0)  # one score per Q/K/V row
    if head_scores is not None:  # each row weighted by how much its head contributes
        out_cols = out_cols * head_scores.to(out_cols.dtype).repeat_interleave(head_dim)
    if arch.hidden // arch.heads == head_dim and arch.heads <= heads:
        scores = out_cols.view(heads, head_dim).norm(dim=1)
        kept = _top(scores, arch.heads)
        rows = (kept[:, None] * head_dim + torch.arange(head_dim)).reshape(-1)
        return rows, _kept("attention heads", arch.heads, heads, how)
    rows = _top(out_cols, arch.hidden)
    note = f"attention regrouped: {arch.heads} heads of {arch.hidden // arch.heads} dims from "
    return rows, note + f"the teacher's {heads} x {head_dim}"


def _ffn_scores(layer: Any) -> Tensor:
    inner = layer.intermediate.dense.weight.norm(dim=1)
    outer = layer.output.dense.weight.norm(dim=0)
    return inner * outer


def _copy_linear(src: nn.Linear, dst: nn.Linear, rows: Tensor, cols: Tensor) -> None:
    dst.weight.copy_(src.weight[rows][:, cols])
    if src.bias is not None and dst.bias is not None:
        dst.bias.copy_(src.bias[rows])


def _copy_norm(src: nn.LayerNorm, dst: nn.LayerNorm, dims: Tensor) -> None:
    dst.weight.copy_(src.weight[dims])
    dst.bias.copy_(src.bias[dims])


def _copy_embeddings(src: Any, dst: Any, tokens: Tensor, dims: Tensor) -> None:
    dst.word_embeddings.weight.copy_(src.word_embeddings.weight[tokens][:, dims])
    dst.position_embeddings.weight.copy_(src.position_embeddings.weight[:, dims])
    dst.token_type_embeddings.weight.copy_(src.token_type_embeddings.weight[:, dims])
    _copy_norm(src.LayerNorm, dst.LayerNorm, dims)


def _copy_layer(src: Any, dst: Any, dims: Tensor, heads: Tensor, ffn: Tensor) -> None:
    for name in ("query", "key", "value"):
        _copy_linear(
            getattr(src.attention.self, name), getattr(dst.attention.self, name), heads, dims
        )
    _copy_linear(src.attention.output.dense, dst.attention.output.dense, dims, heads)
    _copy_norm(src.attention.output.LayerNorm, dst.attention.output.LayerNorm, dims)
    _copy_linear(src.intermediate.dense, dst.intermediate.dense, ffn, dims)
    _copy_linear(src.output.dense, dst.output.dense, dims, ffn)
    _copy_norm(src.output.LayerNorm, dst.output.LayerNorm, dims)


def count_parameters(model: nn.Module) -> int:
    """All parameters of ``model`` (frozen ones included)."""
    return sum(p.numel() for p in model.parameters())


def write_student_folder(
    student: nn.Module,
    teacher_dir: Path,
    folder: Path,
    *,
    trim: Any = None,
    max_seq_length: int | None = None,
) -> None:
    """Save ``student`` as a Hugging Face folder with the teacher's tokenizer and pooling recipe.

    ``trim`` (a :class:`kdcompress.kd.vocab.VocabTrim`) writes the trimmed tokenizer that
    matches a student built with ``keep_tokens``. ``kdcompress_model.json`` is copied from the
    teacher so the pooling and text prefix carry over; the student has no pooler layer. The
    folder is a sentence-transformers model too (:mod:`kdcompress.st_format`), cutting inputs at
    ``max_seq_length`` tokens (the distillation's length; None: the longest the model takes).
    """
    from transformers import AutoConfig

    from kdcompress.assets import EMBEDDING_INFO
    from kdcompress.kd.vocab import copy_tokenizer
    from kdcompress.st_format import write_sentence_transformers_files

    folder.mkdir(parents=True, exist_ok=True)
    teacher_config = AutoConfig.from_pretrained(teacher_dir)
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        # Training may have run without dropout; a later fine-tune expects the usual amount.
        if hasattr(teacher_config, name):
            setattr(student.config, name, getattr(teacher_config, name))
    student.save_pretrained(folder)  # type: ignore[operator]
    copy_tokenizer(teacher_dir, folder, trim)
    source = Path(teacher_dir) / EMBEDDING_INFO
    info: dict[str, Any] = json.loads(source.read_text("utf-8")) if source.is_file() else {}
    info.setdefault("pooling", "mean")
    info.setdefault("text_prefix", "")
    info["add_pooling_layer"] = False
    (folder / EMBEDDING_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    config: Any = student.config  # a PreTrainedModel's config (nn.Module does not type it)
    write_sentence_transformers_files(
        folder, hidden=int(config.hidden_size), max_seq_length=max_seq_length
    )
