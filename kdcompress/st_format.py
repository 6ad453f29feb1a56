"""Student folders as sentence-transformers models, and the model card written into them.

A student folder is a Hugging Face model folder; a few JSON files next to its weights make it a
sentence-transformers model too, so ``SentenceTransformer(folder)`` embeds text exactly as
kdcompress does (same tokenizer, same text prefix, same pooling). The files are written as
plain JSON in the long-standing layout (``sentence_transformers.models.Transformer`` +
``Pooling``) that every sentence-transformers release since 2.3 loads; writing them needs no
sentence-transformers import.

* ``modules.json``: the module list, Transformer (the folder itself) then Pooling.
* ``sentence_bert_config.json``: ``max_seq_length``, and ``add_pooling_layer: false`` for the
  model class (students have no pooler weights, like their teachers' ``AutoModel`` loads).
* ``1_Pooling/config.json``: mean or CLS pooling, as ``kdcompress_model.json`` says.
* ``config_sentence_transformers.json``: the teacher's text prefix as the ``query`` prompt and
  the default prompt, so plain ``model.encode(text)`` prepends it as kdcompress's evaluation
  does; cosine similarity.

Embeddings are not normalised (as in kdcompress): ``normalize_embeddings=True`` does that.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kdcompress.assets import EmbeddingInfo, read_embedding_info
from kdcompress.outputs import atomic_write_text

MODULES_FILE = "modules.json"
TRANSFORMER_CONFIG = "sentence_bert_config.json"
POOLING_CONFIG = "1_Pooling/config.json"
MODEL_CONFIG = "config_sentence_transformers.json"

# Model families whose queries and passages carry different prefixes: the text prefix in
# kdcompress_model.json is the query's; this is the passage prefix that goes with it (E5).
_PASSAGE_PREFIXES = {"query: ": "passage: "}


def prompts_for(text_prefix: str) -> dict[str, str]:
    """Named prompts for a model whose queries start with ``text_prefix`` (none if empty).

    ``passage`` is E5's own name for the document prompt; ``document`` holds the same prefix
    because it is the name ``SentenceTransformer.encode_document`` looks for first.
    """
    if not text_prefix:
        return {}
    prompts = {"query": text_prefix}
    passage = _PASSAGE_PREFIXES.get(text_prefix)
    if passage is not None:
        prompts |= {"document": passage, "passage": passage}
    return prompts


def sentence_transformers_files(
    *, hidden: int, embedding: EmbeddingInfo, max_seq_length: int, exported: bool = False
) -> dict[str, Any]:
    """The sentence-transformers configuration of a folder: relative path -> JSON content.

    ``exported``: for an export folder, whose ONNX / OpenVINO graphs take no model arguments
    (Optimum's loaders refuse ``add_pooling_layer``; the graphs have no pooler anyway).
    """
    if embedding.pooling not in ("mean", "cls"):
        raise ValueError(f"pooling '{embedding.pooling}' is not supported (mean or cls)")
    transformer: dict[str, Any] = {"max_seq_length": max_seq_length, "do_lower_case": False}
    if not embedding.add_pooling_layer and not exported:
        transformer["model_args"] = {"add_pooling_layer": False}
    prompts = prompts_for(embedding.text_prefix)
    return {
        MODULES_FILE: [
            _module(0, "", "Transformer"),
            _module(1, str(Path(POOLING_CONFIG).parent), "Pooling"),
        ],
        TRANSFORMER_CONFIG: transformer,
        POOLING_CONFIG: {
            "word_embedding_dimension": hidden,
            "pooling_mode": embedding.pooling,
            "include_prompt": True,  # kdcompress pools over the prefix's tokens too
        },
        MODEL_CONFIG: {
            "model_type": "SentenceTransformer",
            "prompts": prompts,
            "default_prompt_name": "query" if prompts else None,
            "similarity_fn_name": "cosine",
        },
    }


def _module(index: int, path: str, kind: str) -> dict[str, Any]:
    return {
        "idx": index,
        "name": str(index),
        "path": path,
        "type": f"sentence_transformers.models.{kind}",
    }


def write_sentence_transformers_files(
    folder: Path, *, hidden: int, max_seq_length: int | None = None, exported: bool = False
) -> None:
    """Make the model folder ``folder`` loadable with ``SentenceTransformer(folder)``.

    Pooling and prompts come from the folder's ``kdcompress_model.json``; ``max_seq_length``
    defaults to the longest input the model takes (its position table, tokenizer limit);
    ``exported``: see :func:`sentence_transformers_files`.
    """
    if max_seq_length is None:
        from kdcompress.encoding import load_tokenizer, max_positions

        max_seq_length = max_positions(folder, load_tokenizer(folder))
    embedding = read_embedding_info(folder)
    files = sentence_transformers_files(
        hidden=hidden, embedding=embedding, max_seq_length=max_seq_length, exported=exported
    )
    _write_json_files(folder, files)


def _write_json_files(folder: Path, files: Mapping[str, Any]) -> None:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(content, indent=2, ensure_ascii=False) + "\n")
