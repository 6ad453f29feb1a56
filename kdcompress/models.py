"""Resolve what the user names as a model (a built-in teacher, a local folder or a hub id), and
read its shape."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdcompress.artifacts import StudentArch
from kdcompress.errors import ModelNotFoundError, UsageError, first_line

# What a damaged local model folder asks of its user.
_REDO = "save or copy the model folder again"

# "org/name" or "name": what a Hugging Face Hub id looks like (and a local path usually not).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _builtin_names() -> list[str]:
    from kdcompress.catalog import TEACHERS

    return sorted(TEACHERS)


def resolve_model(name_or_path: str, *, role: str | None = None) -> Path:
    """A local Hugging Face model folder for ``name_or_path``.

    Order: an existing local folder (checked whole: see ``check_model_folder``); a built-in
    offline teacher (fetched and cached on first use); a Hugging Face Hub id (for users who
    have hub access). With ``role``, a model that is no encoder is refused by its type.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path.is_dir() and (path / "config.json").is_file()):
            raise ModelNotFoundError(f"{path}: not a Hugging Face model folder (no config.json)")
        check_model_folder(path, role=role)  # a damaged folder fails here, before any work
        return path
    if not _HUB_ID.match(name_or_path) or name_or_path.startswith("."):
        raise ModelNotFoundError(f"model '{name_or_path}' not found: no such folder")
    folder = _builtin_or_hub(name_or_path)
    if role is not None:
        check_encoder(folder, role=role)
    return folder


@dataclass(frozen=True)
class ResolvedModel:
    """A model as the user named it (what artifacts record) and the local folder it resolved
    to: resolved once, then passed to every stage that uses it."""

    name: str
    folder: Path


def resolve_teacher(name: str) -> ResolvedModel:
    """``name`` (a built-in teacher, local folder or hub id) as a checked encoder folder."""
    return ResolvedModel(name, resolve_model(name, role="teacher"))


def resolved(model: str | ResolvedModel) -> ResolvedModel:
    """``model`` itself when a caller resolved it already, else resolved now."""
    if isinstance(model, ResolvedModel):
        return model
    return ResolvedModel(model, resolve_model(model))


def _builtin_or_hub(name: str) -> Path:
    if name in _builtin_names():
        from kdcompress.assets import teacher_dir

        return teacher_dir(name)
    return _from_hub(name)


def _from_hub(model_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                model_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]
            )
        )
    except Exception as exc:  # offline, unknown repo, auth: all mean "cannot use this model"
        builtins = ", ".join(_builtin_names())
        reason = first_line(exc)
        raise ModelNotFoundError(
            f"model '{model_id}' not found: not a local folder, not a built-in teacher "
            f"({builtins}), and not available from the Hugging Face Hub ({reason})"
        ) from exc


# Encoders that distillation and export handle end to end (the README's list); another type
# is refused by name rather than failing deep inside a library.
ENCODER_TYPES = ("bert", "roberta", "xlm-roberta", "camembert", "distilbert", "mpnet")


def model_config(folder: Path) -> dict[str, Any]:
    """A model folder's ``config.json`` as a dict, or one clear error if it is not one."""
    path = Path(folder) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelNotFoundError(
            f"{path}: not a readable JSON model config ({exc}): {_REDO}"
        ) from None
    if not isinstance(config, dict):
        raise ModelNotFoundError(f"{path}: not a model config (a JSON object): {_REDO}")
    return config


def check_model_folder(folder: Path, *, role: str | None = None) -> None:
    """Refuse a local model folder that libraries would fail on deep inside loading (after other
    work, with a traceback): a config that is not a model's, weights that are cut short, that
    are not this config's, or missing, and a tokenizer that does not load. One line names the
    file. Tensors are not read: their headers suffice. With ``role``, a model that is no
    encoder is refused by its type first.
    """
    config = model_config(folder)
    if not isinstance(config.get("model_type"), str):
        raise ModelNotFoundError(
            f"{folder / 'config.json'}: no 'model_type': not a Hugging Face model config: {_REDO}"
        )
    if role is not None:
        check_encoder(folder, role=role)
    shapes = _weight_shapes(folder)
    _check_shapes_match(folder, shapes)
    _check_tokenizer(folder)


def _weight_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """The tensor shapes recorded in the folder's safetensors files (PyTorch ``.bin`` files are
    only checked for a cut-off end): a damaged or missing weights file is one line."""
    files = sorted(folder.glob("*.safetensors"))
    bins = sorted(folder.glob("pytorch_model*.bin"))
    if not files and not bins:
        raise ModelNotFoundError(
            f"{folder}: no weights file (model.safetensors or pytorch_model.bin): {_REDO}"
        )
    for path in bins:
        if _torn_zip(path):
            raise ModelNotFoundError(f"{path}: damaged weights file (cut short): {_REDO}")
    shapes: dict[str, tuple[int, ...]] = {}
    for path in files:
        shapes.update(_safetensors_shapes(path))
    return shapes


def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as file:
            return {key: tuple(file.get_slice(key).get_shape()) for key in file.keys()}  # noqa: SIM118
    except Exception as exc:  # SafetensorError (cut short, not safetensors), OSError
        reason = first_line(exc).removeprefix("Error while deserializing header: ")
        raise ModelNotFoundError(f"{path}: damaged weights file ({reason}): {_REDO}") from None


def _torn_zip(path: Path) -> bool:
    """A PyTorch zip checkpoint whose central directory (at the end) is gone: cut short."""
    import zipfile

    with path.open("rb") as file:
        is_zip = file.read(2) == b"PK"
    return is_zip and not zipfile.is_zipfile(path)


def _check_shapes_match(folder: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """The model that config.json describes, built without memory, has the weights' shapes."""
    expected, prefix = _config_shapes(folder)
    if not shapes:
        return  # PyTorch .bin weights: loaded, and checked, by the libraries
    # A checkpoint saved with a head names the base model's tensors "bert.embeddings...".
    found = {key.removeprefix(prefix): shape for key, shape in shapes.items()}
    common = [key for key in expected if key in found]
    if not common:
        raise ModelNotFoundError(
            f"{folder}: the weights hold none of the tensors config.json describes: {_REDO}"
        )
    for key in common:
        if found[key] != expected[key]:
            raise ModelNotFoundError(
                f"{folder}: config.json does not match the weights ({key} is "
                f"{list(found[key])} in the weights file, {list(expected[key])} by the config): "
                f"{_REDO}"
            )


def _config_shapes(folder: Path) -> tuple[dict[str, tuple[int, ...]], str]:
    """Tensor shapes of the model config.json describes, and its base model's key prefix."""
    import torch
    from transformers import AutoConfig, AutoModel

    try:
        config = AutoConfig.from_pretrained(folder)
        with torch.device("meta"):
            model = AutoModel.from_config(config)
    except Exception as exc:  # a value of the wrong type or range, an unknown model type
        raise ModelNotFoundError(
            f"{folder / 'config.json'}: describes no model the libraries can build "
            f"({first_line(exc)}): {_REDO}"
        ) from None
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    prefix = f"{model.base_model_prefix}." if model.base_model_prefix else ""
    return shapes, prefix


def _check_tokenizer(folder: Path) -> None:
    """The tokenizer loads (seconds for a 250k vocabulary, but exporters would otherwise fail on
    it halfway, naming their own staging folder)."""
    from kdcompress.encoding import load_tokenizer

    load_tokenizer(folder)


def check_encoder(folder: Path, *, role: str) -> dict[str, Any]:
    """The config of an encoder kdcompress can distil and export; others refused by name."""
    config = model_config(folder)
    kind = config.get("model_type", "unknown")
    if kind not in ENCODER_TYPES:
        raise UsageError(
            f"{folder}: model type '{kind}' cannot be a {role}: kdcompress handles the encoders "
            f"{', '.join(ENCODER_TYPES)}"
        )
    return config


# Config keys of the shape, and what DistilBERT calls them instead.
_SHAPE_KEYS = {
    "layers": ("num_hidden_layers", "n_layers"),
    "hidden": ("hidden_size", "dim"),
    "heads": ("num_attention_heads", "n_heads"),
    "ffn": ("intermediate_size", "hidden_dim"),
}


def teacher_arch(teacher_dir: Path) -> StudentArch:
    """The teacher's own shape, to predict its latency with the same latency model."""
    config = model_config(teacher_dir)
    shape = {}
    for field, keys in _SHAPE_KEYS.items():
        value = next((config[k] for k in keys if isinstance(config.get(k), int)), None)
        if value is None:
            kind = config.get("model_type", "unknown")
            raise UsageError(
                f"{teacher_dir / 'config.json'}: no {' or '.join(keys)}: cannot read the shape "
                f"of a '{kind}' model"
            )
        shape[field] = value
    activation = config.get("hidden_act", config.get("activation", "gelu"))
    return StudentArch(**shape, activation=str(activation))


def teacher_shape(name_or_path: str) -> StudentArch:
    """A teacher's shape without fetching it: a built-in teacher's from the catalog, else the
    resolved folder's config."""
    from kdcompress.catalog import TEACHERS

    spec = TEACHERS.get(name_or_path)
    if spec is not None and not Path(name_or_path).expanduser().exists():
        return StudentArch(spec.layers, spec.hidden, spec.heads, spec.ffn)
    return teacher_arch(resolve_model(name_or_path, role="teacher"))
