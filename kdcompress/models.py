"""Resolve what the user names as a model (a built-in teacher, a local folder or a hub id), and
read its shape."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from kdcompress.artifacts import StudentArch
from kdcompress.errors import ModelNotFoundError, UsageError, first_line

# "org/name" or "name": what a Hugging Face Hub id looks like (and a local path usually not).
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _builtin_names() -> list[str]:
    from kdcompress.assets import TEACHERS

    return sorted(TEACHERS)


def resolve_model(name_or_path: str) -> Path:
    """A local Hugging Face model folder for ``name_or_path``.

    Order: an existing local folder; a built-in offline teacher (fetched and cached on first
    use); a Hugging Face Hub id (for users who have hub access).
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path.is_dir() and (path / "config.json").is_file()):
            raise ModelNotFoundError(f"{path}: not a Hugging Face model folder (no config.json)")
        model_config(path)  # a damaged config fails here, in one line
        return path
    if not _HUB_ID.match(name_or_path) or name_or_path.startswith("."):
        raise ModelNotFoundError(f"model '{name_or_path}' not found: no such folder")
    if name_or_path in _builtin_names():
        from kdcompress.assets import teacher_dir

        return teacher_dir(name_or_path)
    return _from_hub(name_or_path)


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
        raise ModelNotFoundError(f"{path}: not a readable JSON model config ({exc})") from None
    if not isinstance(config, dict):
        raise ModelNotFoundError(f"{path}: not a model config (a JSON object)")
    return config


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


def teacher_arch(teacher_dir: Path) -> StudentArch:
    """The teacher's own shape, to predict its latency with the same latency model."""
    config = model_config(teacher_dir)
    return StudentArch(
        layers=int(config["num_hidden_layers"]),
        hidden=int(config["hidden_size"]),
        heads=int(config["num_attention_heads"]),
        ffn=int(config["intermediate_size"]),
        activation=str(config.get("hidden_act", "gelu")),
    )
