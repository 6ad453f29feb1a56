"""The model card (``README.md``) of a student folder.

:func:`model_card` is a pure function of the distillation's record (``distill.json``) and the
embedding recipe; :func:`write_model_card` gathers those from a student folder and writes it.
Quality and speed are measured later, by export and validation: the card says where.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kdcompress.artifacts import DistillResult, ExportManifest
from kdcompress.assets import EMBEDDING_INFO, EmbeddingInfo, read_embedding_info
from kdcompress.catalog import TEACHERS
from kdcompress.outputs import atomic_write_text
from kdcompress.st_format import TRANSFORMER_CONFIG, prompts_for

MODEL_CARD = "README.md"
DEFAULT_MODEL_PATH = "path/to/student"

_LOSSES = {
    "pooled": "the pooled sentence embedding (cosine + normalised MSE)",
    "hidden": "multi-layer hidden states (Uniform+Last layer map through a learned projection) "
    "and the pooled sentence embedding",
    "hidden+attn-relation": "multi-layer hidden states (Uniform+Last), MiniLMv2 attention "
    "relations and the pooled sentence embedding",
}
_TAGS = ("sentence-transformers", "feature-extraction", "knowledge-distillation", "kdcompress")


def model_card(
    result: DistillResult,
    *,
    embedding: EmbeddingInfo,
    max_seq_length: int,
    teacher_license: str | None = None,
    model_path: str = DEFAULT_MODEL_PATH,
) -> str:
    """The Markdown model card of the student that ``result`` describes.

    ``embedding``: the student's pooling and text prefix; ``max_seq_length``: where its
    sentence-transformers configuration cuts inputs; ``teacher_license``: as recorded with the
    teacher (None: a built-in teacher's from its asset spec, else unknown); ``model_path``:
    the folder the usage snippets load.
    """
    spec = TEACHERS.get(result.teacher)
    license_ = teacher_license or (spec.license if spec is not None else None)
    sections = (
        _front_matter(license_),
        _summary(result, embedding),
        _teacher(result, license_),
        _architecture(result, embedding, max_seq_length),
        _recipe(result),
        _quality(result, model_path),
        _usage(result, embedding, max_seq_length, model_path),
    )
    return "\n\n".join(sections) + "\n"


def _front_matter(license_: str | None) -> str:
    lines = ["---", "library_name: sentence-transformers", "pipeline_tag: sentence-similarity"]
    if license_:
        lines.append(f"license: {license_.lower()}")  # the Hub's ids: mit, apache-2.0
    lines += ["tags:", *(f"- {tag}" for tag in _TAGS), "---"]
    return "\n".join(lines)


def _summary(result: DistillResult, embedding: EmbeddingInfo) -> str:
    prefix = f', each text prefixed with "{embedding.text_prefix}"' if embedding.text_prefix else ""
    return (
        f"# {result.arch.layers}-layer student of `{result.teacher}` ({result.arch_id})\n\n"
        f"A sentence-embedding encoder of {result.parameters / 1e6:.1f}M parameters, distilled "
        f"by kdcompress from the teacher `{result.teacher}`. It embeds text as its teacher "
        f"does: {embedding.pooling} pooling of the last hidden states{prefix}. This folder is a "
        "Hugging Face model folder (`AutoModel`) and a sentence-transformers model at once."
    )


def _teacher(result: DistillResult, license_: str | None) -> str:
    spec = TEACHERS.get(result.teacher)
    rows = [("model", f"`{result.teacher}`")]
    if spec is not None:
        rows += [
            ("what", spec.description),
            ("languages", spec.languages),
            ("weights", f"{spec.note} (from `{' + '.join(spec.packages)}`)"),
        ]
    if license_:
        terms = (
            f"{license_}. The student's weights derive from the teacher's (initialised from "
            "them, trained on its outputs), so the teacher's license applies to them."
        )
    else:
        terms = "not recorded: check the teacher's own license before sharing this student."
    rows.append(("license", terms))
    return "## Teacher\n\n" + _table(rows)


def _architecture(result: DistillResult, embedding: EmbeddingInfo, max_seq_length: int) -> str:
    arch = result.arch
    rows = [
        ("layers", str(arch.layers)),
        ("hidden size", str(arch.hidden)),
        ("attention heads", str(arch.heads)),
        ("FFN size", str(arch.ffn)),
        ("activation", arch.activation),
        ("parameters", f"{result.parameters:,}"),
        ("vocabulary", _vocabulary(result)),
        ("pooling", embedding.pooling),
        ("text prefix", f'"{embedding.text_prefix}"' if embedding.text_prefix else "none"),
        ("max sequence length", f"{max_seq_length} tokens"),
        ("architecture id", f"`{result.arch_id}`"),
    ]
    return "## Architecture\n\n" + _table(rows)


def _vocabulary(result: DistillResult) -> str:
    if result.vocab is None:
        return "the teacher's"
    stats = result.vocab
    return (
        f"{stats.vocab_after:,} tokens: the teacher's {stats.vocab_before:,} trimmed to those "
        "the training corpus uses"
    )


def _recipe(result: DistillResult) -> str:
    batch = str(result.batch_size)
    if result.world_size > 1:
        batch += f" per process x {result.world_size} processes"
    losses = _final_losses(result)
    rows = [
        ("initialisation", "; ".join((result.init, *result.init_details))),
        ("loss", f"`{result.loss}`: {_LOSSES.get(result.loss, result.loss)}"),
        ("layer map", _layer_map(result)),
        ("steps", f"{result.steps:,}"),
        ("batch size", batch),
        ("learning rate", f"{result.lr:g}"),
        ("seed", str(result.seed)),
        ("corpus", _corpus(result)),
        ("max length", f"{result.max_length} tokens"),
        ("final losses", losses),
        (
            "training time",
            f"{result.wall_s / 60:.1f} min ({result.sentences_per_s:.0f} sentences/s)",
        ),
    ]
    return "## Distillation\n\n" + _table(rows) + "\n\nThe full record is `distill.json`."


def _final_losses(result: DistillResult) -> str:
    named = (
        ("hidden", result.final_hidden_loss),
        ("pooled", result.final_pooled_loss),
        ("attention relation", result.final_relation_loss),
    )
    text = ", ".join(f"{name} {value:.4f}" for name, value in named if value is not None)
    # Records written before distill.json had a cosine (and targets) lack them: getattr.
    cosine = getattr(result, "final_cosine", None)
    if cosine is not None:
        text += f"; cosine to the teacher's embeddings {cosine:.4f}"
    return text


def _layer_map(result: DistillResult) -> str:
    if not result.layer_map:
        return "none"
    pairs = ", ".join(f"{student} <- {teacher}" for student, teacher in result.layer_map)
    return f"student <- teacher hidden states (0: embeddings): {pairs}"


def _corpus(result: DistillResult) -> str:
    if result.languages:
        source = f"{result.sentences:,} Bible verses in {', '.join(result.languages)}"
        extra = [
            f"{100 * share:.0f}% {what}"
            for share, what in (
                (getattr(result, "general", 0.0), "general-domain sentences (news, speeches)"),
                (getattr(result, "words", 0.0), "single words of the teacher's vocabulary"),
            )
            if share
        ]
        if extra:
            languages = ", ".join(result.languages)
            source = f"{result.sentences:,} items: Bible verses in {languages}, " + ", ".join(extra)
    else:
        source = f"{result.sentences:,} sentences of the user's corpus"
    if getattr(result, "targets", "own") == "cross-lingual":
        source += "; each translation learnt its source sentence's teacher embedding"
    return f"{source} (sha256 `{result.corpus_hash[:16]}`)"


def _quality(result: DistillResult, model_path: str) -> str:
    return (
        "## Quality and speed\n\n"
        "Not measured when distilling. Exporting the student validates it against its teacher "
        "and writes `validation.md` (and `validation.json`) into the export folder, here "
        f"`{model_path}-onnx`: latency, file size and peak memory side by side with the teacher "
        "on the same runtime and threads, and the student's retention of the teacher's scores "
        "on the evaluation suite (cross-lingual retrieval, IMDB, zh-inews):\n\n"
        "```bash\n"
        f"kdcompress export --model {model_path} --output {model_path}-onnx --format onnx \\\n"
        f"  --quantize static --teacher {result.teacher} --eval quick\n"
        "```\n\n"
        "`kdcompress run` does this itself and adds both to `report.html`."
    )


def _usage(
    result: DistillResult, embedding: EmbeddingInfo, max_seq_length: int, model_path: str
) -> str:
    return (
        "## Usage\n\n"
        "With sentence-transformers (embeddings are not normalised; `model.similarity` is "
        "cosine):\n\n"
        f"```python\n{_python_snippet(embedding, model_path)}\n```\n\n"
        f"{_length_note(result, max_seq_length)}\n\n"
        "With kdcompress: the evaluation suite, with the student's retention of each score when "
        "given the teacher's report:\n\n"
        "```bash\n"
        f"kdcompress eval --model {result.teacher} --quick --output teacher-eval.json\n"
        f"kdcompress eval --model {model_path} --quick --reference teacher-eval.json\n"
        "```"
    )


def _python_snippet(embedding: EmbeddingInfo, model_path: str) -> str:
    prompts = prompts_for(embedding.text_prefix)
    lines = [
        "from sentence_transformers import SentenceTransformer",
        "",
        f'model = SentenceTransformer("{model_path}", device="cpu")',
    ]
    if "passage" in prompts:
        lines += [
            f'queries = model.encode(["How fast is it?"])  # prepends "{prompts["query"]}"',
            "passages = model.encode(",
            f'    ["It runs on a CPU."], prompt_name="passage"  # prepends "{prompts["passage"]}"',
            ")",
            "print(model.similarity(queries, passages))",
        ]
    else:
        note = f'  # prepends "{prompts["query"]}"' if prompts else ""
        lines += [
            f'embeddings = model.encode(["How fast is it?", "It runs on a CPU."]){note}',
            "print(model.similarity(embeddings, embeddings))",
        ]
    return "\n".join(lines)


def _length_note(result: DistillResult, max_seq_length: int) -> str:
    if max_seq_length > result.max_length:
        return (
            f"Inputs are cut at {max_seq_length} tokens (the model's positions); it was distilled "
            f"on inputs of up to {result.max_length} tokens and is evaluated at 128 and 256."
        )
    why = " (the length it was distilled at)" if max_seq_length == result.max_length else ""
    return (
        f"Inputs are cut at {max_seq_length} tokens{why}; `model.max_seq_length = 256` lets it "
        "read longer texts (kdcompress's evaluation uses 128 and 256)."
    )


def _table(rows: list[tuple[str, str]]) -> str:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {key} | {value.replace('|', '/')} |" for key, value in rows]
    return "\n".join(lines)


def write_model_card(
    folder: Path, result: DistillResult, *, model_path: Path | None = None
) -> Path:
    """Write ``folder/README.md`` for the student folder ``folder`` that ``result`` describes.

    ``folder`` may be a staging copy: ``model_path`` is where the folder will live (the
    snippets load it from there). The teacher's license is the one its
    ``kdcompress_model.json`` recorded, if any.
    """
    recorded = _read_object(folder / EMBEDDING_INFO)
    transformer = _read_object(folder / TRANSFORMER_CONFIG)
    license_ = recorded.get("license")
    text = model_card(
        result,
        embedding=read_embedding_info(folder),
        max_seq_length=int(transformer.get("max_seq_length", result.max_length)),
        teacher_license=str(license_) if license_ else None,
        model_path=str(model_path) if model_path is not None else DEFAULT_MODEL_PATH,
    )
    path = folder / MODEL_CARD
    atomic_write_text(path, text)
    return path


def _read_object(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def export_card_section(manifest: ExportManifest, *, export_path: str) -> str:
    """The part of an export folder's model card that names its files and loads the deployable
    one with sentence-transformers (``export_path``: where the folder lives)."""
    backend = "onnx" if manifest.format == "onnx" else "openvino"
    deployed = f"`{manifest.model_file}`"
    if manifest.int8 is not None:
        s = manifest.int8.settings
        deployed += f" ({s.mode} int8 for the {s.preset} CPU preset, {s.method})"
    lines = [
        "## This export",
        "",
        f"{manifest.format} export ({manifest.backend} {manifest.backend_version}) of "
        f"`{manifest.source_model}`. Deployable file: {deployed}, min cosine "
        f"{manifest.parity.min_cosine:.4f} to PyTorch"
        + (f"; fp32: `{manifest.fp32_file}`" if manifest.fp32_file != manifest.model_file else "")
        + ". Latency, size, memory and quality against the teacher: `validation.md` here, "
        "written by the validation that follows an export (`kdcompress validate` again).",
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        "model = SentenceTransformer(",
        f'    "{export_path}",',
        f'    backend="{backend}",',
        f'    model_kwargs={{"file_name": "{manifest.model_file}"}},',
        ")",
        "```",
    ]
    return "\n".join(lines)


def write_export_card(folder: Path, manifest: ExportManifest, *, source: Path, path: Path) -> Path:
    """``folder/README.md`` of an export: the source's model card (a title where it has none)
    followed by :func:`export_card_section`; ``path`` is where the folder will live."""
    card = source / MODEL_CARD
    head = card.read_text(encoding="utf-8").rstrip() if card.is_file() else f"# {source.name}"
    text = f"{head}\n\n{export_card_section(manifest, export_path=str(path))}\n"
    target = folder / MODEL_CARD
    atomic_write_text(target, text)
    return target
